/**
 * A share request refused with a given HTTP status and `{code, message}` (the share routes
 * answer it as is): quotas, limits, bad chunks, bad tar entries, unknown uploads.
 */
export class ShareError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "ShareError";
  }
}

/** 507: writing `more` bytes would take the share over its quota. */
export function quotaExceeded(quotaBytes: number): ShareError {
  return new ShareError(
    507,
    "resource_exhausted",
    `share quota of ${quotaBytes} bytes exceeded; nothing was written`,
  );
}

/** 507: the host's disk under the share has no room for the upload (quota.ts). */
export function hostDiskFull(): ShareError {
  return new ShareError(507, "resource_exhausted", "the host's disk is full; nothing was written");
}

/** 413: one upload larger than DNAH_SHARE_UPLOAD_MAX_BYTES. */
export function tooLarge(maxBytes: number): ShareError {
  return new ShareError(
    413,
    "resource_exhausted",
    `a file may be at most ${maxBytes} bytes; nothing was written`,
  );
}
