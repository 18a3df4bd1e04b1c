// Access tokens are self-contained JWTs (15 min by default), so ending an account or its sessions in auth's database
// alone leaves the tokens already issued working until they expire. The revocation list closes that gap for every
// service: auth records "tokens of user U issued before T are void" in Redis (DeleteAccount, DisableUser, and
// ChangePassword, which signs out everywhere), and the kit's verifier refuses such tokens. Each replica caches a
// user's entry for at most `checkIntervalMs` (LUNA_REVOCATION_CHECK_INTERVAL, default 2 s), which is the bound on how
// long a revoked token keeps working. An entry lives as long as the tokens it can refuse (access-token TTL + skew),
// so the list stays small. Redis unreachable: checks fail open (logged), like every Redis use in Luna; tokens then
// expire on their own.
import { Code, ConnectError } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import type { JwtVerifier } from "./auth.js";
import type { MinimalLogger } from "./nats.js";

/** Default LUNA_REVOCATION_CHECK_INTERVAL: a revoked token stops working within this (plus a Redis round trip). */
export const DEFAULT_REVOCATION_CHECK_INTERVAL_MS = 2000;

export type RevocationList = {
  /**
   * Voids the user's access tokens issued before `at` (default now; compared with the token's issue time in ms, so
   * the new tokens a sign-out-everywhere hands out right after stay valid). Kept for `ttlMs`: the longest an access
   * token lives, plus the verifiers' clock tolerance. A later revocation of the same user wins.
   */
  revokeUser(userId: string, opts: { ttlMs: number; at?: Date }): Promise<void>;
  /** The user's cut-off in ms since the epoch (tokens issued earlier are void), cached per replica. */
  notBefore(userId: string): Promise<number | undefined>;
};

export type RevocationListOptions = {
  redis: Redis;
  /** How long a replica trusts what it read for one user; default {@link DEFAULT_REVOCATION_CHECK_INTERVAL_MS}. */
  checkIntervalMs?: number;
  keyPrefix?: string;
  /** Users cached per replica (oldest dropped first); default 50 000. */
  maxEntries?: number;
  log?: MinimalLogger;
};

// KEYS: the user's entry. ARGV: cut-off (ms), ttl (ms). Keeps the later cut-off and the longer life.
const REVOKE = `
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local cutoff = tonumber(ARGV[1])
if cutoff > current then redis.call('SET', KEYS[1], cutoff) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
`;

export function createRevocationList(opts: RevocationListOptions): RevocationList {
  const { redis } = opts;
  const intervalMs = opts.checkIntervalMs ?? DEFAULT_REVOCATION_CHECK_INTERVAL_MS;
  const prefix = opts.keyPrefix ?? "luna:revoked:user:";
  const max = opts.maxEntries ?? 50_000;
  const cache = new Map<string, { notBefore: number | undefined; readAt: number }>();
  const reading = new Map<string, Promise<number | undefined>>();
  let lastWarn = 0;

  async function read(userId: string): Promise<number | undefined> {
    try {
      const raw = await redis.get(prefix + userId);
      const notBefore = raw === null ? undefined : Number(raw);
      cache.delete(userId);
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
      cache.set(userId, { notBefore, readAt: Date.now() });
      return notBefore;
    } catch (err) {
      if (Date.now() - lastWarn > 60_000) {
        lastWarn = Date.now();
        opts.log?.warn({ err }, "redis unavailable for token revocation checks; allowing tokens until they expire");
      }
      return cache.get(userId)?.notBefore;
    }
  }

  return {
    async revokeUser(userId, { ttlMs, at }) {
      const cutoff = (at ?? new Date()).getTime();
      await redis.eval(REVOKE, 1, prefix + userId, cutoff, Math.max(1, Math.ceil(ttlMs)));
      cache.delete(userId); // this replica sees it at once
    },
    notBefore(userId) {
      const hit = cache.get(userId);
      if (hit && Date.now() - hit.readAt < intervalMs) return Promise.resolve(hit.notBefore);
      let pending = reading.get(userId);
      if (!pending) {
        pending = read(userId).finally(() => reading.delete(userId));
        reading.set(userId, pending);
      }
      return pending;
    },
  };
}

/**
 * Wraps a verifier so user tokens issued before their user's revocation cut-off are refused (`Unauthenticated`:
 * the client refreshes, which fails for a deleted or disabled account and succeeds after a sign-out-everywhere on
 * the device that did it). Internal tokens are not subject to it. Put it outside any token cache: the cut-off is
 * checked on every call.
 */
export function revocationCheckingVerifier(verifier: JwtVerifier, revocations: Pick<RevocationList, "notBefore">): JwtVerifier {
  return {
    async verify(token) {
      const principal = await verifier.verify(token);
      if (principal.role === "internal" || principal.issuedAt === undefined) return principal;
      const notBefore = await revocations.notBefore(principal.userId);
      if (notBefore !== undefined && principal.issuedAt < notBefore) {
        throw new ConnectError("token revoked (account deleted or disabled, or signed out everywhere); sign in again", Code.Unauthenticated);
      }
      return principal;
    },
  };
}
