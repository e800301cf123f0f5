import assert from "node:assert/strict";
import { constants } from "node:fs";
import { describe, test } from "node:test";
import { basicAuthUser, checkFileAccess, fileSignature } from "../src/auth.js";
import { GuestError } from "../src/errors.js";
import { goFileMode } from "../src/filesystem/entry-info.js";
import { chooseEncoding, requestEncoding } from "../src/http/encoding.js";
import { contentDisposition } from "../src/http/files-get.js";
import { parseInitBody } from "../src/http/init.js";
import { resolvePath } from "../src/paths.js";
import { endEvent } from "../src/process/exit-status.js";
import { keepaliveMs } from "../src/stream.js";
import { parseConnectLine } from "../src/vsock.js";

const user = { name: "user", uid: 1000, gid: 1000, home: "/home/user", groups: [] };

describe("pure helpers", () => {
  test("endEvent mirrors Go's ProcessState", () => {
    assert.deepEqual(endEvent(0, null), { exitCode: 0, exited: true, status: "exit status 0" });
    assert.deepEqual(endEvent(3, null), {
      exitCode: 3,
      exited: true,
      status: "exit status 3",
      error: "exit status 3",
    });
    assert.deepEqual(endEvent(null, "SIGKILL"), {
      exitCode: -1,
      exited: false,
      status: "signal: killed",
      error: "signal: killed",
    });
    assert.equal(endEvent(null, "SIGTERM").status, "signal: terminated");
    assert.equal(endEvent(null, "SIGSEGV").status, "signal: segmentation fault");
  });

  test("goFileMode is Go's FileMode.String()", () => {
    const { S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFIFO, S_IFSOCK } = constants;
    assert.equal(goFileMode(S_IFREG | 0o644), "-rw-r--r--");
    assert.equal(goFileMode(S_IFDIR | 0o755), "drwxr-xr-x");
    assert.equal(goFileMode(S_IFLNK | 0o777), "Lrwxrwxrwx");
    assert.equal(goFileMode(S_IFDIR | 0o1777), "dtrwxrwxrwx");
    assert.equal(goFileMode(S_IFCHR | 0o666), "Dcrw-rw-rw-");
    assert.equal(goFileMode(S_IFIFO | 0o600), "prw-------");
    assert.equal(goFileMode(S_IFSOCK | 0o755), "Srwxr-xr-x");
    assert.equal(goFileMode(S_IFREG | 0o4755), "urwxr-xr-x");
  });

  test("resolvePath follows envd's ExpandAndResolve", () => {
    assert.equal(resolvePath("", user, undefined), "/home/user");
    assert.equal(resolvePath("", user, "/work"), "/work");
    assert.equal(resolvePath("~", user, "/work"), "/home/user");
    assert.equal(resolvePath("~/a/b", user, undefined), "/home/user/a/b");
    assert.equal(resolvePath("notes.txt", user, "/work"), "/home/user/notes.txt");
    assert.equal(resolvePath("../x", user, undefined), "/home/x");
    assert.equal(resolvePath("/abs/p", user, undefined), "/abs/p");
    assert.throws(
      () => resolvePath("~root/x", user, undefined),
      (e) => e instanceof GuestError && e.kind === "invalid_argument",
    );
  });

  test("parseConnectLine accepts only CONNECT <1..65535>", () => {
    assert.equal(parseConnectLine("CONNECT 49983"), 49983);
    assert.equal(parseConnectLine("CONNECT 1"), 1);
    assert.equal(parseConnectLine("CONNECT 65535"), 65535);
    for (const bad of ["CONNECT 0", "CONNECT 65536", "CONNECT 080", "CONNECT  1", "CONNECT 1 ", "OK 1", ""]) {
      assert.equal(parseConnectLine(bad), undefined, bad);
    }
  });

  test("signatures match the SDK's getSignature", () => {
    // "v1_" + base64(sha256("/home/user/a.txt:read:user:tok")), padding stripped
    const sig = fileSignature("/home/user/a.txt", "read", "user", "tok", undefined);
    assert.match(sig, /^v1_[A-Za-z0-9+/]{43}$/);
    const base = {
      token: "tok",
      headerToken: undefined,
      path: "p",
      username: null,
      operation: "read" as const,
    };
    const now = 1_700_000_000_000;
    assert.equal(
      checkFileAccess({
        ...base,
        signature: fileSignature("p", "read", "", "tok", undefined),
        signatureExpiration: null,
        nowMs: now,
      }),
      undefined,
    );
    assert.equal(
      checkFileAccess({
        ...base,
        signature: fileSignature("p", "write", "", "tok", undefined),
        signatureExpiration: null,
        nowMs: now,
      }),
      "invalid signature",
    );
    const exp = now / 1000 - 1;
    assert.equal(
      checkFileAccess({
        ...base,
        signature: fileSignature("p", "read", "", "tok", exp),
        signatureExpiration: String(exp),
        nowMs: now,
      }),
      "signature is already expired",
    );
    assert.equal(
      checkFileAccess({ ...base, token: undefined, signature: null, signatureExpiration: null, nowMs: now }),
      undefined,
    );
  });

  test("Basic auth user, encodings, keepalive header, init body, content disposition", () => {
    assert.equal(basicAuthUser(`Basic ${Buffer.from("alice:").toString("base64")}`), "alice");
    assert.equal(basicAuthUser("Bearer x"), undefined);
    assert.equal(basicAuthUser(undefined), undefined);
    assert.equal(chooseEncoding(undefined), "identity");
    assert.equal(chooseEncoding("gzip, deflate"), "gzip");
    assert.equal(chooseEncoding("gzip;q=0.5, identity"), "identity");
    assert.equal(chooseEncoding("br"), "identity");
    assert.throws(() => chooseEncoding("br, identity;q=0"));
    assert.equal(requestEncoding("gzip"), "gzip");
    assert.throws(() => requestEncoding("br"));
    assert.equal(keepaliveMs(new Headers({ "keepalive-ping-interval": "50" })), 50_000);
    assert.equal(keepaliveMs(new Headers()), 90_000);
    assert.equal(keepaliveMs(new Headers({ "keepalive-ping-interval": "x" })), 90_000);
    assert.deepEqual(parseInitBody(Buffer.from('{"envVars":{"A":"1"},"timestamp":"2024-01-01T00:00:00Z"}')), {
      envVars: { A: "1" },
    });
    assert.equal(contentDisposition("a.txt"), "inline; filename=a.txt");
    assert.equal(contentDisposition("a b.txt"), 'inline; filename="a b.txt"');
    assert.equal(contentDisposition("ž.txt"), "inline; filename*=utf-8''%C5%BE.txt");
  });
});
