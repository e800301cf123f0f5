import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import {
  AlreadyExistsError,
  HostFullError,
  HostNotFoundError,
  InvalidArgumentError,
  NoCapacityError,
  SandboxNotFoundError,
  SnapshotNotFoundError,
  SnapshotRefusedError,
  TemplateNotFoundError,
  toConnectError,
  UpstreamUnavailableError,
  VmmUnavailableError,
  WrongStateError,
} from "../src/domain/errors.js";
import { checkHostRegistration, checkStringMap } from "../src/domain/validate.js";
import { logger } from "./helpers.js";

describe("toConnectError", () => {
  it("maps each domain error to its code and keeps its message", () => {
    const cases: [Error, Code, string][] = [
      [new SandboxNotFoundError("abc"), Code.NotFound, "sandbox 'abc' not found"],
      [new TemplateNotFoundError("x"), Code.NotFound, "template 'x' not found"],
      [new HostNotFoundError("h"), Code.NotFound, "host 'h' is not registered; call RegisterHost first"],
      [new WrongStateError("sandbox is paused"), Code.FailedPrecondition, "sandbox is paused"],
      [
        new NoCapacityError("hosts_full", "all 2 live hosts are full"),
        Code.ResourceExhausted,
        "all 2 live hosts are full",
      ],
      [new VmmUnavailableError("try again", { cause: new Error("x") }), Code.Unavailable, "try again"],
      [new InvalidArgumentError("host_id is required"), Code.InvalidArgument, "host_id is required"],
      [new SnapshotNotFoundError("snap_x"), Code.NotFound, "snapshot 'snap_x' not found"],
      [
        new SnapshotRefusedError("snapshot snap_x is unsigned"),
        Code.FailedPrecondition,
        "snapshot snap_x is unsigned",
      ],
      [new AlreadyExistsError("name taken"), Code.AlreadyExists, "name taken"],
      [new UpstreamUnavailableError("try again"), Code.Unavailable, "try again"],
      [new HostFullError("host h is full"), Code.ResourceExhausted, "host h is full"],
    ];
    for (const [err, code, message] of cases) {
      const out = toConnectError(err, logger);
      assert.equal(out.code, code, err.name);
      assert.equal(out.rawMessage, message);
    }
  });

  it("sends anything else as a generic Internal error and logs the detail", () => {
    const lines: string[] = [];
    // Only .error is used by toConnectError.
    const capture = {
      error: (fields: Record<string, unknown>, msg: string) =>
        lines.push(`${msg} ${fields.rpc} ${(fields.err as Error).message}`),
    } as unknown as Logger;
    const secret = new Error("password authentication failed for user postgres at 10.0.0.5");
    const out = toConnectError(secret, capture, { rpc: "GetSandbox" });
    assert.equal(out.code, Code.Internal);
    assert.equal(out.rawMessage, "internal error");
    assert.ok(!out.message.includes("password"));
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /password authentication failed/);
    assert.match(lines[0]!, /GetSandbox/);
    // An upstream ConnectError is not passed through as-is either.
    assert.equal(toConnectError(new ConnectError("vmm detail", Code.NotFound), capture).code, Code.Internal);
  });
});

describe("validation", () => {
  it("rejects what jsonb or an environment cannot hold", () => {
    assert.throws(() => checkStringMap("metadata", { a: "x\0y" }), InvalidArgumentError);
    assert.throws(() => checkStringMap("env_vars", { "A=B": "x" }, true), InvalidArgumentError);
    assert.throws(() => checkStringMap("env_vars", { "": "x" }, true), InvalidArgumentError);
    checkStringMap("metadata", { "a=b": "ok" });
  });

  it("checks host registrations and normalises the vmm URL", () => {
    const ok = { hostId: "host-1", vmmUrl: "http://10.0.0.2:7002/", runtime: "jail", capacity: 4 };
    assert.equal(checkHostRegistration(ok).vmmUrl, "http://10.0.0.2:7002");
    assert.throws(() => checkHostRegistration({ ...ok, hostId: "" }), /host_id is required/);
    assert.throws(() => checkHostRegistration({ ...ok, hostId: "a b" }), InvalidArgumentError);
    assert.throws(() => checkHostRegistration({ ...ok, vmmUrl: "not a url" }), /not a URL/);
    assert.throws(() => checkHostRegistration({ ...ok, vmmUrl: "ftp://x" }), /http/);
    assert.throws(() => checkHostRegistration({ ...ok, runtime: "" }), /runtime/);
  });
});
