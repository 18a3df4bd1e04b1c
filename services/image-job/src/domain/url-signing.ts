// HMAC-signed, expiring URLs for the local image store: `<base>/images/<key>?exp=<unix seconds>&sig=<base64url>`.
// The signature covers the key and the expiry, so neither can be changed without the secret.
import { createHmac, timingSafeEqual } from "node:crypto";

export const IMAGE_PATH_PREFIX = "/images/";

/** Object keys this store accepts: relative, `[A-Za-z0-9._-]` segments, no `.`/`..` segments. */
export function isSafeKey(key: string): boolean {
  if (key.length === 0 || key.length > 512) return false;
  const segments = key.split("/");
  return segments.every((s) => /^[A-Za-z0-9._-]+$/.test(s) && s !== "." && s !== "..");
}

function mac(secret: string, key: string, exp: number): Buffer {
  return createHmac("sha256", secret).update(`${key}\n${exp}`).digest();
}

/** Signs `key` until `expiresAt`; `baseUrl` "" gives a relative URL. */
export function signImageUrl(opts: { secret: string; baseUrl: string; key: string; expiresAt: Date }): string {
  if (!isSafeKey(opts.key)) throw new Error(`unsafe image key ${JSON.stringify(opts.key)}`);
  const exp = Math.floor(opts.expiresAt.getTime() / 1000);
  const sig = mac(opts.secret, opts.key, exp).toString("base64url");
  const path = opts.key.split("/").map(encodeURIComponent).join("/");
  return `${opts.baseUrl.replace(/\/+$/, "")}${IMAGE_PATH_PREFIX}${path}?exp=${exp}&sig=${sig}`;
}

export type UrlCheck = { ok: true; key: string; expiresAt: Date } | { ok: false; status: 400 | 403; reason: string };

/** Checks the path and query of a request for a signed image URL. */
export function verifyImageUrl(opts: { secret: string; pathAndQuery: string; now: Date }): UrlCheck {
  let url: URL;
  try {
    url = new URL(opts.pathAndQuery, "http://localhost");
  } catch {
    return { ok: false, status: 400, reason: "malformed URL" };
  }
  if (!url.pathname.startsWith(IMAGE_PATH_PREFIX)) return { ok: false, status: 400, reason: "not an image path" };
  let key: string;
  try {
    key = url.pathname.slice(IMAGE_PATH_PREFIX.length).split("/").map(decodeURIComponent).join("/");
  } catch {
    return { ok: false, status: 400, reason: "malformed path" };
  }
  if (!isSafeKey(key)) return { ok: false, status: 400, reason: "invalid image key" };
  const expRaw = url.searchParams.get("exp") ?? "";
  const sigRaw = url.searchParams.get("sig") ?? "";
  if (!/^\d{1,12}$/.test(expRaw) || !/^[A-Za-z0-9_-]{43}$/.test(sigRaw)) {
    return { ok: false, status: 403, reason: "missing or malformed signature" };
  }
  const exp = Number(expRaw);
  // Compare the encoded text, not decoded bytes: the last base64url character of a 32-byte MAC has two unused bits,
  // so four different strings decode to the same bytes, and only the canonical one may pass.
  const expected = Buffer.from(mac(opts.secret, key, exp).toString("base64url"));
  const given = Buffer.from(sigRaw);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, status: 403, reason: "bad signature" };
  if (exp * 1000 < opts.now.getTime()) return { ok: false, status: 403, reason: "URL expired" };
  return { ok: true, key, expiresAt: new Date(exp * 1000) };
}
