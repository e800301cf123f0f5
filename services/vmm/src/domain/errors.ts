import { Code, ConnectError } from "@connectrpc/connect";

export class VmNotFoundError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox '${sandboxId}' is not on this host`);
    this.name = "VmNotFoundError";
  }
}

export class VmExistsError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox '${sandboxId}' already exists on this host`);
    this.name = "VmExistsError";
  }
}

export class TemplateNotFoundError extends Error {
  constructor(readonly templateId: string) {
    super(`template '${templateId}' is not built on this host`);
    this.name = "TemplateNotFoundError";
  }
}

export class HostFullError extends Error {
  constructor(readonly capacity: number) {
    super(`host is full (${capacity} sandboxes)`);
    this.name = "HostFullError";
  }
}

export class InvalidArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidArgumentError";
  }
}

/** The guest did not come up or stopped answering. */
export class GuestUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestUnavailableError";
  }
}

/** The one mapping from vmm domain errors to Connect codes. Unknown errors become Internal. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof VmNotFoundError || err instanceof TemplateNotFoundError)
    return new ConnectError(err.message, Code.NotFound);
  if (err instanceof VmExistsError) return new ConnectError(err.message, Code.AlreadyExists);
  if (err instanceof HostFullError) return new ConnectError(err.message, Code.ResourceExhausted);
  if (err instanceof InvalidArgumentError) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof GuestUnavailableError) return new ConnectError(err.message, Code.Unavailable);
  return new ConnectError("internal error", Code.Internal);
}

const SANDBOX_ID_RE = /^[a-z0-9]{1,64}$/;

export function checkSandboxId(id: string): string {
  if (!SANDBOX_ID_RE.test(id)) throw new InvalidArgumentError(`invalid sandbox id ${JSON.stringify(id)}`);
  return id;
}
