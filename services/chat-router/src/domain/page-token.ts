// Opaque page tokens (base64url JSON) for keyset pagination. A token that does not decode is INVALID_ARGUMENT.
import { invalidPageToken, isUuid } from "@luna/kit";

/** Position after a conversation in "newest activity first" order. */
export interface ConversationCursor {
  micros: bigint;
  id: string;
}

export function encodeConversationCursor(c: ConversationCursor): string {
  return Buffer.from(JSON.stringify({ t: c.micros.toString(), i: c.id })).toString("base64url");
}

export function decodeConversationCursor(field: string, token: string): ConversationCursor | undefined {
  if (token === "") return undefined;
  try {
    const o = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { t?: unknown; i?: unknown };
    if (typeof o.t === "string" && /^\d{1,20}$/.test(o.t) && isUuid(o.i)) {
      return { micros: BigInt(o.t), id: o.i };
    }
  } catch {
    // fall through
  }
  throw invalidPageToken(field);
}

/** Position before a message (messages are paged from the newest back). */
export function encodeMessageCursor(seq: bigint): string {
  return Buffer.from(JSON.stringify({ s: seq.toString() })).toString("base64url");
}

export function decodeMessageCursor(field: string, token: string): bigint | undefined {
  if (token === "") return undefined;
  try {
    const o = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { s?: unknown };
    if (typeof o.s === "string" && /^\d{1,19}$/.test(o.s)) return BigInt(o.s);
  } catch {
    // fall through
  }
  throw invalidPageToken(field);
}
