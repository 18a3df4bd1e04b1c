// Personal API keys (issue 22): what OpenAI-compatible clients send as `authorization: Bearer luna_sk_...`.
// Format: `luna_sk_` + 40 base62 random characters (~238 bits) + a 6-character base62 CRC-32 of them. The prefix
// makes leaked keys easy to scan for; the checksum lets every service refuse a mistyped or made-up key without asking
// auth. Auth stores only the SHA-256 of a key (it is high-entropy, so a fast hash is enough).
//
// Verification: a service asks auth (AuthInternalService.VerifyApiKey) and caches the answer per replica for
// LUNA_API_KEY_CACHE_TTL (default 60 s). Revoking a key, or revoking the user (account deleted or disabled), writes an
// entry in the revocation list (revocation.ts); a cached answer older than that entry is dropped and auth is asked
// again, so a revoked key stops working within the list's check interval (LUNA_REVOCATION_CHECK_INTERVAL, 2 s).
import { createHash, randomInt } from "node:crypto";
import { crc32 } from "node:zlib";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { AuthInternalService } from "@luna/contracts/luna/auth/v1/auth_internal_service_pb.js";
import type { JwtVerifier, Principal } from "./auth.js";
import type { RevocationList } from "./revocation.js";

export const API_KEY_PREFIX = "luna_sk_";
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LENGTH = 40;
const CHECKSUM_LENGTH = 6;
export const API_KEY_LENGTH = API_KEY_PREFIX.length + BODY_LENGTH + CHECKSUM_LENGTH;
const WELL_FORMED = new RegExp(`^${API_KEY_PREFIX}[0-9A-Za-z]{${BODY_LENGTH + CHECKSUM_LENGTH}}$`);

/** Clock difference between auth and a service tolerated when comparing revocation cut-offs with cached answers. */
const CLOCK_MARGIN_MS = 5000;

/** Default LUNA_API_KEY_CACHE_TTL: how long a replica trusts auth's answer for a key (revocations cut it short). */
export const DEFAULT_API_KEY_CACHE_TTL_MS = 60_000;

function checksumOf(body: string): string {
  let n = crc32(body);
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = ALPHABET[n % 62]! + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/** A new random API key. */
export function generateApiKey(): string {
  let body = "";
  for (let i = 0; i < BODY_LENGTH; i++) body += ALPHABET[randomInt(62)]!;
  return API_KEY_PREFIX + body + checksumOf(body);
}

/** Whether the token looks like an API key at all (the prefix): such tokens are never tried as JWTs. */
export function looksLikeApiKey(token: string): boolean {
  return token.startsWith(API_KEY_PREFIX);
}

/** Prefix, length, alphabet and checksum are right (says nothing about whether the key exists). */
export function isWellFormedApiKey(key: string): boolean {
  if (!WELL_FORMED.test(key)) return false;
  const body = key.slice(API_KEY_PREFIX.length, API_KEY_PREFIX.length + BODY_LENGTH);
  return key.slice(API_KEY_PREFIX.length + BODY_LENGTH) === checksumOf(body);
}

/** What auth stores and looks keys up by: SHA-256 hex. */
export function hashApiKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/** The recognisable start of a key shown in lists: the prefix and 4 characters. */
export function apiKeyHint(key: string): string {
  return key.slice(0, API_KEY_PREFIX.length + 4);
}

/** The revocation-list entry of one key (revocation.ts keys entries by an id; users and keys never collide). */
export function apiKeyRevocationId(apiKeyId: string): string {
  return `apikey:${apiKeyId}`;
}

/** Auth's answer for a valid key. */
export type ApiKeyLookupResult = { userId: string; apiKeyId: string; expiresAtMs?: number };
/** Asks auth; rejects with `Unauthenticated` for a key that is not valid (and anything else when auth is down). */
export type ApiKeyLookup = (key: string) => Promise<ApiKeyLookupResult>;

/** The lookup over a Connect transport to auth (AuthInternalService, role internal). */
export function apiKeyLookupOver(transport: Transport): ApiKeyLookup {
  const client = createClient(AuthInternalService, transport);
  return async (key) => {
    const r = await client.verifyApiKey({ key });
    return { userId: r.userId, apiKeyId: r.apiKeyId, expiresAtMs: r.expiresAt ? timestampMs(r.expiresAt) : undefined };
  };
}

export type ApiKeyVerifierOptions = {
  lookup: ApiKeyLookup;
  /** Cut-offs of keys ({@link apiKeyRevocationId}) and of users. */
  revocations?: Pick<RevocationList, "notBefore">;
  /** Default {@link DEFAULT_API_KEY_CACHE_TTL_MS}. */
  cacheTtlMs?: number;
  /** Keys cached per replica (oldest dropped first); default 10 000. */
  maxEntries?: number;
  now?: () => number;
};

function refused(message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}

/**
 * Verifies API keys: the format locally, then auth, cached. A principal from a key has role "user" (an admin's key
 * is not an admin credential), `apiKeyId` set, and `issuedAt` = when auth last confirmed the key, so the user's
 * revocation cut-off (checked outside, see revocationCheckingVerifier) applies to it as to a token.
 */
export function createApiKeyVerifier(opts: ApiKeyVerifierOptions): JwtVerifier {
  const ttl = opts.cacheTtlMs ?? DEFAULT_API_KEY_CACHE_TTL_MS;
  const max = opts.maxEntries ?? 10_000;
  const now = opts.now ?? Date.now;
  // Keyed by the key's hash, so a heap dump holds no usable keys.
  const cache = new Map<string, { principal: Principal; verifiedAt: number; expiresAtMs?: number }>();
  const pending = new Map<string, Promise<Principal>>();

  // A cut-off is auth's clock, verifiedAt ours: an answer is only trusted when it is clearly younger than a cut-off
  // (by CLOCK_MARGIN_MS); within the margin auth is asked again, which costs a lookup, never a revoked key working.
  async function stillValid(entry: { principal: Principal; verifiedAt: number }): Promise<boolean> {
    if (!opts.revocations) return true;
    const [keyCut, userCut] = await Promise.all([
      opts.revocations.notBefore(apiKeyRevocationId(entry.principal.apiKeyId!)),
      opts.revocations.notBefore(entry.principal.userId),
    ]);
    const before = (cut: number | undefined) => cut === undefined || cut < entry.verifiedAt - CLOCK_MARGIN_MS;
    return before(keyCut) && before(userCut);
  }

  async function ask(key: string, hash: string): Promise<Principal> {
    const verifiedAt = now();
    let r: ApiKeyLookupResult;
    try {
      r = await opts.lookup(key);
    } catch (err) {
      cache.delete(hash);
      if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.NotFound)) throw refused(err.rawMessage);
      // Auth unreachable: our outage, not a bad key (clients retry Unavailable).
      throw new ConnectError("cannot verify API keys right now", Code.Unavailable, undefined, undefined, err);
    }
    const principal: Principal = { userId: r.userId, role: "user", tokenId: r.apiKeyId, issuedAt: verifiedAt, apiKeyId: r.apiKeyId };
    cache.delete(hash);
    if (cache.size >= max) cache.delete(cache.keys().next().value!);
    cache.set(hash, { principal, verifiedAt, expiresAtMs: r.expiresAtMs });
    return principal;
  }

  return {
    async verify(key) {
      if (!isWellFormedApiKey(key)) throw refused("invalid API key (wrong format or checksum)");
      const hash = hashApiKey(key);
      const hit = cache.get(hash);
      const t = now();
      if (hit && t - hit.verifiedAt < ttl && (hit.expiresAtMs === undefined || t < hit.expiresAtMs) && (await stillValid(hit))) {
        return hit.principal;
      }
      let p = pending.get(hash);
      if (!p) {
        p = ask(key, hash).finally(() => pending.delete(hash));
        pending.set(hash, p);
      }
      return p;
    },
  };
}
