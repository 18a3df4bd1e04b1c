// image-job's own settings (the runtime's shared ones — database, NATS, Redis, ports, auth — are read by the kit).
// Read once by main.ts (or the all-in-one process) and passed down; nothing below reads process.env.
import * as z from "zod";
import { bool, duration, eventRetentionConfigSchema } from "@luna/kit";
import { storageConfigSchema } from "./storage/config.js";

const int = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).optional().transform((v) => v ?? def);

export const configSchema = z.object({
  ...storageConfigSchema.shape,
  /** Jobs of one user that may be dispatched to ComfyUI at once (queued in a pool or running). */
  IMAGE_MAX_RUNNING_PER_USER: int(1, 1, 100),
  /** Jobs of one user that may wait behind those (so at most running + queued open jobs per user). */
  IMAGE_MAX_QUEUED_PER_USER: int(5, 0, 1000),
  /** A job not started within this time after submission fails with `queue_timeout` (credits released). */
  IMAGE_QUEUE_TIMEOUT: duration("30m"),
  /**
   * The OpenAI-compatible `POST /v1/images/generations` waits this long for its job; then it answers 504 and cancels
   * the job (credits released). Keep it within the gateway's streaming limits.
   */
  IMAGE_OPENAI_WAIT_TIMEOUT: duration("10m"),
  /** Run deadline = base + steps × megapixels × images × per-step time, capped at the maximum. */
  IMAGE_RUN_DEADLINE_BASE: duration("60s"),
  IMAGE_RUN_DEADLINE_PER_MP_STEP: duration("500ms"),
  IMAGE_RUN_DEADLINE_MAX: duration("30m"),
  /**
   * After the sweeper failed a RUNNING job at its deadline without a result from its worker, how long the job's hold
   * is kept and a late success (ComfyUI finished, e.g. while NATS was unreachable) still delivers its images.
   */
  IMAGE_LATE_RESULT_WINDOW: duration("5m"),
  /** The sweeper fails a RUNNING job this long after its run deadline (the worker normally reports first). */
  IMAGE_DEADLINE_GRACE: duration("30s"),
  /** How often the sweeper runs (deadlines, unsettled credits, undispatched jobs). */
  IMAGE_SWEEP_INTERVAL: duration("5s"),
  /**
   * The sweeper releases an open image hold whose job was never stored (a submission crashed between billing's
   * reserve and its commit) once the hold is this old.
   */
  IMAGE_ORPHAN_HOLD_GRACE: duration("30s"),
  /**
   * Between complete passes the hold sweep reads only holds created since its last pass; every this often it reads
   * all open image holds again (a safety net; each process also starts with one).
   */
  IMAGE_ORPHAN_HOLD_RESCAN: duration("10m"),
  /** Jobs handled per sweep query. */
  IMAGE_SWEEP_BATCH: int(200, 1, 10_000),
  /** Lifetime of signed image URLs. */
  IMAGE_URL_TTL: duration("1h"),
  /**
   * HMAC secret of the local store's signed URLs (at least 32 characters; the same on every replica). Unset = a
   * random secret per process: URLs then stop working at restart and differ between replicas (local dev only).
   */
  IMAGE_URL_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
  /** Base of the local store's URLs, e.g. https://api.example.com; empty = relative URLs (`/images/...`). */
  IMAGE_PUBLIC_BASE_URL: z.string().regex(/^(https?:\/\/[^\s?#]+)?$/, "expected http(s)://host[:port][/path] or empty").default(""),
  /** Watchers re-read the job this often (queue position, missed live messages). */
  IMAGE_WATCH_REFRESH: duration("1s"),
  /** Run time assumed for queue estimates until a pool has finished jobs. */
  IMAGE_DEFAULT_RUN_ESTIMATE: duration("20s"),
  /** Handlers applying worker results at once. */
  IMAGE_RESULT_CONCURRENCY: int(4, 1, 64),
  /** Deadline of one call to billing (Reserve, Commit, Release). */
  IMAGE_BILLING_TIMEOUT: duration("5s"),
  /** Postgres connections of this process. */
  IMAGE_DB_POOL_SIZE: int(10, 2, 200),
  /**
   * Jobs this process dispatched whose owner, workflow and model it remembers until a worker starts them, so
   * StartJob is one statement instead of two (a job dispatched by another replica is read). 0 = remember none.
   */
  IMAGE_START_CACHE_SIZE: int(10_000, 0, 1_000_000),
  /**
   * Publish a dispatched job's queue message right after the commit, from this process, instead of waiting for the
   * outbox relay's next batch (the row stays in the outbox: the relay publishes it if this does not). Saves the
   * relay's select round trip on the dispatch path.
   */
  IMAGE_FAST_DISPATCH: bool(true),
  /**
   * Rows sent by that fast path are marked published in one statement this long after (the relay has usually marked
   * them by then; this covers a relay held up by an earlier row). Far below the stream's 2-minute duplicate window.
   */
  IMAGE_FAST_DISPATCH_MARK_DELAY: duration("200ms"),
  /**
   * The outbox relay starts a pass woken by NOTIFY this long after it (commits in between share one batch). With
   * the fast path nothing else image-job writes is urgent (status and usage events), so the relay is not kicked
   * after commits and batches them instead of running a probe and a batch per commit.
   */
  IMAGE_RELAY_NOTIFY_DELAY: duration("20ms"),
  /** LUNA_OUTBOX_RETAIN, LUNA_INBOX_RETAIN, LUNA_EVENT_PRUNE_INTERVAL (kit: event tables' retention). */
  ...eventRetentionConfigSchema.shape,
});

export type ImageJobConfig = z.infer<typeof configSchema>;
