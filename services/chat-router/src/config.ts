/**
 * chat-router's own settings, read once by the runtime (kit `loadConfig`) and passed down; nothing below main.ts
 * reads process.env (except upstream API keys, which the catalog names at run time: see index.ts). The runtime's
 * shared variables (ports, database, NATS, auth) are the kit's.
 */
import { bool, duration, eventRetentionConfigSchema } from "@luna/kit";
import * as z from "zod";

const int = (def: number, min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^-?\d+$/, "expected a whole number")
    .transform(Number)
    .refine((n) => n >= min && n <= max, `expected a whole number between ${min} and ${max}`)
    .optional()
    .transform((v) => v ?? def);

export const chatRouterConfigSchema = z.object({
  /** Postgres connections of this process. */
  CHAT_DB_POOL_SIZE: int(20, 2, 500),

  // ---- input limits
  /** Longest user message, in characters. */
  CHAT_MAX_MESSAGE_CHARS: int(32_000, 1, 1_000_000),
  /** Longest system prompt, in characters. */
  CHAT_MAX_SYSTEM_PROMPT_CHARS: int(8_000, 0, 200_000),
  /** The OpenAI-compatible API (`POST /v1/chat/completions`): the largest request body (the whole history). */
  CHAT_OPENAI_MAX_BODY_BYTES: int(4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
  /** Most messages in one `/v1/chat/completions` request. */
  CHAT_OPENAI_MAX_MESSAGES: int(1000, 1, 100_000),

  // ---- prompt building and token counting
  /** Tokens the chat template adds per message (role markers); added to /tokenize's count of the content. */
  CHAT_MESSAGE_OVERHEAD_TOKENS: int(8, 0, 1000),
  /** Tokens the template adds once per prompt (BOS, the generation prompt). */
  CHAT_PROMPT_OVERHEAD_TOKENS: int(8, 0, 1000),
  /**
   * Estimate used when the upstream has no /tokenize: UTF-8 bytes per token, rounded down so the estimate errs high
   * (English averages about 4 bytes per token).
   */
  CHAT_ESTIMATE_BYTES_PER_TOKEN: int(3, 1, 16),
  /** Deadline of one /tokenize call; past it the estimate is used. */
  CHAT_TOKENIZE_TIMEOUT: duration("2s"),
  /** Newest messages read to build a prompt (the context window usually cuts earlier). */
  CHAT_HISTORY_MAX_MESSAGES: int(1000, 2, 100_000),

  // ---- credits and limits
  /** The smallest reply worth starting: with less affordable, SendMessage fails with RESOURCE_EXHAUSTED. */
  CHAT_MIN_REPLY_TOKENS: int(16, 1, 100_000),
  /**
   * Place the credit hold together with the first database and limit calls, for an upper bound of the prompt, when
   * this process knows the conversation's history (a new conversation, or one whose latest reply it stored). Saves a
   * round trip before the first token; a bound that turns out short is released and the exact hold placed instead.
   */
  CHAT_SPECULATIVE_RESERVE: bool(true),
  /** Lifetime of a reply's credit hold (billing releases it after that if this service never resolves it). */
  CHAT_HOLD_TTL: duration("30m"),
  /** Lifetime of the concurrent-stream lease; renewed every CHAT_LEASE_RENEW_INTERVAL while the reply streams. */
  CHAT_LEASE_TTL: duration("60s"),
  CHAT_LEASE_RENEW_INTERVAL: duration("20s"),

  // ---- upstream (vLLM / OpenAI-compatible)
  /** Time to connect and get response headers from a replica (a failure before the first token is retried once). */
  CHAT_UPSTREAM_CONNECT_TIMEOUT: duration("10s"),
  /** Longest wait for the first token (the model's queue plus prefill). */
  CHAT_FIRST_TOKEN_TIMEOUT: duration("120s"),
  /** Longest silence between two chunks once the reply started. */
  CHAT_IDLE_TIMEOUT: duration("60s"),
  /** Longest reply, end to end (keep it below CHAT_HOLD_TTL). */
  CHAT_MAX_REPLY_DURATION: duration("20m"),
  /** Keep-alive sockets per replica. */
  CHAT_UPSTREAM_MAX_SOCKETS: int(256, 1, 100_000),
  /** Consecutive failures that open a replica's circuit breaker. */
  CHAT_BREAKER_FAILURES: int(3, 1, 1000),
  /** How long an open breaker keeps a replica out before one probe request is let through (half-open). */
  CHAT_BREAKER_COOLDOWN: duration("10s"),
  /**
   * Stickiness: a conversation stays on its preferred replica (prefix-cache reuse) while that replica has at most
   * this many more requests in flight than the least loaded one.
   */
  CHAT_STICKY_SLACK: int(4, 0, 100_000),
  /** How often replica lists of `resolve_url` upstreams are re-resolved (DNS). */
  CHAT_REPLICA_REFRESH_INTERVAL: duration("10s"),

  // ---- scale to zero (a model whose pool is at zero replicas: its replies wait while it wakes)
  /**
   * Longest wait for a replica of a model that scaled to zero (or whose replicas are all still starting); then the
   * reply ends with UNAVAILABLE and its hold is released. Keep it above the models' expected cold start.
   */
  CHAT_COLD_START_WAIT: duration("180s"),
  /** How often a waiting reply sends its `waiting` event again (keeps clients informed and proxies' idle timers fed). */
  CHAT_WAITING_EVENT_INTERVAL: duration("5s"),
  /** While a reply waits, how often this process probes the model's replicas itself (so it starts within this). */
  CHAT_WAKE_PROBE_INTERVAL: duration("250ms"),
  /** Deadline of one such probe. */
  CHAT_WAKE_PROBE_TIMEOUT: duration("1s"),

  // ---- streaming
  /** How often a long reply's text is saved while it streams (also the heartbeat the sweeper watches). */
  CHAT_CHECKPOINT_INTERVAL: duration("2s"),
  /**
   * After the client's stream goes away (cancel or lost connection), how long the reply keeps running for a
   * ResumeStream to pick it up before it is stopped and billed as is. "0ms" stops at once. StopGeneration always
   * stops at once.
   */
  CHAT_DISCONNECT_GRACE: duration("10s"),
  /** ResumeStream's wait for the replica streaming a reply to answer (then the database is the source). */
  CHAT_RESUME_SNAPSHOT_TIMEOUT: duration("500ms"),
  /**
   * The outbox relay starts a pass woken by NOTIFY this long after it, so the usage events of replies that end
   * meanwhile share one batch (one transaction and one round of JetStream acks) instead of a pass each. The usage
   * event is chat-router's only outbox event and nothing waits for it, so the relay is not kicked after a reply.
   */
  CHAT_RELAY_NOTIFY_DELAY: duration("20ms"),
  /** A streaming reply whose checkpoint is older than this is taken as orphaned (its replica died) and finished. */
  CHAT_STALE_STREAM_AFTER: duration("2m"),
  /** How often the sweeper looks for orphaned replies ("0ms" = never). */
  CHAT_SWEEP_INTERVAL: duration("30s"),
  /**
   * The sweeper releases an open chat hold that no reply uses (its request crashed before the hold id was stored)
   * once it is this old; keep it above the longest time a request takes from its reserve to storing its message.
   */
  CHAT_ORPHAN_HOLD_GRACE: duration("1m"),
  /** Conversations (owner, model, system prompt size, known history size) cached in memory for the hot path. */
  CHAT_CONVERSATION_CACHE_SIZE: int(10_000, 0, 10_000_000),

  // ---- titles
  /** Generate a title after a conversation's first reply. */
  CHAT_TITLE_ENABLED: bool(true),
  /** Model that writes titles (a cheap one); empty = the conversation's own model. */
  CHAT_TITLE_MODEL: z.string().trim().optional().transform((v) => v ?? ""),
  CHAT_TITLE_MAX_TOKENS: int(24, 1, 1000),
  CHAT_TITLE_TIMEOUT: duration("30s"),
  /** Titles generated at once at most (the rest wait). */
  CHAT_TITLE_CONCURRENCY: int(4, 1, 1000),

  /** Consume `luna.events.user.deleted` and delete the user's conversations. */
  CHAT_CONSUME_USER_EVENTS: bool(true),
  /** LUNA_OUTBOX_RETAIN, LUNA_INBOX_RETAIN, LUNA_EVENT_PRUNE_INTERVAL (kit: event tables' retention). */
  ...eventRetentionConfigSchema.shape,
});

export type ChatRouterConfig = z.infer<typeof chatRouterConfigSchema>;
