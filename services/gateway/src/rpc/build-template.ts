import { Code, ConnectError } from "@connectrpc/connect";
import type { BuildTemplateResponse } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { InvalidArgumentError } from "../errors.js";
import { isRegistryImage, registryImageMessage } from "../templates/dockerfile.js";
import type { Start, Step } from "../templates/steps.js";
import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** A template build as every surface asks for it (native JSON, Dockerfile, E2B, Daytona). */
export interface TemplateBuildInput {
  name: string;
  aliases: string[];
  public: boolean;
  /** The dnah template it starts from. */
  from: string;
  steps: Step[];
  start: Start | undefined;
  /** 0: the template's current size, or its base's. */
  cpuCount: number;
  memoryMib: number;
  /** Ignore every cached layer. */
  force: boolean;
  /** Start this reserved build (reserveTemplateBuild) rather than a new one. */
  buildId?: string;
}

/**
 * Starts a build of the caller's template `name` (created when new). `from` must be a dnah
 * template the caller sees: a registry image, or a name no template has, is a 400 saying so.
 */
export async function buildTemplate(
  deps: RpcDeps,
  input: TemplateBuildInput,
  opts: TemplateCallOptions,
): Promise<BuildTemplateResponse> {
  if (isRegistryImage(input.from)) throw new InvalidArgumentError(registryImageMessage(input.from));
  try {
    await deps.scheduler.getTemplate({ templateId: input.from, owner: opts.owner }, callOptions(opts));
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound)
      throw new InvalidArgumentError(
        `FROM '${input.from}': no template of that name; FROM of a registry image needs an image store; FROM a dnah template (base, code-interpreter, or one of yours)`,
        { cause: err },
      );
    throw fromTemplateScheduler(err);
  }
  try {
    return await deps.scheduler.buildTemplate(
      {
        name: input.name,
        aliases: input.aliases,
        owner: opts.owner,
        public: input.public,
        baseTemplateId: input.from,
        steps: input.steps,
        ...(input.start !== undefined ? { start: input.start } : {}),
        cpuCount: input.cpuCount,
        memoryMib: input.memoryMib,
        force: input.force,
        ...(input.buildId !== undefined ? { buildId: input.buildId } : {}),
      },
      callOptions(opts),
    );
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}

/**
 * Creates (or claims for a rebuild) the caller's template `name` with a build in WAITING, its
 * steps to come with buildTemplate({buildId}) — E2B's builder asks for ids first.
 */
export async function reserveTemplateBuild(
  deps: RpcDeps,
  input: { name: string; cpuCount: number; memoryMib: number },
  opts: TemplateCallOptions,
): Promise<BuildTemplateResponse> {
  try {
    return await deps.scheduler.buildTemplate(
      {
        name: input.name,
        owner: opts.owner,
        cpuCount: input.cpuCount,
        memoryMib: input.memoryMib,
        reserve: true,
      },
      callOptions(opts),
    );
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
