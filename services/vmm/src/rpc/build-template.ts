import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { BuildTemplateRequest, BuildTemplateResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { InvalidArgumentError, TemplateNotFoundError } from "../domain/errors.js";
import type { BuildLog, BuildResult } from "../template/builder.js";
import { checkSteps } from "../template/steps.js";
import { resolveTemplate } from "../template/user-templates.js";
import { streamWhile } from "./stream-while.js";

type Message = MessageInitShape<typeof BuildTemplateResponseSchema>;

const TEMPLATE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * Builds a template on this host and streams its log; the last message carries the result.
 * The caller going away (or cancelling) aborts the build: the running step is killed and its
 * half layer removed. On a microVM host the build ends by flattening the template into its
 * disk image (a failure there fails the build, naming the template).
 */
export async function* buildTemplate(
  ctx: VmmContext,
  req: BuildTemplateRequest,
  signal: AbortSignal,
): AsyncGenerator<Message> {
  if (!TEMPLATE_ID.test(req.templateId))
    throw new InvalidArgumentError(`invalid template id ${JSON.stringify(req.templateId)}`);
  const files = new Map(Object.entries(req.files));
  const steps = checkSteps(req.steps, new Set(files.keys()));
  let r: BuildResult;
  try {
    r = yield* streamWhile<Message, BuildResult>(async (push) => {
      const log: BuildLog = (level, message) => push({ log: { at: timestampNow(), level, message } });
      const built = await ctx.templates.build(
        {
          templateId: req.templateId,
          baseTemplateId: req.baseTemplateId || "base",
          steps,
          ...(req.start ? { start: req.start } : {}),
          files,
          force: req.force,
        },
        log,
        signal,
      );
      signal.throwIfAborted();
      // The last phase: what this host's runtime boots the template from (a microVM runtime
      // flattens it into a disk image now rather than at its first boot; the jail skips it).
      const resolved = await resolveTemplate(ctx.cfg.cacheDir, req.templateId, ctx.cfg.debianMirror);
      if (!resolved) throw new TemplateNotFoundError(req.templateId);
      await ctx.runtime.prepareTemplate(resolved.image, (line) => log("info", line));
      return built;
    });
  } catch (err) {
    ctx.logger.warn({ template: req.templateId, err: (err as Error).message }, "template build failed");
    throw err;
  }
  ctx.logger.info({ template: req.templateId, ...r }, "template built");
  yield {
    result: {
      buildKey: r.buildKey,
      cachedSteps: r.cachedSteps,
      builtSteps: r.builtSteps,
      sizeBytes: BigInt(r.sizeBytes),
      durationMs: r.durationMs,
    },
  };
}
