/**
 * Rate and concurrency limits per role. Pure data + parsing; the Redis limiter (limiter.ts) enforces them.
 *
 * Defaults (override any part with BILLING_RATE_LIMITS, JSON merged over these):
 *
 * | role      | requests (per user and feature)                                   | concurrent chat streams | concurrent image jobs |
 * |-----------|--------------------------------------------------------------------|-------------------------|-----------------------|
 * | user      | chat 20/min, image 10/min, default 120/min                         | 2                       | 1                     |
 * | admin     | chat 120/min, image 60/min, default 600/min                        | 8                       | 4                     |
 * | anonymous | signin 10/min, signup 5/min, default 60/min (keyed by IP via Envoy) | 0                       | 0                     |
 *
 * Leases (concurrency slots) expire unless renewed: chat streams after 2 min, image jobs after 30 min, so a crashed
 * holder cannot keep a slot longer than that.
 */
import * as z from "zod";

export type Period = "second" | "minute" | "hour" | "day";
export const PERIOD_MS: Record<Period, number> = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

export type ConcurrencyKindName = "chat_stream" | "image_job";
export const CONCURRENCY_KINDS: readonly ConcurrencyKindName[] = ["chat_stream", "image_job"];

/** `limit` requests per `per`; bursts of up to `limit` at once (GCRA with the whole period as tolerance). */
export interface RateSpec {
  limit: number;
  per: Period;
}

export interface RolePolicy {
  /** Per feature; "default" applies to features without their own entry. */
  rates: Record<string, RateSpec>;
  concurrency: Record<ConcurrencyKindName, number>;
}

export interface LimitPolicy {
  roles: Record<string, RolePolicy>;
  /** Roles not listed (or empty) use this one. */
  defaultRole: string;
  leaseTtlMs: Record<ConcurrencyKindName, number>;
  /** The longest ttl a caller may ask for a lease. */
  maxLeaseTtlMs: number;
}

export const DEFAULT_LIMIT_POLICY: LimitPolicy = {
  roles: {
    user: {
      rates: { default: { limit: 120, per: "minute" }, chat: { limit: 20, per: "minute" }, image: { limit: 10, per: "minute" } },
      concurrency: { chat_stream: 2, image_job: 1 },
    },
    admin: {
      rates: { default: { limit: 600, per: "minute" }, chat: { limit: 120, per: "minute" }, image: { limit: 60, per: "minute" } },
      concurrency: { chat_stream: 8, image_job: 4 },
    },
    anonymous: {
      rates: { default: { limit: 60, per: "minute" }, signin: { limit: 10, per: "minute" }, signup: { limit: 5, per: "minute" } },
      concurrency: { chat_stream: 0, image_job: 0 },
    },
  },
  defaultRole: "user",
  leaseTtlMs: { chat_stream: 120_000, image_job: 1_800_000 },
  maxLeaseTtlMs: 7_200_000,
};

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const rateSchema = z.object({ limit: z.number().int().min(0).max(1_000_000_000), per: z.enum(["second", "minute", "hour", "day"]) });
const concurrencySchema = z.object({
  chat_stream: z.number().int().min(0).max(10_000).optional(),
  image_job: z.number().int().min(0).max(10_000).optional(),
}).strict();
const overrideSchema = z.object({
  roles: z.record(z.string().regex(NAME), z.object({
    rates: z.record(z.string().regex(NAME), rateSchema).optional(),
    concurrency: concurrencySchema.optional(),
  }).strict()).optional(),
  defaultRole: z.string().regex(NAME).optional(),
  leaseTtlMs: z.object({
    chat_stream: z.number().int().min(1_000).max(86_400_000).optional(),
    image_job: z.number().int().min(1_000).max(86_400_000).optional(),
  }).strict().optional(),
  maxLeaseTtlMs: z.number().int().min(1_000).max(86_400_000).optional(),
}).strict();

/** Parses BILLING_RATE_LIMITS (JSON, merged over the defaults); undefined/empty = the defaults. Throws a readable error. */
export function parseLimitPolicy(json: string | undefined, base: LimitPolicy = DEFAULT_LIMIT_POLICY): LimitPolicy {
  if (json === undefined || json.trim() === "") return base;
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new Error("must be a JSON object");
  }
  const parsed = overrideSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; "));
  }
  const o = parsed.data;
  const roles: Record<string, RolePolicy> = {};
  for (const [name, role] of Object.entries(base.roles)) {
    roles[name] = { rates: { ...role.rates }, concurrency: { ...role.concurrency } };
  }
  for (const [name, role] of Object.entries(o.roles ?? {})) {
    // A new role starts from the built-in default role (not from other overrides in the same JSON).
    const into = (roles[name] ??= {
      rates: { ...(base.roles[base.defaultRole]?.rates ?? {}) },
      concurrency: { ...(base.roles[base.defaultRole]?.concurrency ?? { chat_stream: 0, image_job: 0 }) },
    });
    Object.assign(into.rates, role.rates ?? {});
    for (const kind of CONCURRENCY_KINDS) {
      const v = role.concurrency?.[kind];
      if (v !== undefined) into.concurrency[kind] = v;
    }
  }
  const defaultRole = o.defaultRole ?? base.defaultRole;
  if (!roles[defaultRole]) throw new Error(`defaultRole: no role named "${defaultRole}"`);
  for (const [name, role] of Object.entries(roles)) {
    if (!role.rates.default) throw new Error(`roles.${name}.rates.default: required (the limit of features without their own)`);
  }
  return {
    roles,
    defaultRole,
    leaseTtlMs: { ...base.leaseTtlMs, ...(o.leaseTtlMs ?? {}) },
    maxLeaseTtlMs: o.maxLeaseTtlMs ?? base.maxLeaseTtlMs,
  };
}

export function rolePolicy(policy: LimitPolicy, role: string | undefined): RolePolicy {
  return policy.roles[role || policy.defaultRole] ?? policy.roles[policy.defaultRole]!;
}

/** The rate of `feature` for `role` (the role's default when the feature has none). */
export function rateFor(policy: LimitPolicy, role: string | undefined, feature: string): RateSpec {
  const r = rolePolicy(policy, role);
  return r.rates[feature] ?? r.rates.default!;
}
