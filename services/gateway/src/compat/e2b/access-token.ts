import { createHmac, randomBytes } from "node:crypto";
import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

const SECRET_NAME = "envd_access_token";
const SECRET_BYTES = 32;

/**
 * envd access tokens: base64url(HMAC-SHA256(secret, sandboxId)). Deterministic, so nothing per
 * sandbox is stored and every gateway computes the same token. The secret never leaves this
 * module and is never logged.
 */
export class AccessTokens {
  private constructor(private readonly secret: Buffer) {}

  /** Loads the installation's secret, creating it on the first start. */
  static async load(db: Q): Promise<AccessTokens> {
    await db.query("INSERT INTO gateway_e2b_secrets (name, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
      SECRET_NAME,
      randomBytes(SECRET_BYTES),
    ]);
    const { rows } = await db.query<{ secret: Uint8Array }>(
      "SELECT secret FROM gateway_e2b_secrets WHERE name = $1",
      [SECRET_NAME],
    );
    // pg returns bytea as a Buffer, PGlite as a plain Uint8Array.
    const secret = rows[0]?.secret;
    if (!(secret instanceof Uint8Array) || secret.length !== SECRET_BYTES) {
      throw new Error("gateway_e2b_secrets holds no usable envd access token secret");
    }
    return new AccessTokens(Buffer.from(secret));
  }

  /** Test seam: a fixed secret. */
  static fromSecret(secret: Buffer): AccessTokens {
    return new AccessTokens(Buffer.from(secret));
  }

  tokenFor(sandboxId: string): string {
    return createHmac("sha256", this.secret).update(sandboxId, "utf8").digest("base64url");
  }

  /**
   * A MAC of other bytes this surface defines (template upload URLs): `domain` separates them
   * from access tokens and from each other; fields are NUL-separated in a fixed order.
   */
  mac(domain: string, fields: readonly string[]): string {
    const h = createHmac("sha256", this.secret).update(`dnah-e2b/${domain}\0`, "utf8");
    for (const f of fields) h.update(`${f}\0`, "utf8");
    return h.digest("base64url");
  }
}
