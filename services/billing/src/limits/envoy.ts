/**
 * How Envoy's rate limit descriptors map onto Luna's limits. A descriptor is a list of (key, value) entries:
 *
 * | key              | meaning                                                                  |
 * |------------------|--------------------------------------------------------------------------|
 * | `user_id`        | the subject: the signed-in user (from the JWT `sub` claim header)         |
 * | `remote_address` | the subject when there is no `user_id` (anonymous calls: sign in/up)      |
 * | `role`           | the user's role (`user`, `admin`); default `user`, `anonymous` for IPs    |
 * | `feature`        | the limited feature (`chat`, `image`, `signin`, ...); default `default`   |
 * | `generic_key`    | same as `feature` (Envoy's generic_key action)                            |
 *
 * Example route action: `[{request_headers: {header_name: x-luna-user-id, descriptor_key: user_id}},
 * {generic_key: {descriptor_key: feature, descriptor_value: chat}}]`. A descriptor without a subject is not
 * limited (status OK, no limit), as in envoyproxy/ratelimit for descriptors that match no configuration.
 */
import type { Period, RateSpec } from "./policy.js";

export interface DescriptorTarget {
  /** Limiter subject: the user id, or "ip:<address>". */
  subject: string;
  role: string;
  feature: string;
}

const MAX_VALUE = 256;

export function descriptorTarget(entries: ReadonlyArray<{ key: string; value: string }>): DescriptorTarget | undefined {
  const get = (k: string) => {
    const e = entries.find((x) => x.key === k);
    return e && e.value.length > 0 && e.value.length <= MAX_VALUE ? e.value : undefined;
  };
  const user = get("user_id");
  const ip = get("remote_address");
  const feature = get("feature") ?? get("generic_key") ?? "default";
  if (user) return { subject: user, role: get("role") ?? "user", feature };
  if (ip) return { subject: `ip:${ip}`, role: get("role") ?? "anonymous", feature };
  return undefined;
}

/** Envoy's RateLimitUnit / RateLimitResponse.RateLimit.Unit numbers (SECOND=1 … DAY=4); others are unsupported. */
const UNIT_TO_PERIOD: Record<number, Period> = { 1: "second", 2: "minute", 3: "hour", 4: "day" };
export const PERIOD_TO_UNIT: Record<Period, number> = { second: 1, minute: 2, hour: 3, day: 4 };

/** A descriptor's `limit` override, when it names a supported unit. */
export function overrideSpec(limit: { requestsPerUnit: number; unit: number } | undefined): RateSpec | undefined {
  if (!limit) return undefined;
  const per = UNIT_TO_PERIOD[limit.unit];
  return per ? { limit: limit.requestsPerUnit, per } : undefined;
}
