import { ENVD_VERSION } from "../version.js";
import { type HttpResponse, sendNoContent } from "./respond.js";

/** `GET /health` → 204; the SDK's `isRunning()`. */
export function health(res: HttpResponse): void {
  sendNoContent(res, { "Cache-Control": "no-store", "X-Envd-Version": ENVD_VERSION });
}
