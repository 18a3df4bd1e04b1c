/** LimitsService (internal RPC face of the limiter) and Envoy's RateLimitService/ShouldRateLimit. */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  RateLimitResponse_Code,
  RateLimitResponse_DescriptorStatusSchema,
  RateLimitResponse_RateLimitSchema,
  RateLimitResponseSchema,
  type RateLimitService,
} from "@luna/contracts/envoy/service/ratelimit/v3/rls_pb.js";
import {
  AcquireLeaseResponseSchema,
  AdmitRefusal,
  AdmitResponseSchema,
  CheckRateLimitResponseSchema,
  ConcurrencyKind,
  ReleaseLeaseResponseSchema,
  RenewLeaseResponseSchema,
  type LimitsService,
} from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { requirePrincipal } from "@luna/kit";
import { invalid } from "../domain/errors.js";
import { descriptorTarget, overrideSpec, PERIOD_TO_UNIT } from "../limits/envoy.js";
import { isLeaseId, type RateLimiter } from "../limits/limiter.js";
import type { ConcurrencyKindName } from "../limits/policy.js";
import { durationFromMs, durationToMs, timestampFromMicros } from "./convert.js";
import { rpc } from "./errors.js";

const SUBJECT = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$/;
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const MAX_COST = 1_000_000;
/** Envoy sends a handful per request; a flood of descriptors is not a rate-limit question. */
const MAX_DESCRIPTORS = 64;

function checkSubject(field: string, v: string): string {
  if (v.length === 0) throw invalid(field, "is required");
  if (!SUBJECT.test(v)) throw invalid(field, "must be 1-200 characters of [A-Za-z0-9._:@-]");
  return v;
}

function checkName(field: string, v: string, opts: { required: boolean }): string {
  if (v.length === 0) {
    if (opts.required) throw invalid(field, "is required");
    return v;
  }
  if (!NAME.test(v)) throw invalid(field, "must be 1-64 characters of [a-z0-9._-]");
  return v;
}

function checkRole(limiter: RateLimiter, v: string): string {
  checkName("role", v, { required: false });
  if (v !== "" && !limiter.policy.roles[v]) {
    throw invalid("role", `unknown role "${v}" (known: ${Object.keys(limiter.policy.roles).join(", ")})`);
  }
  return v;
}

function checkKind(v: ConcurrencyKind): ConcurrencyKindName {
  if (v === ConcurrencyKind.CHAT_STREAM) return "chat_stream";
  if (v === ConcurrencyKind.IMAGE_JOB) return "image_job";
  throw invalid("kind", "must be CONCURRENCY_KIND_CHAT_STREAM or CONCURRENCY_KIND_IMAGE_JOB");
}

function checkTtl(field: string, d: Parameters<typeof durationToMs>[0]): number | undefined {
  const ms = durationToMs(d);
  if (ms === undefined) return undefined;
  if (d && (d.seconds < 0n || d.nanos < 0)) throw invalid(field, "must not be negative");
  if (ms < 1000) throw invalid(field, "must be at least 1s (or unset for the default)");
  return ms;
}

function checkLeaseId(v: string): string {
  if (v.length === 0) throw invalid("lease_id", "is required");
  if (!isLeaseId(v)) throw invalid("lease_id", "is not a lease id returned by AcquireLease or Admit");
  return v;
}

const msToMicros = (ms: number) => BigInt(Math.floor(ms)) * 1000n;

export function limitsServiceImpl(limiter: RateLimiter): ServiceImpl<typeof LimitsService> {
  return {
    checkRateLimit: (req, ctx) =>
      rpc(async () => {
        requirePrincipal(ctx, "internal");
        const userId = checkSubject("user_id", req.userId);
        const role = checkRole(limiter, req.role);
        const feature = checkName("feature", req.feature, { required: true });
        if (req.cost > MAX_COST) throw invalid("cost", `must be at most ${MAX_COST} (got ${req.cost})`);
        const d = await limiter.check(userId, feature, { role, cost: req.cost || 1 });
        return create(CheckRateLimitResponseSchema, {
          allowed: d.allowed,
          limit: d.limit,
          remaining: d.remaining,
          retryAfter: d.allowed ? undefined : durationFromMs(d.retryAfterMs),
          degraded: d.degraded,
        });
      }),
    acquireLease: (req, ctx) =>
      rpc(async () => {
        requirePrincipal(ctx, "internal");
        const userId = checkSubject("user_id", req.userId);
        const role = checkRole(limiter, req.role);
        const kind = checkKind(req.kind);
        const ttlMs = checkTtl("ttl", req.ttl);
        const r = await limiter.acquire(userId, kind, { role, ttlMs });
        return create(AcquireLeaseResponseSchema, {
          acquired: r.acquired,
          leaseId: r.lease?.id ?? "",
          limit: r.limit,
          inUse: r.inUse,
          expiresAt: r.lease ? timestampFromMicros(msToMicros(r.lease.expiresAtMs)) : undefined,
          degraded: r.degraded,
        });
      }),
    admit: (req, ctx) =>
      rpc(async () => {
        requirePrincipal(ctx, "internal");
        const userId = checkSubject("user_id", req.userId);
        const role = checkRole(limiter, req.role);
        const feature = checkName("feature", req.feature, { required: true });
        const kind = checkKind(req.kind);
        const ttlMs = checkTtl("ttl", req.ttl);
        const r = await limiter.admit(userId, feature, kind, { role, ttlMs });
        return create(AdmitResponseSchema, {
          admitted: r.admitted,
          refused: r.refused === "rate" ? AdmitRefusal.RATE : r.refused === "concurrency" ? AdmitRefusal.CONCURRENCY : AdmitRefusal.UNSPECIFIED,
          rateLimit: r.rate.limit,
          rateRemaining: r.rate.remaining,
          retryAfter: r.refused === "rate" ? durationFromMs(r.rate.retryAfterMs) : undefined,
          leaseId: r.lease?.id ?? "",
          leaseLimit: r.leaseLimit,
          inUse: r.inUse,
          expiresAt: r.lease ? timestampFromMicros(msToMicros(r.lease.expiresAtMs)) : undefined,
          degraded: r.degraded,
        });
      }),
    renewLease: (req, ctx) =>
      rpc(async () => {
        requirePrincipal(ctx, "internal");
        const id = checkLeaseId(req.leaseId);
        const r = await limiter.renew(id, checkTtl("ttl", req.ttl));
        return create(RenewLeaseResponseSchema, {
          renewed: r.renewed,
          expiresAt: r.renewed ? timestampFromMicros(msToMicros(r.expiresAtMs)) : undefined,
          degraded: r.degraded,
        });
      }),
    releaseLease: (req, ctx) =>
      rpc(async () => {
        requirePrincipal(ctx, "internal");
        const r = await limiter.release(checkLeaseId(req.leaseId));
        return create(ReleaseLeaseResponseSchema, r);
      }),
  };
}

/**
 * Envoy's global rate limit service. Called by the gateway with the gateway's own (internal) identity or on a
 * private port; each descriptor is checked independently and the overall code is OVER_LIMIT if any is over.
 * Unknown domains and descriptors without a subject are not limited.
 */
export function rateLimitServiceImpl(limiter: RateLimiter, domain: string): ServiceImpl<typeof RateLimitService> {
  return {
    shouldRateLimit: (req) => rpc(async () => {
      if (req.descriptors.length > MAX_DESCRIPTORS) {
        throw invalid("descriptors", `at most ${MAX_DESCRIPTORS} per request (got ${req.descriptors.length})`);
      }
      const cost = req.hitsAddend === 0 ? 1 : Math.min(req.hitsAddend, MAX_COST);
      const statuses = await Promise.all(
        req.descriptors.map(async (descriptor) => {
          const target = req.domain === domain ? descriptorTarget(descriptor.entries) : undefined;
          if (!target) return create(RateLimitResponse_DescriptorStatusSchema, { code: RateLimitResponse_Code.OK });
          const override = overrideSpec(descriptor.limit);
          const d = await limiter.check(target.subject, target.feature, { role: target.role, cost, override });
          return create(RateLimitResponse_DescriptorStatusSchema, {
            code: d.allowed ? RateLimitResponse_Code.OK : RateLimitResponse_Code.OVER_LIMIT,
            currentLimit: create(RateLimitResponse_RateLimitSchema, {
              name: `${target.role}/${target.feature}`,
              requestsPerUnit: d.limit,
              unit: PERIOD_TO_UNIT[d.per],
            }),
            limitRemaining: d.remaining,
            durationUntilReset: durationFromMs(d.allowed ? d.resetAfterMs : d.retryAfterMs),
          });
        }),
      );
      const over = statuses.some((s) => s.code === RateLimitResponse_Code.OVER_LIMIT);
      return create(RateLimitResponseSchema, {
        overallCode: over ? RateLimitResponse_Code.OVER_LIMIT : RateLimitResponse_Code.OK,
        statuses,
      });
    }),
  };
}
