/**
 * A VM helper's log files stop at `LOG_CAP_BYTES` (issue 11): a guest can make its QEMU (serial
 * console) or vsock backend write without end, and the host's disk must not pay for it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { LOG_CAP_BYTES, spawnSupervised } from "../src/runtime/vm/process.js";

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const NOTE = `[dnah: this log reached ${LOG_CAP_BYTES} bytes; what follows is dropped]`;

describe("helper logs are capped", () => {
  const dir = mkdtempSync(join(tmpdir(), "dnah-logcap-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  /** Runs `script` under spawnSupervised and waits until its logs are flushed. */
  const runLogged = async (script: string, files: { logFile: string; stdoutFile?: string }) => {
    const p = spawnSupervised({
      name: "t",
      command: "/bin/sh",
      args: ["-c", script],
      env: { PATH },
      ...files,
    });
    assert.equal(await p.exited, "exited with code 0");
    // The logs are ended 50 ms after the exit; give the writes time to land.
    await new Promise((r) => setTimeout(r, 300));
  };

  test("stdout and stderr past the cap are dropped after one note; the writer never blocks", async () => {
    const log = join(dir, "both.log");
    // Four times the cap on each stream: the process must still run to its end.
    const n = 4 * LOG_CAP_BYTES;
    await runLogged(`head -c ${n} /dev/zero | tr '\\0' o; head -c ${n} /dev/zero | tr '\\0' e >&2`, {
      logFile: log,
    });
    const text = readFileSync(log, "utf8");
    assert.equal(text.length, LOG_CAP_BYTES + NOTE.length + 2);
    assert.ok(text.endsWith(`\n${NOTE}\n`));
    assert.equal(text.split(NOTE).length, 2, "one note");
  });

  test("output reaching exactly the cap is kept whole, then the note", async () => {
    const log = join(dir, "exact.log");
    await runLogged(`head -c ${LOG_CAP_BYTES} /dev/zero | tr '\\0' x`, { logFile: log });
    assert.equal(statSync(log).size, LOG_CAP_BYTES + NOTE.length + 2);
    assert.ok(readFileSync(log, "utf8").endsWith(`x\n${NOTE}\n`));
  });

  test("stdout goes to its own file, each capped; a restarted process gets no new allowance", async () => {
    const log = join(dir, "qemu.log");
    const serial = join(dir, "serial.log");
    const files = { logFile: log, stdoutFile: serial };
    await runLogged("echo started >&2; yes console-line | head -c 100000", files);
    assert.equal(readFileSync(log, "utf8"), "started\n");
    assert.equal(statSync(serial).size, 100_000);
    // Restarted (a resumed VM's QEMU appends to the same files): the cap counts what is there.
    await runLogged(`yes console-line | head -c ${2 * LOG_CAP_BYTES}`, files);
    assert.equal(statSync(serial).size, LOG_CAP_BYTES + NOTE.length + 2);
    await runLogged("yes console-line | head -c 100000", files);
    assert.equal(statSync(serial).size, LOG_CAP_BYTES + NOTE.length + 2, "nothing past the note");
  });
});
