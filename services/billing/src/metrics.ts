/**
 * Billing's domain metrics (the kit adds RED metrics per RPC). Credits are counted as numbers: fine for monitoring,
 * never used for money.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { INVARIANT_NAMES } from "./data/invariants.js";

export interface BillingMetrics {
  granted: Counter;
  reserved: Counter;
  charged: Counter;
  released: Counter<"how">;
  openHolds: Gauge;
  reserveDuration: Histogram;
  ledgerBatchSize: Histogram<"statement">;
  insufficientCredits: Counter;
  idempotentReplays: Counter<"operation">;
  invariantViolations: Gauge<"invariant">;
  invariantChecks: Counter<"result">;
  rateLimitRejections: Counter<"limit">;
  rateLimitFailOpen: Counter<"operation">;
}

export function createBillingMetrics(registry: Registry): BillingMetrics {
  const registers = [registry];
  const m: BillingMetrics = {
    granted: new Counter({ name: "luna_billing_credits_granted_total", help: "Credits granted (sign-up and admin grants)", registers }),
    reserved: new Counter({ name: "luna_billing_credits_reserved_total", help: "Credits put on hold", registers }),
    charged: new Counter({ name: "luna_billing_credits_charged_total", help: "Credits charged by committed holds", registers }),
    released: new Counter({
      name: "luna_billing_credits_released_total",
      help: "Held credits given back, by how: release, expire (sweeper), commit (unused part), close (account closed)",
      labelNames: ["how"],
      registers,
    }),
    openHolds: new Gauge({ name: "luna_billing_open_holds", help: "Holds currently open (updated by the sweeper)", registers }),
    reserveDuration: new Histogram({
      name: "luna_billing_reserve_duration_seconds",
      help: "Latency of the reserve statement, successful or not",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    }),
    ledgerBatchSize: new Histogram({
      name: "luna_billing_ledger_batch_size",
      help: "Reserves or commits per ledger statement (concurrent calls coalesced; 1 = ran alone)",
      labelNames: ["statement"],
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    }),
    insufficientCredits: new Counter({
      name: "luna_billing_insufficient_credits_total",
      help: "Reserves rejected with RESOURCE_EXHAUSTED",
      registers,
    }),
    idempotentReplays: new Counter({
      name: "luna_billing_idempotent_replays_total",
      help: "Requests answered with the original result (retries)",
      labelNames: ["operation"],
      registers,
    }),
    invariantViolations: new Gauge({
      name: "luna_billing_invariant_violations",
      help: "Ledger invariant violations found by the last trial balance (0 = holds)",
      labelNames: ["invariant"],
      registers,
    }),
    invariantChecks: new Counter({
      name: "luna_billing_invariant_checks_total",
      help: "Trial balance runs by result (ok, violated, error)",
      labelNames: ["result"],
      registers,
    }),
    rateLimitRejections: new Counter({
      name: "luna_billing_ratelimit_rejections_total",
      help: "Requests or concurrency slots refused, by limit (rate, chat_stream, image_job)",
      labelNames: ["limit"],
      registers,
    }),
    rateLimitFailOpen: new Counter({
      name: "luna_billing_ratelimit_fail_open_total",
      help: "Limiter calls admitted without Redis (Redis unreachable), by operation",
      labelNames: ["operation"],
      registers,
    }),
  };
  for (const name of INVARIANT_NAMES) m.invariantViolations.set({ invariant: name }, 0);
  return m;
}
