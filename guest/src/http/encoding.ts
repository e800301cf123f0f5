import { HttpError } from "./respond.js";

export type Encoding = "gzip" | "identity";

interface Weighted {
  coding: string;
  q: number;
}

function parseList(header: string): Weighted[] {
  return header
    .split(",")
    .map((part) => {
      const [name = "", ...params] = part.split(";");
      let q = 1;
      for (const p of params) {
        const m = /^\s*q\s*=\s*([0-9.]+)\s*$/i.exec(p);
        if (m?.[1] !== undefined) q = Number(m[1]);
      }
      return { coding: name.trim().toLowerCase(), q: Number.isFinite(q) ? q : 1 };
    })
    .filter((w) => w.coding !== "");
}

function identityRejected(list: Weighted[]): boolean {
  let rejected = false;
  let accepted = false;
  let wildcardRejected = false;
  for (const w of list) {
    if (w.coding === "identity") {
      if (w.q === 0) rejected = true;
      else accepted = true;
    } else if (w.coding === "*" && w.q === 0) {
      wildcardRejected = true;
    }
  }
  return rejected || (wildcardRejected && !accepted);
}

/**
 * envd's response-encoding choice: the highest-quality acceptable of gzip/identity (gzip wins a
 * tie, so `Accept-Encoding: gzip, deflate` — what undici always sends — gets gzip); 406 when
 * neither is acceptable.
 */
export function chooseEncoding(header: string | undefined): Encoding {
  if (!header) return "identity";
  const list = parseList(header);
  const rejected = identityRejected(list);
  const sorted = [...list].sort((a, b) => b.q - a.q);
  for (const w of sorted) {
    if (w.q === 0) continue;
    if (w.coding === "identity") return "identity";
    if (w.coding === "*") return rejected ? "gzip" : "identity";
    if (w.coding === "gzip") return "gzip";
  }
  if (!rejected) return "identity";
  throw new HttpError(406, "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]");
}

/** Whether identity is acceptable (Range requests are served unencoded, as envd does). */
export function identityAcceptable(header: string | undefined): boolean {
  return !header || !identityRejected(parseList(header));
}

/** `Content-Encoding` of an upload: identity or gzip, else 400. */
export function requestEncoding(header: string | undefined): Encoding {
  if (!header) return "identity";
  const coding = parseList(header)[0]?.coding ?? "identity";
  if (coding === "identity") return "identity";
  if (coding === "gzip") return "gzip";
  throw new HttpError(
    400,
    `error decompressing request body: unsupported Content-Encoding: ${header}, supported: [gzip]`,
  );
}
