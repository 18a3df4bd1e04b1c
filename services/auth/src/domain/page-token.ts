/**
 * Keyset pagination for newest-first lists: the token is the (created_at, id) of the last item returned, opaque to
 * clients (base64url JSON). Keyset rather than offset so inserts while paging never repeat or skip items.
 */
import { isUuid } from "@luna/kit";

export type Cursor = { createdAt: Date; id: string };

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

export function encodePageToken(c: Cursor): string {
  return Buffer.from(JSON.stringify({ t: c.createdAt.toISOString(), id: c.id }), "utf8").toString("base64url");
}

/** The cursor, or undefined when the token was not produced by `encodePageToken`. */
export function decodePageToken(token: string): Cursor | undefined {
  if (token.length > 200) return undefined;
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (typeof v !== "object" || v === null) return undefined;
    const { t, id } = v as Record<string, unknown>;
    if (typeof t !== "string" || !isUuid(id)) return undefined;
    const createdAt = new Date(t);
    return Number.isNaN(createdAt.getTime()) ? undefined : { createdAt, id };
  } catch {
    return undefined;
  }
}

/** 0 means the default; larger values are clamped; negatives are the caller's error (checked by validation). */
export function pageSize(requested: number): number {
  return requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
}
