/**
 * Rate and concurrency limits in Redis, shared by every billing replica (and every process of the all-in-one mode).
 *
 * - Rate: GCRA (generic cell rate algorithm) in one Lua script per check, so the read-modify-write is atomic in
 *   Redis. `limit` per period with bursts of up to `limit`: from idle, at most `limit + elapsed/interval` requests
 *   pass in any window (interval = period / limit). Clock = Redis TIME, identical for every replica.
 * - Concurrency: a sorted set per (user, kind) whose members are lease ids scored by their expiry. Acquire drops
 *   expired members and adds one only while fewer than `limit` remain, in one script; a holder that crashes simply
 *   stops renewing and its slot frees itself at expiry.
 * - Admit: both at once in one script (a chat reply's admission): the request is counted and the slot taken, or
 *   neither — a request refused by either limit consumes nothing (over the rate: no slot taken; no slot free: the
 *   rate budget is untouched). The rate and lease keys share the user's hash tag, so one script may touch both.
 * - Scripts run by EVALSHA (ioredis `defineCommand`: the body is sent once per connection, and again after a
 *   NOSCRIPT, e.g. a Redis restart or SCRIPT FLUSH).
 *
 * Redis down (not connected, timeout, error): every call admits and reports `degraded: true` (fail open) — a rate
 * limit must not take the product down; credits, which are never in Redis, still bound spending.
 */
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import {
  PERIOD_MS,
  rateFor,
  rolePolicy,
  type ConcurrencyKindName,
  type LimitPolicy,
  type Period,
  type RateSpec,
} from "./policy.js";

// KEYS[1] = tat key; ARGV = period_us, limit, cost. Returns {allowed, remaining, retry_after_us, reset_after_us}.
const GCRA = `
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if limit <= 0 then return {0, 0, period, period} end
local interval = math.ceil(period / limit)
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - interval * limit
if allow_at > now then
  local remaining = math.floor((interval * limit - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  return {0, remaining, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((interval * limit - (new_tat - now)) / interval)
return {1, remaining, 0, new_tat - now}
`;

// KEYS[1] = lease set; ARGV = limit, ttl_ms, lease_id. Returns {acquired, in_use, expires_at_ms}.
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then return {0, n, 0} end
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], exp, ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return {1, n + 1, exp}
`;

// KEYS[1] = lease set; ARGV = ttl_ms, lease_id. Returns {renewed, expires_at_ms}.
const RENEW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return {0, 0} end
local exp = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], tonumber(last[2]))
return {1, exp}
`;

// KEYS[1] = tat key, KEYS[2] = lease set; ARGV = period_us, rate_limit, cost, lease_limit, ttl_ms, lease_id.
// GCRA and ACQUIRE above in one script, writing nothing unless both admit. Returns {outcome, remaining,
// retry_after_us, reset_after_us, in_use, expires_at_ms}; outcome 1 = admitted, 2 = rate refused, 3 = no slot.
const ADMIT = `
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
local n = redis.call('ZCARD', KEYS[2])
if limit <= 0 then return {2, 0, period, period, n, 0} end
local interval = math.ceil(period / limit)
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - interval * limit
local before = math.floor((interval * limit - (tat - now)) / interval)
if before < 0 then before = 0 end
if allow_at > now then return {2, before, allow_at - now, tat - now, n, 0} end
if n >= tonumber(ARGV[4]) then return {3, before, 0, tat - now, n, 0} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local exp = now_ms + tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], exp, ARGV[6])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], tonumber(last[2]))
return {1, math.floor((interval * limit - (new_tat - now)) / interval), 0, new_tat - now, n + 1, exp}
`;

/** The scripts as ioredis custom commands (EVALSHA, falling back to EVAL on NOSCRIPT). */
const SCRIPTS = {
  lunaLimiterGcra: { numberOfKeys: 1, lua: GCRA },
  lunaLimiterAcquire: { numberOfKeys: 1, lua: ACQUIRE },
  lunaLimiterRenew: { numberOfKeys: 1, lua: RENEW },
  lunaLimiterAdmit: { numberOfKeys: 2, lua: ADMIT },
} as const;
type ScriptCommands = Record<keyof typeof SCRIPTS, (...keysAndArgs: Array<string | number>) => Promise<number[]>>;

export interface RateDecision {
  allowed: boolean;
  limit: number;
  per: Period;
  remaining: number;
  /** When denied: wait this long before one more request would pass. */
  retryAfterMs: number;
  /** Until the bucket is fully refilled. */
  resetAfterMs: number;
  /** Redis unreachable: admitted without counting. */
  degraded: boolean;
}

export interface Lease {
  /** Opaque; encodes the kind and user so release/renew need nothing else. */
  id: string;
  userId: string;
  kind: ConcurrencyKindName;
  expiresAtMs: number;
}

export interface AcquireResult {
  acquired: boolean;
  lease?: Lease;
  limit: number;
  inUse: number;
  degraded: boolean;
}

export interface AdmitResult {
  admitted: boolean;
  /** Which limit refused (the rate when both would). */
  refused?: "rate" | "concurrency";
  rate: { limit: number; per: Period; remaining: number; retryAfterMs: number };
  /** Present when admitted. */
  lease?: Lease;
  leaseLimit: number;
  inUse: number;
  /** Redis unreachable: admitted without counting, with a placeholder lease. */
  degraded: boolean;
}

export interface RateLimiter {
  /** Counts `cost` (default 1) requests of `feature` for `userId` under `role`'s limit (or `override`). */
  check(userId: string, feature: string, opts?: { role?: string; cost?: number; override?: RateSpec }): Promise<RateDecision>;
  /** Takes a concurrency slot; the lease expires after `ttlMs` (default: the kind's lease ttl) unless renewed. */
  acquire(userId: string, kind: ConcurrencyKindName, opts?: { role?: string; ttlMs?: number }): Promise<AcquireResult>;
  /**
   * Counts one request of `feature` and takes a slot of `kind` atomically: both or neither (a refused request
   * consumes nothing).
   */
  admit(userId: string, feature: string, kind: ConcurrencyKindName, opts?: { role?: string; ttlMs?: number }): Promise<AdmitResult>;
  /** Extends a live lease; false when it already expired or was released. */
  renew(lease: Lease | string, ttlMs?: number): Promise<{ renewed: boolean; expiresAtMs: number; degraded: boolean }>;
  /** Frees the slot; false when there was nothing to free (expired, released, or a degraded lease). */
  release(lease: Lease | string): Promise<{ released: boolean; degraded: boolean }>;
  readonly policy: LimitPolicy;
}

export interface RateLimiterHooks {
  /** Redis could not be used and the call admitted (log it, count it). */
  failOpen?(op: "check" | "acquire" | "admit" | "renew" | "release", err: unknown): void;
  /** A request or a slot was refused. */
  rejected?(what: "rate" | ConcurrencyKindName): void;
}

export interface RateLimiterOptions {
  keyPrefix?: string;
  hooks?: RateLimiterHooks;
}

const LEASE_PREFIX = "l1";
/** A lease handed out while Redis was down: admitted, never stored, nothing to release. */
const DEGRADED_LEASE_MARK = "degraded";

function b64url(s: string): string {
  return Buffer.from(s, "utf8").toString("base64url");
}

/** A lease id this limiter could have handed out: of a sane length, and parsable. */
export function isLeaseId(id: string): boolean {
  return id.length <= 600 && parseLeaseId(id) !== undefined;
}

/** Parses a lease id; undefined when malformed (treated as "nothing to release"). */
export function parseLeaseId(id: string): { kind: ConcurrencyKindName; userId: string; token: string } | undefined {
  const parts = id.split(".");
  if (parts.length !== 4 || parts[0] !== LEASE_PREFIX) return undefined;
  const [, kind, user, token] = parts as [string, string, string, string];
  if (kind !== "chat_stream" && kind !== "image_job") return undefined;
  if (!/^[A-Za-z0-9_-]{1,400}$/.test(user) || !/^[A-Za-z0-9-]{1,64}$/.test(token)) return undefined;
  return { kind, userId: Buffer.from(user, "base64url").toString("utf8"), token };
}

export function createRateLimiter(redis: Redis, policy: LimitPolicy, opts: RateLimiterOptions = {}): RateLimiter {
  const prefix = opts.keyPrefix ?? "luna:billing";
  const hooks = opts.hooks ?? {};
  // Hash tags keep one user's keys on one Redis Cluster slot.
  const rateKey = (userId: string, feature: string) => `${prefix}:rate:{${userId}}:${feature}`;
  const leaseKey = (userId: string, kind: string) => `${prefix}:lease:{${userId}}:${kind}`;
  for (const [name, def] of Object.entries(SCRIPTS)) redis.defineCommand(name, def);
  const scripts = redis as unknown as ScriptCommands;
  const ready = () => redis.status === "ready";
  const notReady = () => new Error(`redis not ready (status ${redis.status})`);

  async function check(userId: string, feature: string, o: { role?: string; cost?: number; override?: RateSpec } = {}): Promise<RateDecision> {
    const spec = o.override ?? rateFor(policy, o.role, feature);
    const cost = Math.max(1, Math.floor(o.cost ?? 1));
    const base = { limit: spec.limit, per: spec.per };
    try {
      if (!ready()) throw notReady();
      const periodUs = PERIOD_MS[spec.per] * 1000;
      const r = await scripts.lunaLimiterGcra(rateKey(userId, feature), periodUs, spec.limit, cost);
      const allowed = r[0] === 1;
      if (!allowed) hooks.rejected?.("rate");
      return {
        ...base,
        allowed,
        remaining: Math.max(0, Number(r[1])),
        retryAfterMs: Math.ceil(Number(r[2]) / 1000),
        resetAfterMs: Math.ceil(Number(r[3]) / 1000),
        degraded: false,
      };
    } catch (err) {
      hooks.failOpen?.("check", err);
      return { ...base, allowed: true, remaining: spec.limit, retryAfterMs: 0, resetAfterMs: 0, degraded: true };
    }
  }

  const newLeaseId = (userId: string, kind: ConcurrencyKindName) => [LEASE_PREFIX, kind, b64url(userId), randomUUID()].join(".");
  const degradedLeaseId = (userId: string, kind: ConcurrencyKindName) =>
    [LEASE_PREFIX, kind, b64url(userId), `${DEGRADED_LEASE_MARK}-${randomUUID()}`].join(".");

  function ttlFor(kind: ConcurrencyKindName, ttlMs: number | undefined): number {
    const t = ttlMs && ttlMs > 0 ? ttlMs : policy.leaseTtlMs[kind];
    return Math.min(Math.max(1, Math.floor(t)), policy.maxLeaseTtlMs);
  }

  async function acquire(userId: string, kind: ConcurrencyKindName, o: { role?: string; ttlMs?: number } = {}): Promise<AcquireResult> {
    const limit = rolePolicy(policy, o.role).concurrency[kind];
    const ttl = ttlFor(kind, o.ttlMs);
    const id = newLeaseId(userId, kind);
    try {
      if (!ready()) throw notReady();
      const r = await scripts.lunaLimiterAcquire(leaseKey(userId, kind), limit, ttl, id);
      if (r[0] !== 1) {
        hooks.rejected?.(kind);
        return { acquired: false, limit, inUse: Number(r[1]), degraded: false };
      }
      return { acquired: true, lease: { id, userId, kind, expiresAtMs: Number(r[2]) }, limit, inUse: Number(r[1]), degraded: false };
    } catch (err) {
      hooks.failOpen?.("acquire", err);
      return { acquired: true, lease: { id: degradedLeaseId(userId, kind), userId, kind, expiresAtMs: Date.now() + ttl }, limit, inUse: 0, degraded: true };
    }
  }

  async function admit(userId: string, feature: string, kind: ConcurrencyKindName, o: { role?: string; ttlMs?: number } = {}): Promise<AdmitResult> {
    const spec = rateFor(policy, o.role, feature);
    const leaseLimit = rolePolicy(policy, o.role).concurrency[kind];
    const ttl = ttlFor(kind, o.ttlMs);
    const id = newLeaseId(userId, kind);
    try {
      if (!ready()) throw notReady();
      const r = await scripts.lunaLimiterAdmit(rateKey(userId, feature), leaseKey(userId, kind), PERIOD_MS[spec.per] * 1000, spec.limit, 1, leaseLimit, ttl, id);
      const outcome = Number(r[0]);
      const rate = { limit: spec.limit, per: spec.per, remaining: Math.max(0, Number(r[1])), retryAfterMs: Math.ceil(Number(r[2]) / 1000) };
      const facts = { rate, leaseLimit, inUse: Number(r[4]), degraded: false };
      if (outcome === 1) return { admitted: true, ...facts, lease: { id, userId, kind, expiresAtMs: Number(r[5]) } };
      const refused = outcome === 2 ? "rate" : "concurrency";
      hooks.rejected?.(refused === "rate" ? "rate" : kind);
      return { admitted: false, refused, ...facts };
    } catch (err) {
      hooks.failOpen?.("admit", err);
      return {
        admitted: true, rate: { limit: spec.limit, per: spec.per, remaining: spec.limit, retryAfterMs: 0 }, leaseLimit, inUse: 0, degraded: true,
        lease: { id: degradedLeaseId(userId, kind), userId, kind, expiresAtMs: Date.now() + ttl },
      };
    }
  }

  async function renew(lease: Lease | string, ttlMs?: number): Promise<{ renewed: boolean; expiresAtMs: number; degraded: boolean }> {
    const parsed = parseLeaseId(typeof lease === "string" ? lease : lease.id);
    if (!parsed) return { renewed: false, expiresAtMs: 0, degraded: false };
    const ttl = ttlFor(parsed.kind, ttlMs);
    if (parsed.token.startsWith(DEGRADED_LEASE_MARK)) return { renewed: true, expiresAtMs: Date.now() + ttl, degraded: true };
    try {
      if (!ready()) throw notReady();
      const id = typeof lease === "string" ? lease : lease.id;
      const r = await scripts.lunaLimiterRenew(leaseKey(parsed.userId, parsed.kind), ttl, id);
      return { renewed: r[0] === 1, expiresAtMs: Number(r[1]), degraded: false };
    } catch (err) {
      hooks.failOpen?.("renew", err);
      return { renewed: true, expiresAtMs: Date.now() + ttl, degraded: true };
    }
  }

  async function release(lease: Lease | string): Promise<{ released: boolean; degraded: boolean }> {
    const id = typeof lease === "string" ? lease : lease.id;
    const parsed = parseLeaseId(id);
    if (!parsed || parsed.token.startsWith(DEGRADED_LEASE_MARK)) return { released: false, degraded: false };
    try {
      if (!ready()) throw notReady();
      const n = await redis.zrem(leaseKey(parsed.userId, parsed.kind), id);
      return { released: n === 1, degraded: false };
    } catch (err) {
      // The lease expires on its own; nothing leaks for longer than its ttl.
      hooks.failOpen?.("release", err);
      return { released: false, degraded: true };
    }
  }

  return { check, acquire, admit, renew, release, policy };
}
