// How long the event tables (outbox and inbox) keep their rows: configuration shared by every service that has them,
// and the one place its defaults are written.
import * as z from "zod";
import { duration } from "./config.js";

/**
 * Spread `.shape` into a service's config schema and pass the values to `startOutboxRelay`'s `prune`
 * ({@link outboxPruneOf}) and `startInboxPruner` ({@link inboxPruneOf}). The inbox must remember an event for longer
 * than it can be redelivered: LUNA_EVENTS keeps messages 7 days.
 */
export const eventRetentionConfigSchema = z.object({
  /** Published outbox rows are deleted after this (they are only kept to look into). */
  LUNA_OUTBOX_RETAIN: duration("7d"),
  /** Processed inbox rows are deleted after this; shorter than the streams' max age risks applying a redelivery twice. */
  LUNA_INBOX_RETAIN: duration("14d"),
  /** How often both are pruned. */
  LUNA_EVENT_PRUNE_INTERVAL: duration("1h"),
});
export type EventRetentionConfig = z.infer<typeof eventRetentionConfigSchema>;

/** The schema's defaults, in milliseconds: what the relay and the pruner use when a caller passes nothing. */
export const EVENT_RETENTION_DEFAULTS: EventRetentionConfig = eventRetentionConfigSchema.parse({});

/** `startOutboxRelay`'s `prune` option from the retention settings. */
export const outboxPruneOf = (c: EventRetentionConfig) => ({ retainMs: c.LUNA_OUTBOX_RETAIN, intervalMs: c.LUNA_EVENT_PRUNE_INTERVAL });

/** `startInboxPruner`'s timing from the retention settings. */
export const inboxPruneOf = (c: EventRetentionConfig) => ({ retainMs: c.LUNA_INBOX_RETAIN, intervalMs: c.LUNA_EVENT_PRUNE_INTERVAL });
