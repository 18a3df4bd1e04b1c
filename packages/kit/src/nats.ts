// NATS JetStream plumbing: connection, streams, durable pull consumers, event publishing and a consume loop with
// retries, dead-lettering and W3C trace propagation. Works against nats-server 2.9 (single filter_subject per
// consumer, no per-message TTL, no consumer pause, no priority groups).
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "@nats-io/transport-node";
import { ClosedConnectionError, DrainingConnectionError, headers as natsHeaders, nanos } from "@nats-io/nats-core";
import type { MsgHdrs, NatsConnection } from "@nats-io/nats-core";
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstreamManager,
} from "@nats-io/jetstream";
import type {
  ConsumerConfig,
  ConsumerInfo,
  Consumer as JsConsumer,
  ConsumerMessages,
  JetStreamClient,
  JetStreamManager,
  JsMsg,
  StreamConfig,
} from "@nats-io/jetstream";
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { extractTraceContext, injectTraceHeaders } from "./tracing.js";

/**
 * The logging surface the event plumbing needs: pino's `(obj, msg)` call shape. A pino `Logger` fits as is; defined
 * here so this module does not depend on the logger module.
 */
export interface MinimalLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

const tracer = trace.getTracer("@luna/kit/events");

// ---------------------------------------------------------------------------------------------------------------
// Names and defaults
// ---------------------------------------------------------------------------------------------------------------

/** Domain events (`luna.events.<aggregate>.<event>`), limits retention. */
export const EVENTS_STREAM = "LUNA_EVENTS";
export const EVENTS_SUBJECTS = "luna.events.>";
/** Image job queue (`luna.image.jobs.<pool>`), work-queue retention: one consumer per subject, deleted on ack. */
export const IMAGE_JOBS_STREAM = "LUNA_IMAGE_JOBS";
export const IMAGE_JOBS_SUBJECTS = "luna.image.jobs.>";
/**
 * Dead letters (`luna.deadletter.<stream>.<durable>`). A stream of its own, not a subtree of `luna.events.>`, so a
 * consumer of domain events never receives a dead letter as if it were an event, and so no work-queue stream ever
 * captures (and deletes) a dead letter.
 */
export const DEADLETTER_STREAM = "LUNA_DEADLETTER";
export const DEADLETTER_SUBJECTS = "luna.deadletter.>";

/** Dead-letter subject used by `runConsumer` unless told otherwise. */
export function deadLetterSubject(stream: string, durable: string): string {
  return `luna.deadletter.${stream}.${durable}`;
}

/** Headers a dead-letter copy carries besides the original message's own headers. */
export const DeadLetterHeaders = {
  stream: "Luna-Dlq-Stream",
  consumer: "Luna-Dlq-Consumer",
  subject: "Luna-Dlq-Subject",
  streamSeq: "Luna-Dlq-Stream-Seq",
  deliveries: "Luna-Dlq-Deliveries",
  reason: "Luna-Dlq-Reason",
  originalMsgId: "Luna-Dlq-Msg-Id",
} as const;

const MSG_ID_HEADER = "Nats-Msg-Id";
const TRACEPARENT = "traceparent";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;

// ---------------------------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------------------------

export interface ConnectNatsOptions {
  /** Comma-separated server URLs, e.g. `nats://127.0.0.1:4222,nats://nats-2:4222`. */
  servers: string;
  /** Client name shown by the server's monitoring (`/connz`); use the service name. */
  name: string;
  log: MinimalLogger;
  /** Wait between reconnect attempts (default 2000 ms; the client adds up to 100 ms jitter). */
  reconnectTimeWaitMs?: number;
  /** Client ping interval; a dead server is noticed after 2 missed pings (default 20 s). */
  pingIntervalMs?: number;
  /**
   * Capture the caller's stack for every request, so a request that times out or fails shows where it was made
   * (default false: it costs several stack captures per request, and the outbox relay, the consumers and every
   * JetStream publish make requests all the time; the error still says what failed).
   */
  asyncTraces?: boolean;
}

/**
 * Connects to NATS and never gives up: the first connection is retried until it succeeds, and a lost connection is
 * re-established forever. Disconnects, reconnects and server errors are logged. Subscriptions and pull consumers
 * resume on reconnect.
 */
export async function connectNats(opts: ConnectNatsOptions): Promise<NatsConnection> {
  const servers = opts.servers.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (servers.length === 0) throw new Error("connectNats: servers must list at least one NATS URL");
  if (!opts.name) throw new Error("connectNats: name is required (it identifies the client on the server)");
  const nc = await connect({
    servers,
    name: opts.name,
    maxReconnectAttempts: -1,
    waitOnFirstConnect: true,
    reconnectTimeWait: opts.reconnectTimeWaitMs ?? 2 * SECOND,
    pingInterval: opts.pingIntervalMs ?? 20 * SECOND,
    maxPingOut: 2,
    noAsyncTraces: !(opts.asyncTraces ?? false),
  });
  const log = opts.log;
  log.info({ server: nc.getServer(), name: opts.name }, "nats connected");
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          log.warn({ server: s.server }, "nats disconnected; reconnecting");
          break;
        case "reconnect":
          log.info({ server: s.server }, "nats reconnected");
          break;
        case "reconnecting":
          log.debug({}, "nats reconnecting");
          break;
        case "error":
          log.error({ err: s.error }, "nats server error");
          break;
        case "ldm":
          log.warn({ server: s.server }, "nats server entering lame duck mode");
          break;
        case "staleConnection":
          log.warn({}, "nats connection stale; reconnecting");
          break;
        case "slowConsumer":
          log.warn({ subject: s.sub.getSubject(), pending: s.pending }, "nats slow consumer");
          break;
        default:
          break;
      }
    }
  })().catch((err: unknown) => log.error({ err }, "nats status monitor failed"));
  void nc.closed().then((err) => {
    if (err) log.error({ err }, "nats connection closed with error");
    else log.info({}, "nats connection closed");
  });
  return nc;
}

/**
 * Readiness check: resolves when the connection is up and JetStream answers within `timeoutMs` (default 2000 ms).
 */
export async function natsReady(nc: NatsConnection, timeoutMs = 2 * SECOND): Promise<void> {
  if (nc.isClosed()) throw new Error("nats connection is closed");
  // jetstreamManager() asks the server for the account's JetStream info, so it fails when JetStream is unavailable.
  await withTimeout(jetstreamManager(nc, { timeout: timeoutMs }), timeoutMs, "nats/jetstream did not answer");
}

// ---------------------------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------------------------

export interface StreamSpec {
  name: string;
  subjects: string[];
  retention: "limits" | "workqueue" | "interest";
  /** Default "file". */
  storage?: "file" | "memory";
  /** Messages older than this are removed; 0 = no limit. */
  maxAgeMs: number;
  /** Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate (default 2 minutes). */
  duplicateWindowMs?: number;
  /** Default 1 (3 in production clusters). */
  replicas?: number;
  /** -1 = no limit (default). */
  maxBytes?: number;
}

export interface DefaultStreamOptions {
  /** LUNA_EVENTS retention (default 7 days). */
  eventsMaxAgeMs?: number;
  /** LUNA_IMAGE_JOBS safety net for jobs nobody consumes (default 1 day; job deadlines are far shorter). */
  imageJobsMaxAgeMs?: number;
  /** LUNA_DEADLETTER retention (default 30 days, time to inspect and replay). */
  deadLetterMaxAgeMs?: number;
  /** Default 1. */
  replicas?: number;
}

/** Luna's streams: LUNA_EVENTS (limits), LUNA_IMAGE_JOBS (work queue) and LUNA_DEADLETTER (limits); all file storage. */
export function defaultStreams(opts: DefaultStreamOptions = {}): StreamSpec[] {
  const replicas = opts.replicas ?? 1;
  const duplicateWindowMs = 2 * MINUTE;
  return [
    { name: EVENTS_STREAM, subjects: [EVENTS_SUBJECTS], retention: "limits", storage: "file",
      maxAgeMs: opts.eventsMaxAgeMs ?? 7 * DAY, duplicateWindowMs, replicas },
    { name: IMAGE_JOBS_STREAM, subjects: [IMAGE_JOBS_SUBJECTS], retention: "workqueue", storage: "file",
      maxAgeMs: opts.imageJobsMaxAgeMs ?? DAY, duplicateWindowMs, replicas },
    { name: DEADLETTER_STREAM, subjects: [DEADLETTER_SUBJECTS], retention: "limits", storage: "file",
      maxAgeMs: opts.deadLetterMaxAgeMs ?? 30 * DAY, duplicateWindowMs, replicas },
  ];
}

function streamConfig(spec: StreamSpec): Partial<StreamConfig> & { name: string } {
  if (!spec.name || !/^[A-Za-z0-9_-]+$/.test(spec.name)) {
    throw new Error(`ensureStreams: invalid stream name ${JSON.stringify(spec.name)} (letters, digits, _ and - only)`);
  }
  if (spec.subjects.length === 0) throw new Error(`ensureStreams: stream ${spec.name} needs at least one subject`);
  const maxAgeMs = spec.maxAgeMs;
  const duplicateWindowMs = spec.duplicateWindowMs ?? 2 * MINUTE;
  if (!(maxAgeMs >= 0) || !(duplicateWindowMs > 0)) {
    throw new Error(`ensureStreams: stream ${spec.name}: maxAgeMs must be >= 0 and duplicateWindowMs > 0`);
  }
  return {
    name: spec.name,
    subjects: [...spec.subjects],
    retention: RETENTION[spec.retention],
    storage: spec.storage === "memory" ? StorageType.Memory : StorageType.File,
    num_replicas: spec.replicas ?? 1,
    max_age: nanos(maxAgeMs),
    // The server rejects a duplicate window longer than max_age.
    duplicate_window: nanos(maxAgeMs > 0 ? Math.min(duplicateWindowMs, maxAgeMs) : duplicateWindowMs),
    max_bytes: spec.maxBytes ?? -1,
  };
}

const RETENTION = {
  limits: RetentionPolicy.Limits,
  workqueue: RetentionPolicy.Workqueue,
  interest: RetentionPolicy.Interest,
} as const;

/**
 * Creates each stream or updates it to match its spec; safe to call from every replica at every start.
 * Retention and storage cannot change in place: a mismatch there throws (migrating a stream is an operator task).
 */
export async function ensureStreams(nc: NatsConnection, specs: StreamSpec[] = defaultStreams()): Promise<void> {
  const jsm = await jetstreamManager(nc);
  for (const spec of specs) {
    const want = streamConfig(spec);
    let existing = await streamInfo(jsm, want.name);
    if (!existing) {
      try {
        await jsm.streams.add(want);
        continue;
      } catch (err) {
        // Another replica created it between our info and add: fall through to the update path.
        existing = await streamInfo(jsm, want.name);
        if (!existing) throw err;
      }
    }
    const have = existing;
    if (have.retention !== want.retention || have.storage !== want.storage) {
      throw new Error(`ensureStreams: stream ${want.name} exists with retention=${have.retention} storage=${have.storage}, ` +
        `wanted retention=${want.retention} storage=${want.storage}; these cannot change in place`);
    }
    const differs = JSON.stringify([...have.subjects].sort()) !== JSON.stringify([...(want.subjects ?? [])].sort()) ||
      have.max_age !== want.max_age || have.duplicate_window !== want.duplicate_window ||
      have.num_replicas !== want.num_replicas || have.max_bytes !== want.max_bytes;
    if (differs) {
      await jsm.streams.update(want.name, {
        subjects: want.subjects, max_age: want.max_age, duplicate_window: want.duplicate_window,
        num_replicas: want.num_replicas, max_bytes: want.max_bytes,
      });
    }
  }
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamConfig | undefined> {
  try {
    return (await jsm.streams.info(name)).config;
  } catch (err) {
    if (isApiError(err, 10059)) return undefined;
    throw err;
  }
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

// ---------------------------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------------------------

export interface ConsumerSpec {
  stream: string;
  /** Durable name: letters, digits, `_` and `-`. */
  durable: string;
  /** One subject filter (nats-server 2.9 has no multi-filter consumers). */
  filterSubject?: string;
  /** Time the server waits for an ack before redelivering (default 30 s). `working()` restarts this timer. */
  ackWaitMs?: number;
  /** Server-side delivery limit; -1 = unlimited (default). `runConsumer` enforces its own limit, see there. */
  maxDeliver?: number;
  /** Unacknowledged messages the server allows outstanding across all clients of this consumer (default 1000). */
  maxAckPending?: number;
  /**
   * Server-side redelivery delays after an ack TIMEOUT (not after a nak). When set, the server uses the first value
   * as the ack wait, so keep it >= the handler's expected duration; requires a finite `maxDeliver` greater than its
   * length. Default: none (ackWaitMs applies). Not used by `runConsumer`, which paces retries with delayed naks.
   */
  ackTimeoutBackoffMs?: number[];
}

const DURABLE_RE = /^[A-Za-z0-9_-]+$/;

function consumerConfig(spec: ConsumerSpec): Partial<ConsumerConfig> {
  if (!DURABLE_RE.test(spec.durable)) {
    throw new Error(`consumer durable name ${JSON.stringify(spec.durable)} is invalid (letters, digits, _ and - only)`);
  }
  const ackWaitMs = spec.ackWaitMs ?? 30 * SECOND;
  if (!(ackWaitMs >= SECOND)) throw new Error(`consumer ${spec.durable}: ackWaitMs must be >= 1000`);
  const maxAckPending = spec.maxAckPending ?? 1000;
  if (!Number.isInteger(maxAckPending) || maxAckPending < 1) {
    throw new Error(`consumer ${spec.durable}: maxAckPending must be a positive integer`);
  }
  const maxDeliver = spec.maxDeliver ?? -1;
  if (!Number.isInteger(maxDeliver) || (maxDeliver < 1 && maxDeliver !== -1)) {
    throw new Error(`consumer ${spec.durable}: maxDeliver must be a positive integer or -1 (unlimited)`);
  }
  const cfg: Partial<ConsumerConfig> = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWaitMs),
    max_deliver: maxDeliver,
    max_ack_pending: maxAckPending,
  };
  if (spec.filterSubject) cfg.filter_subject = spec.filterSubject;
  if (spec.ackTimeoutBackoffMs && spec.ackTimeoutBackoffMs.length > 0) {
    if (maxDeliver === -1 || maxDeliver <= spec.ackTimeoutBackoffMs.length) {
      throw new Error(`consumer ${spec.durable}: ackTimeoutBackoffMs needs maxDeliver > its length (server rule)`);
    }
    if (spec.ackTimeoutBackoffMs.some((ms) => !(ms >= SECOND))) {
      throw new Error(`consumer ${spec.durable}: ackTimeoutBackoffMs values must be >= 1000`);
    }
    cfg.backoff = spec.ackTimeoutBackoffMs.map((ms) => nanos(ms));
  }
  return cfg;
}

/**
 * Creates the durable pull consumer (explicit ack) or updates it to match the spec. Idempotent.
 * With `createOnly`, an existing consumer is left exactly as it is (for a service that pre-creates a consumer whose
 * settings belong to the process that consumes from it).
 * Note: on nats-server 2.9 the filter subject of an existing consumer cannot change; delete the consumer first.
 */
export async function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec, opts: { createOnly?: boolean } = {}): Promise<ConsumerInfo> {
  const want = consumerConfig(spec);
  let info: ConsumerInfo | undefined;
  try {
    info = await jsm.consumers.info(spec.stream, spec.durable);
  } catch (err) {
    if (!isApiError(err, 10014)) throw err;
  }
  if (!info) {
    try {
      return await jsm.consumers.add(spec.stream, want);
    } catch (err) {
      // Lost a creation race against another replica: the consumer exists now, continue as an update.
      try {
        info = await jsm.consumers.info(spec.stream, spec.durable);
      } catch {
        throw err;
      }
    }
  }
  if (opts.createOnly) return info;
  const have = info.config;
  const sameBackoff = JSON.stringify(have.backoff ?? []) === JSON.stringify(want.backoff ?? []);
  // With a backoff list the server replaces ack_wait by its first value, so ack_wait cannot be compared then.
  const sameAckWait = want.backoff ? true : have.ack_wait === want.ack_wait;
  const same = sameAckWait && have.max_deliver === want.max_deliver &&
    have.max_ack_pending === want.max_ack_pending && (have.filter_subject ?? "") === (want.filter_subject ?? "") &&
    sameBackoff;
  if (same) return info;
  const update: Partial<ConsumerConfig> = {
    ack_wait: want.ack_wait, max_deliver: want.max_deliver, max_ack_pending: want.max_ack_pending,
    backoff: want.backoff ?? [],
  };
  if ((have.filter_subject ?? "") !== (want.filter_subject ?? "")) update.filter_subject = want.filter_subject ?? "";
  return jsm.consumers.update(spec.stream, spec.durable, update);
}

// ---------------------------------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------------------------------

export interface PublishEventOptions {
  /** Deduplication id (`Nats-Msg-Id`): the event id. A repeat within the stream's duplicate window is dropped. */
  msgId: string;
  headers?: Record<string, string>;
  /** Time to wait for the stream's ack (default 5000 ms). */
  timeoutMs?: number;
}

const SUBJECT_TOKEN_RE = /^[^\s.*>]+$/;

/** Throws a clear error unless `subject` is a concrete (wildcard-free) NATS subject. */
export function assertPublishSubject(subject: string): void {
  if (typeof subject !== "string" || subject.length === 0) throw new Error("subject must be a non-empty string");
  if (!subject.split(".").every((t) => SUBJECT_TOKEN_RE.test(t))) {
    throw new Error(`subject ${JSON.stringify(subject)} is invalid: dot-separated tokens without spaces or wildcards`);
  }
}

const HEADER_NAME_RE = /^[!-9;-~]+$/; // printable ASCII except ':'

/** Throws a clear error unless every header name and value can travel as a NATS header. */
export function assertHeaders(headers: Record<string, string>): void {
  for (const [k, v] of Object.entries(headers)) {
    if (!HEADER_NAME_RE.test(k)) throw new Error(`header name ${JSON.stringify(k)} is invalid (printable ASCII, no ':')`);
    if (typeof v !== "string" || /[\r\n]/.test(v)) throw new Error(`header ${k}: value must be a string without CR/LF`);
  }
}

/**
 * Publishes one event to JetStream with `Nats-Msg-Id` = `msgId` and the W3C `traceparent` of the active span (unless
 * `headers` already carries one, e.g. captured when the event was written to the outbox). Resolves when the stream
 * has stored it; `duplicate` is true when the stream had already stored this msgId within its duplicate window.
 */
export async function publishEvent(
  js: Pick<JetStreamClient, "publish">,
  subject: string,
  data: Uint8Array,
  opts: PublishEventOptions,
): Promise<{ seq: number; duplicate: boolean; stream: string }> {
  assertPublishSubject(subject);
  if (!opts.msgId) throw new Error("publishEvent: msgId is required (the event id)");
  const given = opts.headers ?? {};
  assertHeaders(given);
  const send = async (): Promise<{ seq: number; duplicate: boolean; stream: string }> => {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(given)) {
      if (k !== MSG_ID_HEADER) h.set(k, v);
    }
    if (!h.has(TRACEPARENT)) injectTraceHeaders(h);
    const ack = await js.publish(subject, data, { msgID: opts.msgId, headers: h, timeout: opts.timeoutMs ?? 5 * SECOND });
    return { seq: ack.seq, duplicate: ack.duplicate, stream: ack.stream };
  };
  if (given[TRACEPARENT]) return send();
  // No upstream trace context given: the publish itself is the producer span.
  return tracer.startActiveSpan(`${subject} publish`, { kind: SpanKind.PRODUCER,
    attributes: { "messaging.system": "nats", "messaging.destination.name": subject, "messaging.message.id": opts.msgId } },
  async (span) => {
    try {
      return await send();
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Copies NATS message headers into a plain record (first value of each key). */
export function headersToRecord(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!h) return out;
  for (const [k, values] of h) {
    if (values.length > 0 && values[0] !== undefined) out[k] = values[0];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Consume loop
// ---------------------------------------------------------------------------------------------------------------

/** What a handler decides for a message. A thrown error counts as "retry". */
export type HandlerResult = "ack" | "retry" | "term";

export interface ConsumedMessage {
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
  /** `Nats-Msg-Id` the publisher set (the event id for outbox events). */
  msgId: string | undefined;
  /** 1 on the first delivery. */
  deliveryCount: number;
  streamSeq: number;
  /** Tell the server the handler is still working: restarts the ack wait. Call it periodically in long handlers. */
  working(): void;
  /**
   * Aborted when `stop()` is called (after its `graceMs`, if given); a long handler may give up early and return
   * "retry".
   */
  signal: AbortSignal;
  /**
   * Gives back the admission this message was pulled under (see `RunConsumerOptions.admit`) before the handler
   * returns, so another slot may pull while this handler finishes. Idempotent; a no-op without `admit`.
   */
  releaseAdmission(): void;
}

export interface RunConsumerOptions {
  js: JetStreamClient;
  stream: string;
  durable: string;
  filterSubject?: string;
  /** Handler attempts before the message is dead-lettered (default 5). */
  maxDeliver?: number;
  /** Default 30 s; call `working()` from handlers that may take longer. */
  ackWaitMs?: number;
  /**
   * Delay before redelivery after attempt n fails is `backoffMs[n-1]` (the last value repeats).
   * Default [1 s, 5 s, 30 s, 2 min].
   */
  backoffMs?: number[];
  /** Default 1000. */
  maxAckPending?: number;
  /** Where failed messages are copied; default `luna.deadletter.<stream>.<durable>`; `null` = drop without copy. */
  deadLetterSubject?: string | null;
  /** Handlers running at once (default 1). Each free slot pulls exactly one message, so nothing waits in a buffer. */
  concurrency?: number;
  /** How long one pull waits on the server for a message (default 10 s). */
  pullExpiresMs?: number;
  /**
   * Admission to pull (default: none, every free slot pulls). Before each pull a slot awaits `admit()` and holds
   * what it resolves to (a release function) while the pull waits and, when a message arrives, while its handler
   * runs; the handler may give it back early with `msg.releaseAdmission()`. It is released at the latest once the
   * message is settled, and at once when the pull brings nothing. With `concurrency` > 1 this lets the next message
   * be pulled as soon as a shared resource is free again while the previous handler finishes its tail (the image
   * worker: its ComfyUI is free while the previous job's result is still being published), without a second
   * message waiting in this client that another client could have taken.
   */
  admit?: () => Promise<() => void>;
  /** Wait after a pull/bind failure, doubling up to `maxErrorBackoffMs` (defaults 500 ms and 10 s). */
  errorBackoffMs?: number;
  maxErrorBackoffMs?: number;
  handle: (msg: ConsumedMessage) => Promise<HandlerResult>;
  log: MinimalLogger;
}

export interface ConsumerHandle {
  /** Resolves once the durable consumer exists and pulling has started (or when stopped before that). */
  ready: Promise<void>;
  /**
   * Stops pulling, waits for in-flight handlers to finish and settle their messages. Idempotent.
   * `graceMs` (default 0): how long in-flight handlers may go on before their `signal` aborts — a drain for work
   * worth finishing (a running image job) rather than handing it back.
   */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

const DEFAULT_BACKOFF_MS = [1 * SECOND, 5 * SECOND, 30 * SECOND, 2 * MINUTE];

/** Redelivery delay after the `deliveryCount`-th attempt failed. */
export function retryDelayMs(backoffMs: readonly number[], deliveryCount: number): number {
  if (backoffMs.length === 0) return 0;
  const i = Math.min(Math.max(deliveryCount, 1), backoffMs.length) - 1;
  return backoffMs[i] ?? 0;
}

/**
 * Runs a durable pull consumer: creates/updates it (see `ensureConsumer`), then pulls one message per free handler
 * slot and settles it by the handler's answer:
 * - "ack": done.
 * - "retry" (or a thrown error): `nak` with the backoff delay; on attempt `maxDeliver` the message is copied to the
 *   dead-letter subject and terminated instead.
 * - "term": poison message; copied to the dead-letter subject and terminated at once.
 * The server-side `max_deliver` stays unlimited and the limit is enforced here, so a message whose handler never
 * finished (process crashed, ack wait expired) is still dead-lettered on its next delivery rather than silently
 * abandoned by the server. If the dead-letter copy cannot be published the message is nak'ed and tried again later,
 * so nothing is dropped. Handlers run inside the trace context carried by the message's `traceparent`.
 * Pull errors (NATS down, restarting, consumer missing) are logged and retried with backoff; the loop resumes by
 * itself after NATS comes back.
 * Order: with concurrency 1 messages are handled in stream order, except that a retried message comes back after
 * its backoff, behind later ones. Delivery is at least once: make effects idempotent (see `recordInbox`).
 */
export function runConsumer(opts: RunConsumerOptions): ConsumerHandle {
  const maxDeliver = opts.maxDeliver ?? 5;
  const concurrency = opts.concurrency ?? 1;
  const backoffMs = opts.backoffMs ?? DEFAULT_BACKOFF_MS;
  const pullExpiresMs = opts.pullExpiresMs ?? 10 * SECOND;
  const errorBackoffMs = opts.errorBackoffMs ?? 500;
  const maxErrorBackoffMs = opts.maxErrorBackoffMs ?? 10 * SECOND;
  const dlqSubject = opts.deadLetterSubject === undefined ? deadLetterSubject(opts.stream, opts.durable) : opts.deadLetterSubject;
  if (!Number.isInteger(maxDeliver) || maxDeliver < 1) throw new Error("runConsumer: maxDeliver must be an integer >= 1");
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new Error("runConsumer: concurrency must be an integer >= 1");
  if (!(pullExpiresMs >= SECOND)) throw new Error("runConsumer: pullExpiresMs must be >= 1000");
  if (backoffMs.some((ms) => !(ms >= 0))) throw new Error("runConsumer: backoffMs values must be >= 0");
  if (typeof opts.handle !== "function") throw new Error("runConsumer: handle must be a function");
  if (dlqSubject !== null) assertPublishSubject(dlqSubject);
  const spec: ConsumerSpec = {
    stream: opts.stream, durable: opts.durable, filterSubject: opts.filterSubject, ackWaitMs: opts.ackWaitMs,
    maxAckPending: opts.maxAckPending, maxDeliver: -1,
  };
  consumerConfig(spec); // validate now: bad options fail at the call, not in the background loop
  const { js, log } = opts;
  const logCtx = { stream: opts.stream, durable: opts.durable };

  // Two steps of stopping: `stopper` ends pulling at once; `aborter` (the handlers' signal) follows after stop()'s grace.
  const stopper = new AbortController();
  const aborter = new AbortController();
  const pulls = new Set<ConsumerMessages>();
  let bound: Promise<JsConsumer> | undefined;
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => { markReady = resolve; });

  const stopped = new Promise<undefined>((resolve) => {
    stopper.signal.addEventListener("abort", () => resolve(undefined), { once: true });
  });
  // Lets a slot leave a pending NATS request (which may wait for its timeout while NATS is down) as soon as stop()
  // is called.
  const untilStopped = <T>(p: Promise<T>): Promise<T | undefined> => Promise.race([p, stopped]);

  const bind = (): Promise<JsConsumer> => {
    bound ??= (async () => {
      const jsm = await js.jetstreamManager();
      await ensureConsumer(jsm, spec);
      const c = await js.consumers.get(opts.stream, opts.durable);
      markReady();
      return c;
    })();
    const mine = bound;
    mine.catch(() => { if (bound === mine) bound = undefined; });
    return mine;
  };

  // term() is sent without a reason: nats-server 2.9 ignores "+TERM <reason>" altogether (the message would stay
  // pending); the reason travels in the dead-letter copy's headers and in the log instead.
  const deadLetter = async (m: JsMsg, hdrs: Record<string, string>, reason: string): Promise<void> => {
    if (dlqSubject === null) {
      m.term();
      log.warn({ ...logCtx, subject: m.subject, streamSeq: m.seq, reason }, "message terminated (no dead-letter subject)");
      return;
    }
    const copy: Record<string, string> = {};
    for (const [k, v] of Object.entries(hdrs)) if (k !== MSG_ID_HEADER) copy[k] = v;
    copy[DeadLetterHeaders.stream] = opts.stream;
    copy[DeadLetterHeaders.consumer] = opts.durable;
    copy[DeadLetterHeaders.subject] = m.subject;
    copy[DeadLetterHeaders.streamSeq] = String(m.seq);
    copy[DeadLetterHeaders.deliveries] = String(m.info.deliveryCount);
    copy[DeadLetterHeaders.reason] = oneLine(reason);
    if (hdrs[MSG_ID_HEADER]) copy[DeadLetterHeaders.originalMsgId] = hdrs[MSG_ID_HEADER];
    try {
      // The id makes a repeated copy (crash between copy and term) a duplicate, not a second dead letter.
      await publishEvent(js, dlqSubject, m.data, { msgId: `${opts.stream}:${opts.durable}:${m.seq}`, headers: copy });
    } catch (err) {
      const delay = retryDelayMs(backoffMs, m.info.deliveryCount);
      log.error({ ...logCtx, err, subject: m.subject, streamSeq: m.seq, retryInMs: delay },
        "dead-letter copy failed; message will be retried");
      m.nak(delay);
      return;
    }
    m.term();
    log.warn({ ...logCtx, subject: m.subject, streamSeq: m.seq, deliveries: m.info.deliveryCount, reason,
      deadLetterSubject: dlqSubject }, "message dead-lettered");
  };

  const settle = async (m: JsMsg, releaseAdmission: () => void): Promise<void> => {
    const hdrs = headersToRecord(m.headers);
    const deliveryCount = m.info.deliveryCount;
    const msgCtx = { ...logCtx, subject: m.subject, streamSeq: m.seq, deliveryCount };
    if (deliveryCount > maxDeliver) {
      // A previous attempt never settled the message (crash or ack timeout): it already used its last attempt.
      await deadLetter(m, hdrs, `delivered ${deliveryCount} times; the handler never completed (max ${maxDeliver})`);
      return;
    }
    const parent = extractTraceContext((key) => hdrs[key], ROOT_CONTEXT);
    const event: ConsumedMessage = {
      subject: m.subject, data: m.data, headers: hdrs, msgId: hdrs[MSG_ID_HEADER], deliveryCount, streamSeq: m.seq,
      working: () => m.working(), signal: aborter.signal, releaseAdmission,
    };
    let failure: unknown;
    const result: HandlerResult = await tracer.startActiveSpan(`${m.subject} process`, {
      kind: SpanKind.CONSUMER,
      attributes: { "messaging.system": "nats", "messaging.destination.name": m.subject,
        "messaging.consumer.group.name": opts.durable, "messaging.message.id": event.msgId ?? "" },
    }, parent, async (span) => {
      try {
        const r = await opts.handle(event);
        if (r !== "ack" && r !== "retry" && r !== "term") {
          throw new Error(`handler returned ${JSON.stringify(r)}; expected "ack", "retry" or "term"`);
        }
        if (r !== "ack") span.setStatus({ code: SpanStatusCode.ERROR, message: r });
        return r;
      } catch (err) {
        failure = err;
        span.recordException(err instanceof Error ? err : new Error(String(err)));
        span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
        return "retry" as const;
      } finally {
        span.end();
      }
    });
    if (failure !== undefined) log.warn({ ...msgCtx, err: failure }, "message handler failed");
    switch (result) {
      case "ack":
        m.ack();
        return;
      case "term":
        await deadLetter(m, hdrs, "handler rejected the message (term)");
        return;
      case "retry":
        if (deliveryCount >= maxDeliver) {
          await deadLetter(m, hdrs, failure !== undefined
            ? `failed ${deliveryCount} times; last error: ${errorMessage(failure)}`
            : `handler asked for retry ${deliveryCount} times`);
        } else {
          m.nak(retryDelayMs(backoffMs, deliveryCount));
        }
    }
  };

  /** Waits for admission to pull (see `admit`); undefined when stopped first (a late admission is given back). */
  const admitted = async (): Promise<(() => void) | undefined> => {
    if (!opts.admit) return () => undefined;
    const pending = opts.admit();
    const release = await untilStopped(pending);
    if (release === undefined) {
      void pending.then((r) => r(), () => undefined);
      return undefined;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      release();
    };
  };

  const slot = async (): Promise<void> => {
    let failures = 0;
    while (!stopper.signal.aborted) {
      let pull: ConsumerMessages | undefined;
      let release: (() => void) | undefined;
      try {
        const consumer = await untilStopped(bind());
        if (!consumer) break;
        release = await admitted();
        if (!release) break;
        pull = await consumer.fetch({ max_messages: 1, expires: pullExpiresMs });
        pulls.add(pull);
        let msg: JsMsg | undefined;
        // Leave the pull (and its heartbeat monitor) before running the handler, which may take far longer than a
        // heartbeat interval.
        for await (const m of pull) {
          msg = m;
          break;
        }
        pulls.delete(pull);
        failures = 0;
        if (!msg) continue; // the pull expired without a message
        if (stopper.signal.aborted) {
          msg.nak(); // arrived while stopping: hand it straight back for another client
          break;
        }
        try {
          await settle(msg, release);
        } catch (err) {
          // Only the ack/nak/term itself can fail here (connection closed); the server redelivers after ack_wait.
          log.warn({ ...logCtx, err, subject: msg.subject, streamSeq: msg.seq }, "could not settle message; it will be redelivered");
        }
      } catch (err) {
        if (stopper.signal.aborted) break;
        if (err instanceof ClosedConnectionError || err instanceof DrainingConnectionError) {
          // The connection was closed on purpose (it never comes back by itself): nothing left to pull from.
          log.warn({ ...logCtx, err }, "nats connection closed; consumer slot ends");
          break;
        }
        failures++;
        const wait = Math.min(errorBackoffMs * 2 ** (failures - 1), maxErrorBackoffMs);
        const msg = errorMessage(err);
        if (/consumer not found|consumer deleted|stream not found/i.test(msg)) bound = undefined;
        // Warn on the first failure and then now and then, so a long outage is visible without flooding the log.
        if (failures % 20 === 1) log.warn({ ...logCtx, err, failures, retryInMs: wait }, "pull failed; retrying");
        else log.debug({ ...logCtx, err, failures, retryInMs: wait }, "pull failed; retrying");
        await sleep(wait, undefined, { signal: stopper.signal }).catch(() => undefined);
      } finally {
        if (pull) pulls.delete(pull);
        // No message (expired pull, error, stop) or a settled one: either way the admission is given back.
        release?.();
      }
    }
  };

  const slots = Array.from({ length: concurrency }, () => slot().catch((err: unknown) => {
    log.error({ ...logCtx, err }, "consumer loop crashed");
  }));
  let stopping: Promise<void> | undefined;
  return {
    ready,
    stop: (stopOpts) => {
      stopping ??= (async () => {
        stopper.abort();
        markReady();
        // Ending the open pulls releases the slots waiting on them; slots in a handler finish it first.
        for (const p of pulls) void p.close().catch(() => undefined);
        const graceMs = stopOpts?.graceMs ?? 0;
        if (graceMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          const drained = await Promise.race([
            Promise.all(slots).then(() => true),
            new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), graceMs); }),
          ]);
          clearTimeout(timer);
          if (!drained) log.warn({ ...logCtx, graceMs }, "handlers still running after the stop grace; aborting them");
        }
        aborter.abort();
        await Promise.all(slots);
        log.info(logCtx, "consumer stopped");
      })();
      return stopping;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 512);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const ac = new AbortController();
  try {
    return await Promise.race([
      p,
      sleep(ms, undefined, { signal: ac.signal }).then(() => { throw new Error(`${what} within ${ms} ms`); }),
    ]);
  } finally {
    ac.abort();
  }
}
