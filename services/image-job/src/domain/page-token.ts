// Opaque keyset page tokens for newest-first lists: the (created_at, id) of the last item returned.
import { isUuid } from "@luna/kit";

export interface PageCursor {
  createdAt: Date;
  id: string;
}


export function encodePageToken(c: PageCursor): string {
  return Buffer.from(`${c.createdAt.getTime()}.${c.id}`).toString("base64url");
}

/** Undefined for an empty token; throws a plain Error with a client-facing message when it is not one of ours. */
export function decodePageToken(token: string): PageCursor | undefined {
  if (token === "") return undefined;
  const raw = token.length <= 200 ? Buffer.from(token, "base64url").toString() : "";
  const dot = raw.indexOf(".");
  const ms = Number(raw.slice(0, dot));
  const id = raw.slice(dot + 1);
  if (dot < 1 || !Number.isSafeInteger(ms) || ms < 0 || !isUuid(id)) throw new Error("is not a page token this service issued");
  return { createdAt: new Date(ms), id };
}

/** Page size: 0 = `def`, clamped to 1..max; negative is an error. */
export function pageSize(requested: number, def: number, max: number): number {
  if (requested < 0) throw new Error("must not be negative");
  if (requested === 0) return def;
  return Math.min(requested, max);
}
