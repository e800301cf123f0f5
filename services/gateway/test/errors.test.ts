import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Logger, silentLogger, TunnelError } from "@dnah/platform";
import {
  CapacityError,
  classify,
  DeadlineExceededError,
  ERROR_TABLE,
  type ErrorKind,
  FailedPreconditionError,
  FileNotFoundError,
  GatewayError,
  InvalidArgumentError,
  PayloadTooLargeError,
  PermissionDeniedError,
  SandboxNotFoundError,
  TemplateNotFoundError,
  toConnectError,
  toErrorResponse,
  UnauthenticatedError,
  UnavailableError,
  UPSTREAM_CODES,
} from "../src/errors.js";
import { fromScheduler } from "../src/sandbox/scheduler.js";

/** A real (silent) logger whose error() calls are recorded. */
function recordingLogger(): { logger: Logger; errors: unknown[][] } {
  const logger = silentLogger();
  const errors: unknown[][] = [];
  logger.error = ((...args: unknown[]) => {
    errors.push(args);
  }) as Logger["error"];
  return { logger, errors };
}

const EXPECTED: Record<ErrorKind, [number, Code]> = {
  invalid_argument: [400, Code.InvalidArgument],
  unauthenticated: [401, Code.Unauthenticated],
  permission_denied: [403, Code.PermissionDenied],
  not_found: [404, Code.NotFound],
  already_exists: [409, Code.AlreadyExists],
  failed_precondition: [409, Code.FailedPrecondition],
  payload_too_large: [413, Code.ResourceExhausted],
  unsupported_media_type: [415, Code.InvalidArgument],
  rate_limited: [429, Code.ResourceExhausted],
  canceled: [499, Code.Canceled],
  internal: [500, Code.Internal],
  unimplemented: [501, Code.Unimplemented],
  unavailable: [503, Code.Unavailable],
  resource_exhausted: [503, Code.ResourceExhausted],
  deadline_exceeded: [504, Code.DeadlineExceeded],
};

describe("the error table", () => {
  it("has exactly the documented rows", () => {
    assert.deepEqual(Object.keys(ERROR_TABLE).sort(), Object.keys(EXPECTED).sort());
  });

  for (const [kind, [status, code]] of Object.entries(EXPECTED) as [ErrorKind, [number, Code]][]) {
    it(`maps ${kind} to HTTP ${status} and Connect ${Code[code]}`, () => {
      const { logger, errors } = recordingLogger();
      const err = new GatewayError(kind, `detail of ${kind}`);
      const rest = toErrorResponse(err, { logger, requestId: "rid-1" });
      const connect = toConnectError(err, { logger, requestId: "rid-1" });
      assert.equal(rest.httpStatus, status);
      assert.equal(rest.code, kind);
      assert.equal(connect.code, code);
      if (kind === "internal") {
        // Never sent, always logged with the request id.
        assert.equal(rest.message, "internal error (request id rid-1)");
        assert.equal(connect.rawMessage, "internal error (request id rid-1)");
        assert.equal(errors.length, 2);
        assert.deepEqual(errors[0]?.[0], { err, requestId: "rid-1" });
      } else {
        assert.equal(rest.message, `detail of ${kind}`);
        assert.equal(connect.rawMessage, `detail of ${kind}`);
        assert.equal(errors.length, 0);
      }
    });
  }

  it("gives the typed errors their kinds and messages", () => {
    const cases: [GatewayError, ErrorKind, string][] = [
      [new SandboxNotFoundError("x"), "not_found", "sandbox 'x' not found"],
      [new TemplateNotFoundError("t"), "not_found", "template 't' not found"],
      [new FileNotFoundError("/a"), "not_found", "path '/a' not found"],
      [new InvalidArgumentError("bad"), "invalid_argument", "bad"],
      [new UnauthenticatedError("who"), "unauthenticated", "who"],
      [new PermissionDeniedError("built in"), "permission_denied", "built in"],
      [new FailedPreconditionError("paused"), "failed_precondition", "paused"],
      [new PayloadTooLargeError("big"), "payload_too_large", "big"],
      [new CapacityError("full"), "resource_exhausted", "full"],
      [new UnavailableError("down"), "unavailable", "down"],
      [new DeadlineExceededError("slow"), "deadline_exceeded", "slow"],
    ];
    for (const [err, kind, message] of cases) {
      assert.deepEqual(classify(err), { kind, message }, err.name);
      assert.equal(err.name, err.constructor.name);
    }
    assert.match(new SandboxNotFoundError("y".repeat(500)).message, /^sandbox 'y{200}…' not found$/);
  });

  it("sends unknown throwables as a generic internal error and logs the detail", () => {
    const { logger, errors } = recordingLogger();
    const secret = new Error("connect ECONNREFUSED 10.0.0.7:5432 password=hunter2");
    const rest = toErrorResponse(secret, { logger, requestId: "r2" });
    assert.deepEqual(rest, { httpStatus: 500, code: "internal", message: "internal error (request id r2)" });
    assert.equal(errors.length, 1);
    assert.deepEqual(errors[0]?.[0], { err: secret, requestId: "r2" });
    assert.deepEqual(classify("a string"), { kind: "internal", message: undefined });
    assert.deepEqual(classify(undefined), { kind: "internal", message: undefined });
  });
});

describe("upstream Connect codes", () => {
  it("covers every Connect code", () => {
    const codes = Object.values(Code).filter((v): v is Code => typeof v === "number");
    assert.deepEqual(Object.keys(UPSTREAM_CODES).map(Number).sort(), codes.sort());
  });

  for (const [codeNum, row] of Object.entries(UPSTREAM_CODES)) {
    const code = Number(codeNum) as Code;
    it(`maps an upstream ${Code[code]} to ${row.kind}${row.pass ? " (message kept)" : ""}`, () => {
      const { logger } = recordingLogger();
      const err = new ConnectError("upstream said so", code);
      const rest = toErrorResponse(err, { logger, requestId: "r" });
      assert.equal(rest.code, row.kind);
      assert.equal(rest.httpStatus, ERROR_TABLE[row.kind].httpStatus);
      if (row.kind === "internal") assert.equal(rest.message, "internal error (request id r)");
      else assert.equal(rest.message, row.pass ? "upstream said so" : row.message);
      assert.equal(toConnectError(err, { logger, requestId: "r" }).code, ERROR_TABLE[row.kind].connectCode);
    });
  }

  it("never passes the caller an upstream unauthenticated: that is our own credential failing", () => {
    assert.equal(classify(new ConnectError("bad token", Code.Unauthenticated)).kind, "internal");
    assert.equal(classify(new ConnectError("nope", Code.PermissionDenied)).kind, "internal");
  });

  it("a connection that broke under a call is unavailable, whatever code the client library chose", () => {
    // What connect-node makes of a service killed mid-call: ECONNRESET as "aborted".
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    const broken = ConnectError.from(reset, Code.Aborted);
    broken.cause = reset;
    assert.deepEqual(classify(broken), { kind: "unavailable", message: "upstream connection lost; retry" });
    // The same code answered by the service itself keeps its meaning and message.
    assert.deepEqual(classify(new ConnectError("sandbox is busy", Code.Aborted)), {
      kind: "failed_precondition",
      message: "sandbox is busy",
    });
  });
});

describe("tunnel errors", () => {
  it("maps a vmm 404 to not_found and anything else to unavailable, also inside a cause chain", () => {
    assert.deepEqual(classify(new TunnelError(404, "not_found", "no such sandbox")), {
      kind: "not_found",
      message: "sandbox not found",
    });
    for (const status of [400, 502, 503, 504]) {
      const wrapped = new ConnectError(
        "x",
        Code.Internal,
        undefined,
        undefined,
        new TunnelError(status, "u", "m"),
      );
      assert.deepEqual(classify(wrapped), { kind: "unavailable", message: "sandbox agent unreachable" });
    }
  });
});

describe("Fastify's own errors", () => {
  const fst = (code: string, statusCode: number, message = "m") =>
    Object.assign(new Error(message), { code, statusCode });

  it("come out as {code, message} with 400/413/415", () => {
    const { logger } = recordingLogger();
    const ctx = { logger, requestId: "r" };
    assert.deepEqual(toErrorResponse(fst("FST_ERR_CTP_INVALID_JSON_BODY", 400), ctx), {
      httpStatus: 400,
      code: "invalid_argument",
      message: "request body is not valid JSON",
    });
    assert.deepEqual(toErrorResponse(fst("FST_ERR_CTP_EMPTY_JSON_BODY", 400), ctx), {
      httpStatus: 400,
      code: "invalid_argument",
      message: "request body is empty; send a JSON object",
    });
    assert.deepEqual(toErrorResponse(fst("FST_ERR_CTP_BODY_TOO_LARGE", 413), ctx), {
      httpStatus: 413,
      code: "payload_too_large",
      message: "request body is too large",
    });
    assert.deepEqual(
      toErrorResponse(fst("FST_ERR_CTP_INVALID_MEDIA_TYPE", 415), { ...ctx, contentType: "text/xml" }),
      { httpStatus: 415, code: "unsupported_media_type", message: "unsupported content type 'text/xml'" },
    );
    assert.deepEqual(toErrorResponse(fst("FST_ERR_CTP_INVALID_CONTENT_LENGTH", 400, "bad length"), ctx), {
      httpStatus: 400,
      code: "invalid_argument",
      message: "bad length",
    });
    assert.equal(toErrorResponse(fst("FST_ERR_SOMETHING", 500), ctx).code, "internal");
  });
});

describe("fromScheduler", () => {
  const notFound = (cause: unknown) => new SandboxNotFoundError("s1", { cause });

  it("turns scheduler codes into typed errors", () => {
    const map = (code: Code, msg = "m") => fromScheduler(new ConnectError(msg, code), notFound);
    assert.ok(map(Code.NotFound) instanceof SandboxNotFoundError);
    assert.ok(map(Code.Unavailable) instanceof UnavailableError);
    assert.ok(map(Code.DeadlineExceeded) instanceof DeadlineExceededError);
    const full = map(Code.ResourceExhausted, "no live host");
    assert.ok(full instanceof CapacityError);
    assert.equal((full as Error).message, "no live host");
    assert.ok(map(Code.InvalidArgument) instanceof InvalidArgumentError);
    assert.ok(map(Code.FailedPrecondition) instanceof FailedPreconditionError);
    const internal = new ConnectError("boom", Code.Internal);
    assert.equal(fromScheduler(internal, notFound), internal);
    const plain = new Error("x");
    assert.equal(fromScheduler(plain, notFound), plain);
  });
});
