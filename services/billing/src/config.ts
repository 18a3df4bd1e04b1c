/**
 * Billing's configuration, read once in main.ts (kit's loadConfig) and passed down. Every tunable number is here
 * with its default; nothing below main.ts reads process.env.
 */
import { bool, duration, eventRetentionConfigSchema } from "@luna/kit";
import * as z from "zod";
import { parseLimitPolicy } from "./limits/policy.js";

const int = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).optional().transform((v) => v ?? def);

export const billingConfigSchema = z.object({
  /** Credits granted once to every new user (on `user.created`). */
  BILLING_SIGNUP_CREDITS: int(1000, 0, 1_000_000_000),
  /** A hold's lifetime when the caller does not ask for one. */
  BILLING_HOLD_DEFAULT_TTL: duration("10m"),
  /** The longest lifetime a caller may ask for (an image job's worst case). */
  BILLING_HOLD_MAX_TTL: duration("2h"),
  /** How often the sweeper releases holds past their deadline. */
  BILLING_SWEEP_INTERVAL: duration("5s"),
  /** Holds expired per sweep round at most (rounds repeat at once while full). */
  BILLING_SWEEP_BATCH: int(500, 1, 100_000),
  /** How often the trial balance runs in the background and updates the invariant metric ("0ms" = never). */
  BILLING_INVARIANT_CHECK_INTERVAL: duration("5m"),
  /** Postgres connections of this process. */
  BILLING_DB_POOL_SIZE: int(20, 1, 500),
  /**
   * Concurrent reserves (and, apart, commits) that arrive while a ledger statement of their kind is in flight are
   * coalesced into one multi-row statement of up to this many calls; 1 turns coalescing off.
   */
  BILLING_LEDGER_BATCH_SIZE: int(64, 1, 1000),
  /** Ledger statements of each kind (reserve, commit) in flight at once while coalescing. */
  BILLING_LEDGER_BATCH_IN_FLIGHT: int(1, 1, 100),
  /** Consume `user.created`/`user.deleted` (turn off only in tests or tools that run billing without NATS). */
  BILLING_CONSUME_USER_EVENTS: bool(true),
  /** Envoy's rate limit `domain` this service answers for; other domains get no limits. */
  BILLING_RATELIMIT_DOMAIN: z.string().min(1).optional().transform((v) => v ?? "luna"),
  /**
   * Rate and concurrency limits per role as JSON, merged over the defaults (see limits/policy.ts and the README),
   * e.g. {"roles":{"user":{"rates":{"chat":{"limit":30,"per":"minute"}},"concurrency":{"image_job":2}}}}.
   */
  BILLING_RATE_LIMITS: z
    .string()
    .optional()
    .transform((v, ctx) => {
      try {
        return parseLimitPolicy(v);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
        return z.NEVER;
      }
    }),
  /** LUNA_OUTBOX_RETAIN, LUNA_INBOX_RETAIN, LUNA_EVENT_PRUNE_INTERVAL (kit: event tables' retention). */
  ...eventRetentionConfigSchema.shape,
});

export type BillingConfig = z.infer<typeof billingConfigSchema>;
