import { readdir, statfs } from "node:fs/promises";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createServiceClient, type Logger } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { VmmConfig } from "./config.js";
import type { Runtime } from "./runtime/runtime.js";
import { userTemplatesHeld } from "./template/user-templates.js";

export interface RegistrationParts {
  cfg: VmmConfig;
  logger: Logger;
  runtime: Runtime;
  /** Where the vmm listens (used when no advertise URL is set). */
  url: string;
  /** The sandboxes this host has now (running or paused). */
  sandboxIds(): string[];
  /** Removes a sandbox the scheduler does not know as this host's (reconciliation). */
  remove(sandboxId: string): Promise<void>;
  /** Called with the control plane's public key each time the host (re)registers. */
  onControlKey(publicKey: Uint8Array): void;
}

/**
 * Joins the scheduler: RegisterHost (with the join token when one is configured) with what
 * this host offers — slots, vCPUs, memory, free disk, labels, the templates it holds — then a
 * heartbeat every interval reporting its sandboxes. The answer names sandboxes the scheduler
 * deleted (or never placed here): they are removed. A scheduler that lost the host (NotFound)
 * is registered with again. Returns a stop function.
 */
export async function startRegistration(p: RegistrationParts): Promise<() => void> {
  const { cfg, logger } = p;
  if (!cfg.schedulerUrl) return () => {};
  const auth: Interceptor = (next) => async (req) => {
    if (cfg.joinToken !== undefined && req.method.name === "RegisterHost")
      req.header.set("authorization", `Bearer ${cfg.joinToken}`);
    return next(req);
  };
  const scheduler = createServiceClient(SchedulerService, cfg.schedulerUrl, [auth]);
  const register = async () => {
    const res = await scheduler.registerHost({
      hostId: cfg.hostId,
      vmmUrl: cfg.advertiseUrl ?? p.url,
      runtime: p.runtime.name,
      capacitySandboxes: cfg.capacitySandboxes,
      vcpus: cfg.vcpus ?? availableParallelism(),
      memoryMib: BigInt(cfg.memoryMib ?? Math.floor(totalmem() / 1024 / 1024)),
      diskFreeMib: BigInt(await diskFreeMib(cfg.stateDir)),
      labels: cfg.hostLabels,
      templates: await templatesHeld(cfg.cacheDir),
    });
    if (res.controlPublicKey.length !== 32)
      throw new Error("the scheduler sent no control-plane key: it is older than this vmm");
    p.onControlKey(res.controlPublicKey);
  };
  const started = performance.now();
  await register();
  logger.info(
    {
      "host.id": cfg.hostId,
      scheduler: cfg.schedulerUrl,
      registerMs: Math.round(performance.now() - started),
    },
    "registered with scheduler",
  );
  let inFlight = false;
  const beat = async () => {
    const ids = p.sandboxIds();
    const res = await scheduler
      .heartbeat({
        hostId: cfg.hostId,
        runningSandboxes: ids.length,
        sandboxIds: ids,
        reportsSandboxes: true,
        diskFreeMib: BigInt(await diskFreeMib(cfg.stateDir)),
        templates: await templatesHeld(cfg.cacheDir),
      })
      .catch(async (err: unknown) => {
        // A scheduler that lost us (a reset database) answers NotFound: register again.
        if (ConnectError.from(err).code !== Code.NotFound) throw err;
        await register();
        return { removeSandboxIds: [] as string[] };
      });
    for (const id of res.removeSandboxIds) {
      logger.warn(
        { "host.id": cfg.hostId, "sandbox.id": id },
        "the scheduler does not know this sandbox here: removing it",
      );
      await p
        .remove(id)
        .catch((err: Error) =>
          logger.error(
            { "sandbox.id": id, err: err.message },
            "could not remove a sandbox the scheduler does not know",
          ),
        );
    }
  };
  const timer = setInterval(() => {
    if (inFlight) return;
    inFlight = true;
    beat()
      .catch((err: Error) => logger.warn({ "host.id": cfg.hostId, err: err.message }, "heartbeat failed"))
      .finally(() => {
        inFlight = false;
      });
  }, cfg.heartbeatIntervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

async function diskFreeMib(dir: string): Promise<number> {
  try {
    const s = await statfs(dir);
    // 0 on the wire means "not reported" (no limit): a full disk is reported as 1 MiB.
    return Math.max(1, Math.floor((s.bavail * s.bsize) / 1024 / 1024));
  } catch {
    return 0;
  }
}

/**
 * Template ids with a built rootfs in the cache (`templates/<id>/…`), and the templates built
 * from steps whose layers are all here.
 */
async function templatesHeld(cacheDir: string): Promise<string[]> {
  let builtin: string[] = [];
  try {
    builtin = (await readdir(join(cacheDir, "templates"), { withFileTypes: true }))
      .filter((d) => d.isDirectory() && /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(d.name))
      .map((d) => d.name)
      .slice(0, 1000);
  } catch {
    // none built yet
  }
  return [...builtin, ...(await userTemplatesHeld(cacheDir))];
}
