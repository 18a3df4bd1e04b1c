/** Opaque history page tokens: base64url of "<created_at micros>~<item id>" (the keyset of the last item). */
import { invalidPageToken } from "@luna/kit";

export function encodePageToken(k: { at: bigint; id: string }): string {
  return Buffer.from(`${k.at}~${k.id}`, "utf8").toString("base64url");
}

export function decodePageToken(field: string, token: string): { at: bigint; id: string } | undefined {
  if (token === "") return undefined;
  const bad = () => invalidPageToken(field);
  if (token.length > 200 || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  const m = /^(-?\d{1,20})~([er][0-9a-f-]{1,40})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (!m) throw bad();
  return { at: BigInt(m[1]!), id: m[2]! };
}

/** ListOpenHolds page tokens: base64url of "<created_at micros>~<hold id>" (the keyset of the last hold). */
export function encodeHoldPageToken(k: { at: bigint; id: string }): string {
  return Buffer.from(`${k.at}~${k.id}`, "utf8").toString("base64url");
}

export function decodeHoldPageToken(field: string, token: string): { at: bigint; id: string } | undefined {
  if (token === "") return undefined;
  const bad = () => invalidPageToken(field);
  if (token.length > 200 || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  const m = /^(\d{1,20})~([0-9a-f-]{36})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (!m) throw bad();
  return { at: BigInt(m[1]!), id: m[2]! };
}
