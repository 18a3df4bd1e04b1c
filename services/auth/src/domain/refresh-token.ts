import { createHash, randomBytes } from "node:crypto";

/**
 * Refresh tokens are opaque: a recognisable prefix (so secret scanners and logs can spot them) and 256 random bits in
 * base64url. Only their SHA-256 is stored, so a database leak yields no usable token.
 */
export const REFRESH_TOKEN_PREFIX = "luna_rt_";
const RANDOM_BYTES = 32;
const SHAPE = new RegExp(`^${REFRESH_TOKEN_PREFIX}[A-Za-z0-9_-]{43}$`);

export function generateRefreshToken(): string {
  return REFRESH_TOKEN_PREFIX + randomBytes(RANDOM_BYTES).toString("base64url");
}

/** True when the string has the shape of a refresh token (checked before any database look-up). */
export function looksLikeRefreshToken(token: string): boolean {
  return SHAPE.test(token);
}

export function hashRefreshToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}
