import { createHash, randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import type { Logger } from "@luna/kit";
import type { SignInThrottlePolicy } from "../domain/throttle-policy.js";

/**
 * Brute-force throttling in Redis (policy: domain/throttle-policy.ts). Each check *reserves* its attempt atomically
 * (a Lua script), so concurrent attempts cannot slip past a limit between check and record: an admitted attempt is
 * counted at once and un-counted only if it succeeds. Keys carry a SHA-256 of the email, never the email itself.
 *
 * Redis down: the check fails open (logged), like every rate limit in Luna; argon2's cost still bounds the guessing
 * rate per replica. Credits never depend on this.
 */
export type ThrottleDecision = { allowed: true; attemptId: string } | { allowed: false; retryAfterMs: number; limit: "account" | "ip" | "delay" };

export interface Throttle {
  /** Admits (and counts) one sign-in attempt for the account key and IP, or says how long to wait. */
  beginSignIn(accountKey: string, ip: string): Promise<ThrottleDecision>;
  /** The attempt failed: it stays counted, and the progressive delay grows. */
  signInFailed(accountKey: string, ip: string, attemptId: string): Promise<void>;
  /** The attempt succeeded: un-count it and reset the progressive delay (never the hourly cap of other failures). */
  signInSucceeded(accountKey: string, ip: string, attemptId: string): Promise<void>;
  /** Admits (and counts) one invite redemption attempt from the IP. */
  beginInviteRedemption(ip: string): Promise<ThrottleDecision>;
  /** The code was accepted: un-count the attempt. */
  inviteRedeemed(ip: string, attemptId: string): Promise<void>;
}

export type InviteThrottlePolicy = { ipMaxAttempts: number; ipWindowMs: number };

/**
 * The client address when the kit resolved none (neither x-forwarded-for nor the peer is known). Such requests share
 * no IP bucket (it would be one global bucket that any attacker could fill to lock everyone out); the per-account
 * limits still apply.
 */
export const UNKNOWN_IP = "unknown";
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

const HOUR_MS = 3_600_000;

// KEYS: account log (zset), account streak (hash: n, next), ip log (zset), account checks in flight (zset)
// ARGV: now, attemptId, accountMax, accountWindowMs, ipMax, ipWindowMs, freeFailures, baseDelayMs, maxDelayMs,
//       pendingTtlMs
// The streak counts an attempt from its admission (n recorded failures + checks still in flight), not from its
// failure: otherwise a burst sent at once would all be admitted while n still reads 0 (issue 20, defect 3).
const BEGIN_SIGN_IN = `
local now = tonumber(ARGV[1])
local function full(key, max, window)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= max then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(tonumber(oldest[2]) + window - now, 1)
  end
  return 0
end
local wait = full(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return {0, wait, 'account'} end
wait = full(KEYS[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
if wait > 0 then return {0, wait, 'ip'} end
-- A check whose outcome was never recorded (its process died) stops counting after pendingTtlMs.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[10]))
local inFlight = redis.call('ZCARD', KEYS[4])
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0') + inFlight
local nextAt = tonumber(redis.call('HGET', KEYS[2], 'next') or '0')
if now < nextAt then return {0, nextAt - now, 'delay'} end
local free = tonumber(ARGV[7])
if n >= free then
  local delay = math.floor(math.min(tonumber(ARGV[8]) * 2 ^ math.min(n - free, 30), tonumber(ARGV[9])))
  -- Checks still in flight will set the gate when they fail, as they would have in a sequence: wait for them.
  if inFlight > 0 then return {0, delay, 'delay'} end
  -- In delay mode one attempt at a time: hold the gate until this attempt's outcome is recorded.
  redis.call('HSET', KEYS[2], 'next', now + delay)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
end
redis.call('ZADD', KEYS[4], now, ARGV[2])
redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[10]))
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
return {1, 0, ''}
`;

// KEYS: account streak, account checks in flight. ARGV: now, accountWindowMs, freeFailures, baseDelayMs, maxDelayMs,
// attemptId. The attempt moves from "in flight" to the failure count.
const SIGN_IN_FAILED = `
local now = tonumber(ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[6])
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local free = tonumber(ARGV[3])
local nextAt = 0
if n >= free then nextAt = now + math.floor(math.min(tonumber(ARGV[4]) * 2 ^ math.min(n - free, 30), tonumber(ARGV[5]))) end
-- Never shorten a gate set meanwhile by a later admission (it counted this attempt too).
nextAt = math.max(nextAt, tonumber(redis.call('HGET', KEYS[1], 'next') or '0'))
redis.call('HSET', KEYS[1], 'next', nextAt)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return n
`;

// KEYS: ip log. ARGV: now, attemptId, max, windowMs
const BEGIN_WINDOWED = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.max(tonumber(oldest[2]) + window - now, 1), 'ip'}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0, ''}
`;

type ScriptReply = [number, number, string];

export function createRedisThrottle(opts: {
  redis: Redis;
  signIn: SignInThrottlePolicy;
  invite: InviteThrottlePolicy;
  log: Logger;
  /** Milliseconds since the epoch; injectable so tests can move time instead of waiting. */
  now?: () => number;
  keyPrefix?: string;
  /** How long an admitted check counts as in flight when its outcome is never recorded (a crash); default 60 s. */
  pendingTtlMs?: number;
}): Throttle {
  const { redis, signIn: p, invite, log } = opts;
  const now = opts.now ?? Date.now;
  const prefix = opts.keyPrefix ?? "luna:auth:";
  const pendingTtlMs = opts.pendingTtlMs ?? 60_000;
  const account = (k: string) => createHash("sha256").update(k, "utf8").digest("hex");
  const keys = {
    accountLog: (k: string) => `${prefix}signin:acct:${account(k)}`,
    streak: (k: string) => `${prefix}signin:streak:${account(k)}`,
    ipLog: (ip: string) => `${prefix}signin:ip:${ip}`,
    pending: (k: string) => `${prefix}signin:pending:${account(k)}`,
    inviteIp: (ip: string) => `${prefix}invite:ip:${ip}`,
  };

  const decision = (r: ScriptReply, attemptId: string): ThrottleDecision =>
    r[0] === 1 ? { allowed: true, attemptId } : { allowed: false, retryAfterMs: Number(r[1]), limit: r[2] as "account" | "ip" | "delay" };

  async function failOpen<T>(what: string, fn: () => Promise<T>, fallback: T): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      log.warn({ err, what }, "redis unavailable for auth throttling; allowing the attempt");
      return fallback;
    }
  }

  return {
    beginSignIn(accountKey, ip) {
      const id = randomUUID();
      return failOpen("beginSignIn", async () => decision((await redis.eval(BEGIN_SIGN_IN, 4, keys.accountLog(accountKey), keys.streak(accountKey), keys.ipLog(ip), keys.pending(accountKey),
        now(), id, p.maxFailuresPerHour, HOUR_MS, ip === UNKNOWN_IP ? NO_LIMIT : p.ipMaxFailures, p.ipWindowMs, p.freeFailures, p.baseDelayMs, p.maxDelayMs, pendingTtlMs)) as ScriptReply, id),
      { allowed: true, attemptId: id });
    },
    async signInFailed(accountKey, _ip, attemptId) {
      await failOpen("signInFailed", () => redis.eval(SIGN_IN_FAILED, 2, keys.streak(accountKey), keys.pending(accountKey), now(), HOUR_MS, p.freeFailures, p.baseDelayMs, p.maxDelayMs, attemptId), 0);
    },
    async signInSucceeded(accountKey, ip, attemptId) {
      await failOpen("signInSucceeded", () => redis.multi().zrem(keys.accountLog(accountKey), attemptId).zrem(keys.ipLog(ip), attemptId).zrem(keys.pending(accountKey), attemptId).del(keys.streak(accountKey)).exec(), null);
    },
    beginInviteRedemption(ip) {
      const id = randomUUID();
      if (ip === UNKNOWN_IP) return Promise.resolve({ allowed: true, attemptId: id });
      return failOpen("beginInviteRedemption", async () => decision((await redis.eval(BEGIN_WINDOWED, 1, keys.inviteIp(ip), now(), id, invite.ipMaxAttempts, invite.ipWindowMs)) as ScriptReply, id),
        { allowed: true, attemptId: id });
    },
    async inviteRedeemed(ip, attemptId) {
      await failOpen("inviteRedeemed", () => redis.zrem(keys.inviteIp(ip), attemptId), 0);
    },
  };
}
