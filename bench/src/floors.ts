import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { sample } from "./stats.js";

/** A bare `bwrap … true` with the same namespaces the jail uses: the floor of a cold spawn. */
export async function bwrapFloor(n: number, rootfs: string): Promise<number[]> {
  const args = [
    "--ro-bind",
    rootfs,
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--die-with-parent",
    "--",
    "/bin/true",
  ];
  return sample(
    n,
    () =>
      new Promise<void>((resolve, reject) => {
        const p = spawn("bwrap", args, { stdio: "ignore" });
        p.on("exit", (c) => (c === 0 ? resolve() : reject(new Error(`bwrap exited ${c}`))));
        p.on("error", reject);
      }),
  );
}

/** A bare unix-socket request/response round trip: the floor of an exec round trip. */
export async function unixRoundTripFloor(n: number): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "dnah-bench-"));
  const path = join(dir, "echo.sock");
  const server = createServer((c) => c.on("data", (d) => c.write(d)));
  await new Promise<void>((r) => server.listen(path, r));
  const client = connect(path);
  await new Promise((r) => client.once("connect", r));
  const out = await sample(
    n,
    () =>
      new Promise((r) => {
        client.once("data", r);
        client.write("ping");
      }),
  );
  client.destroy();
  server.close();
  rmSync(dir, { recursive: true, force: true });
  return out;
}

/** A bare single-row Postgres UPDATE: the floor of a pool claim. */
export async function postgresUpdateFloor(n: number, url: string): Promise<number[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query("CREATE TEMP TABLE bench_floor (id int PRIMARY KEY, v int)");
  await c.query("INSERT INTO bench_floor VALUES (1, 0)");
  const out = await sample(n, () => c.query("UPDATE bench_floor SET v = v + 1 WHERE id = 1"));
  await c.end();
  return out;
}
