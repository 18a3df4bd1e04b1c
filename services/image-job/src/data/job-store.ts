// Image jobs and images in Postgres. The schema of record is prisma/schema.prisma (its migration is checked against
// it by a test); queries are plain SQL over node-postgres because the dispatch path is timed in milliseconds and
// Prisma's per-statement overhead (~3× a plain query here) would dominate it.
//
// Every status change runs in one transaction that also writes its events to the outbox. Changes to a user's set
// of open jobs are serialized by a per-user advisory lock, always taken before any row lock, which makes the
// per-user limits and the dispatch of the user's next job exact.
//
// Round trips are what the hot paths cost (each is a socket write and a wake-up on both sides), so a state change
// and its outbox rows are one statement where the event can be built before it (data-modifying CTEs), a
// transaction opens together with its first statement (a simple-protocol string), the submit's insert closes it
// together with its COMMIT (values inlined as literals), and single-statement changes run without BEGIN/COMMIT.
// A dispatched job's queue message is published right after the commit by this process (see publishQueued).
import { randomUUID } from "node:crypto";
import pg from "pg";
import {
  OUTBOX_INSERT,
  createPgPool,
  inboxInsertLiteralSql,
  isUuid,
  outboxRow,
  outboxValuesSql,
  type Logger,
  type OutboxEvent,
  type OutboxRow,
} from "@luna/kit";
import { ErrorCodes, RESULT_CONSUMER, isFinal, isJobStorageKey, resultEventId } from "../domain/job.js";
import type { PageCursor } from "../domain/page-token.js";
import { jobQueuedEvent, jobUpdatedEvent, usageRecordedEvent } from "../events/messages.js";
import { imageFromRow, jobFromRow, type ImageRow, type JobRow, type JobWithImages } from "./rows.js";

export type { ImageRow, JobRow, JobWithImages, PoolCounts } from "./rows.js";

type Db = pg.PoolClient;

/** `INSERT INTO outbox_events ... VALUES (...), (...)` for the events, with their values from `$first` on. */
function outboxInsert(events: OutboxEvent[], first: number): { sql: string; values: unknown[]; rows: OutboxRow[] } {
  const values: unknown[] = [];
  const rows = events.map(outboxRow);
  const tuples = rows.map((row) => {
    const at = first + values.length;
    values.push(row.id, row.subject, row.payload, row.headers);
    return `(${outboxValuesSql(at)})`;
  });
  return { sql: `${OUTBOX_INSERT} VALUES ${tuples.join(", ")}`, values, rows };
}

/**
 * A value as an SQL literal, for a statement sent in the simple protocol (which has no parameters) so that it can
 * travel in one round trip with the COMMIT. Strings are quoted by `escapeLiteral` (safe for any string); numbers
 * must be finite integers; byte strings become hex.
 */
export function sqlLiteral(v: unknown): string {
  if (v === null || v === undefined) return "NULL";
  if (typeof v === "string") return pg.escapeLiteral(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new Error(`sqlLiteral: not an integer: ${v}`);
    return String(v);
  }
  if (v instanceof Date) {
    if (Number.isNaN(v.getTime())) throw new Error("sqlLiteral: invalid date");
    return `'${v.toISOString()}'`;
  }
  if (v instanceof Uint8Array) return `decode('${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex")}', 'hex')`;
  throw new Error(`sqlLiteral: unsupported value of type ${typeof v}`);
}

/**
 * A parameterized statement with its `$n` placeholders replaced by literals of `values` (one pass over the
 * statement's own text, so nothing inside a value is ever read as a placeholder).
 */
export function inlineParams(sql: string, values: unknown[]): string {
  return sql.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i < 0 || i >= values.length) throw new Error(`inlineParams: no value for $${n}`);
    return sqlLiteral(values[i]);
  });
}

/**
 * The statement that takes a user's advisory lock, for a transaction's opening string (simple protocol, so the id is
 * quoted as a literal; `escapeLiteral` makes any string safe there).
 */
const lockUserSql = (userId: string): string =>
  `SELECT pg_advisory_xact_lock(hashtext('luna.image-job.user'), hashtext(${pg.escapeLiteral(userId)}))`;


/** A job id as a quoted literal (it must be a UUID: checked here). */
/** See awaitsLateResult. */
const LATE_RELEASE_MARGIN_MS = 10_000;

const jobIdLiteral = (jobId: string): string => {
  if (!isUuid(jobId)) throw new Error(`not a job id: ${JSON.stringify(jobId)}`);
  return `'${jobId}'`;
};

/** The statement that takes the lock of a job's user (read from the job: user ids never change). */
const lockJobUserSql = (jobId: string): string =>
  `SELECT pg_advisory_xact_lock(hashtext('luna.image-job.user'), hashtext(user_id)) FROM image_jobs WHERE id = ${jobIdLiteral(jobId)}`;

/** A connection pool for the service's database; a transaction left idle (a stuck caller) is ended by Postgres. */
export function createPool(databaseUrl: string, size: number, log: Pick<Logger, "warn">): pg.Pool {
  return createPgPool({ url: databaseUrl, max: size, name: "image-job", log, idleInTransactionTimeoutMs: 60_000 });
}

/** The user already has as many open jobs as allowed. */
export class JobLimitError extends Error {}
/** The idempotency key was used for a different request. */
export class IdempotencyConflictError extends Error {}

export interface NewJob {
  id: string;
  userId: string;
  idempotencyKey: string;
  requestHash: string;
  workflowId: string;
  modelId: string;
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  count: number;
  steps: number;
  seed: bigint;
  styleId: string;
  pricePerImage: bigint;
  runTimeoutMs: number;
  queueDeadline: Date;
}

export type StartOutcome =
  | { kind: "run"; job: JobRow; resumed: boolean }
  | { kind: "skip"; reason: string; finished?: { job: JobRow; previousStatus: string };
      /** With reason "collect": the job, whose outputs the worker may still find in ComfyUI's history. */
      job?: JobRow };

export interface ResultInput {
  eventId: string;
  jobId: string;
  outcome: "SUCCEEDED" | "FAILED" | "CANCELLED";
  images: Array<{ index: number; storageKey: string; width: number; height: number; sizeBytes: number; contentType: string }>;
  errorCode: string;
  errorMessage: string;
  workerId: string;
}

export type ApplyOutcome =
  | { kind: "duplicate" }
  | { kind: "unknown_job" }
  /** The job was already final (e.g. cancelled while it ran): nothing changed; `orphanKeys` should be deleted. */
  | { kind: "ignored"; job: JobRow; orphanKeys: string[] }
  | { kind: "applied"; job: JobWithImages; previous: JobRow; orphanKeys: string[] };

export interface FinishedJob {
  job: JobWithImages;
  previousStatus: string;
}

export interface JobStoreOptions {
  pool: pg.Pool;
  maxRunningPerUser: number;
  maxQueuedPerUser: number;
  /** Dispatched jobs whose identity is remembered for StartJob (default 10 000; 0 = none). */
  startCacheSize?: number;
  /**
   * How long after the sweeper failed a RUNNING job at its deadline (no result from its worker) a late SUCCEEDED
   * result still turns it into a success, its hold kept open meanwhile (IMAGE_LATE_RESULT_WINDOW; default 0 = never).
   */
  lateResultWindowMs?: number;
  /**
   * Wakes the relay at once. Called after each commit that wrote outbox events, unless the queue messages take the
   * fast path (`publish`): then nothing else this store writes needs the relay before its NOTIFY pass, and it is
   * called only when a fast publish failed.
   */
  afterCommit: () => void;
  /**
   * Fast path of the queue messages (see `publishQueued` below): publishes one committed outbox row to JetStream
   * with `Nats-Msg-Id` = its id, resolving once the stream stored it. Unset: the relay alone publishes them.
   */
  publish?: (row: OutboxRow) => Promise<unknown>;
  /** Fast-path rows are marked published in batches this long after their publish (default 200 ms). */
  markDelayMs?: number;
  /** Where a failed fast-path publish is noted (it is not an error: the relay publishes the row). */
  log?: Pick<Logger, "debug">;
}

interface FinishPatch {
  status: "SUCCEEDED" | "FAILED" | "CANCELLED";
  settlement: "" | "commit" | "release";
  errorCode?: string;
  errorMessage?: string;
  imagesProduced?: number;
  creditsCharged?: bigint;
}

const PNG = "image/png";

/**
 * A job's image rows as one JSON array (column names as keys; the bigint seed as text, so no precision is lost;
 * see imageFromJson).
 */
const IMAGES_JSON = `coalesce(json_agg(json_build_object('id', i.id, 'job_id', i.job_id, 'user_id', i.user_id, 'batch_index', i.batch_index,
  'storage_key', i.storage_key, 'content_type', i.content_type, 'width', i.width, 'height', i.height, 'size_bytes', i.size_bytes,
  'prompt', i.prompt, 'negative_prompt', i.negative_prompt, 'seed', i.seed::text, 'workflow_id', i.workflow_id, 'model_id', i.model_id,
  'style_id', i.style_id, 'created_at', i.created_at) ORDER BY i.batch_index), '[]'::json)`;

/** An image row from IMAGES_JSON. */
const imageFromJson = (r: Record<string, unknown>): ImageRow => imageFromRow({ ...r, created_at: new Date(r.created_at as string) });

/**
 * A pool's counts for a queue position (as poolSnapshot): its QUEUED jobs matching `aheadOf` and its RUNNING jobs;
 * no row at all unless `when` holds (a condition on an outer row: then nothing is scanned). `model` is an SQL
 * expression (a column or a literal).
 */
const POOL_COUNTS_SQL = (model: string, aheadOf: string, when = "true") =>
  `SELECT (count(*) FILTER (WHERE q.status = 'QUEUED' ${aheadOf}))::int AS ahead, (count(*) FILTER (WHERE q.status = 'RUNNING'))::int AS running
     FROM image_jobs q WHERE ${when} AND q.model_id = ${model} AND q.status IN ('QUEUED', 'RUNNING') HAVING ${when}`;

/** Dispatch order: oldest first (as the dispatch statement picks them). */
const byAge = (a: JobRow, b: JobRow): number => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export type JobStore = ReturnType<typeof createJobStore>;

/** What never changes about a job, and what the RUNNING event carries besides its status. */
interface JobIdentity {
  userId: string;
  workflowId: string;
  modelId: string;
}

export function createJobStore(opts: JobStoreOptions) {
  const { pool } = opts;
  const startCacheSize = opts.startCacheSize ?? 10_000;
  const lateWindowMs = opts.lateResultWindowMs ?? 0;
  /**
   * A job the sweeper failed at its deadline whose hold is not released yet, within the late-result window: its
   * worker may still deliver the images (e.g. ComfyUI finished while NATS was unreachable).
   */
  const lateRecoverable = (job: JobRow, now = Date.now()): boolean =>
    job.status === "FAILED" && job.errorCode === ErrorCodes.deadlineExceeded && job.settlement === "release" && !job.settledAt &&
    job.finishedAt !== null && job.finishedAt.getTime() > now - lateWindowMs;
  /**
   * Identities of jobs this process dispatched, until a worker starts them (insertion order: the oldest is dropped
   * first when full). Always right when present: identities never change.
   */
  const dispatched = new Map<string, JobIdentity>();
  const remember = (job: { id: string } & JobIdentity): void => {
    if (startCacheSize === 0) return;
    dispatched.set(job.id, { userId: job.userId, workflowId: job.workflowId, modelId: job.modelId });
    if (dispatched.size > startCacheSize) dispatched.delete(dispatched.keys().next().value!);
  };

  /** Queue messages written by the transaction open on a connection, published right after its commit. */
  const queuedIn = new WeakMap<Db, OutboxRow[]>();

  /**
   * The fast path of a job's queue message: published by the committing process itself right after the commit,
   * instead of one relay round trip later (the relay's select). The outbox row stays the record: a crash or a
   * failure before this publish leaves it to the relay, as without the fast path. The relay, woken by the same
   * commit, usually sends the row again at once: the same `Nats-Msg-Id` makes that copy a duplicate JetStream
   * drops, and the relay marks the row. Rows the stream stored are also marked here, in batches a little later
   * (`markDelayMs`, one statement that normally finds them marked already and stays off the dispatch path), for a
   * relay held up by an earlier failing row: its copy sent after the stream's duplicate window would be a second
   * message for the job.
   * Order: such a message can reach the stream ahead of rows other transactions committed just before and the relay
   * has not published yet. Nothing depends on that order: a job's message is its first event on its stream, its
   * other events are on LUNA_EVENTS, and jobs dispatched for one user together may run at the same time anyway.
   */
  const markDelayMs = opts.markDelayMs ?? 200;
  const afterCommit = (): void => {
    if (!opts.publish) opts.afterCommit();
  };
  const toMark = new Set<string>();
  let markTimer: NodeJS.Timeout | undefined;
  const markPublished = (): void => {
    markTimer = undefined;
    const ids = [...toMark];
    toMark.clear();
    pool.query("UPDATE outbox_events SET published_at = now() WHERE id = ANY($1::uuid[]) AND published_at IS NULL", [ids])
      .catch((err: unknown) => opts.log?.debug({ err, eventIds: ids }, "marking fast-path rows failed; the outbox relay marks them"));
  };
  const publishQueued = (rows: OutboxRow[]): void => {
    const publish = opts.publish;
    if (!publish) return;
    for (const row of rows) {
      // A publisher that throws at once is a failed publish too: the commit stands.
      new Promise((resolve) => resolve(publish(row))).then(() => {
        toMark.add(row.id);
        if (!markTimer) {
          markTimer = setTimeout(markPublished, markDelayMs);
          markTimer.unref();
        }
      }, (err: unknown) => {
        opts.log?.debug({ err, eventId: row.id }, "fast-path publish failed; the outbox relay publishes the job");
        opts.afterCommit();
      });
    }
  };

  /**
   * Runs `fn` in a transaction. `first` is parameterless SQL (one or more statements, each with its own snapshot)
   * sent with the BEGIN in one round trip; `fn` gets the result of its last statement. `fn` may end the
   * transaction itself (its last statement sent together with the COMMIT) and say so with `committed`.
   */
  async function transaction<T>(fn: (db: Db, first: pg.QueryResult | undefined, committed: () => void) => Promise<T>, first?: string): Promise<T> {
    const db = await pool.connect();
    let broken: Error | undefined;
    const queued: OutboxRow[] = [];
    queuedIn.set(db, queued);
    try {
      let opened: pg.QueryResult | undefined;
      if (first) opened = ((await db.query(`BEGIN; ${first}`)) as unknown as pg.QueryResult[]).at(-1);
      else await db.query("BEGIN");
      let done = false;
      const out = await fn(db, opened, () => { done = true; });
      if (!done) await db.query("COMMIT");
      publishQueued(queued);
      return out;
    } catch (err) {
      await db.query("ROLLBACK").catch((e: unknown) => { broken = e as Error; });
      throw err;
    } finally {
      queuedIn.delete(db);
      db.release(broken);
    }
  }

  const lockJob = async (db: Db, jobId: string): Promise<JobRow | undefined> => {
    const r = await db.query("SELECT * FROM image_jobs WHERE id = $1 FOR UPDATE", [jobId]);
    return r.rows[0] ? jobFromRow(r.rows[0]) : undefined;
  };

  const imagesOf = async (db: pg.Pool | Db, jobId: string): Promise<ImageRow[]> =>
    (await db.query("SELECT * FROM images WHERE job_id = $1 ORDER BY batch_index", [jobId])).rows.map(imageFromRow);

  /**
   * The user's oldest waiting jobs, dispatched while the user is below the running limit (`except`: a job this
   * statement's caller is finishing, not counted and not picked). A fragment of a statement whose `$u` is the user id
   * and `$m` the limit.
   */
  const dispatchSql = (u: string, m: string, except?: string) => {
    const other = except ? ` AND id <> ${except}` : "";
    return `UPDATE image_jobs SET dispatched_at = now() WHERE id IN (
       SELECT id FROM image_jobs WHERE user_id = ${u} AND status = 'QUEUED' AND dispatched_at IS NULL${other}
        ORDER BY created_at, id
        LIMIT greatest(0, ${m} - (SELECT count(*) FROM image_jobs
          WHERE user_id = ${u} AND status IN ('QUEUED', 'RUNNING') AND dispatched_at IS NOT NULL${other})))
     RETURNING *`;
  };

  /** Writes the queue messages of jobs just dispatched (one statement; nothing when there are none). */
  const enqueueDispatched = async (db: Db, jobs: JobRow[]): Promise<void> => {
    if (jobs.length === 0) return;
    const ins = outboxInsert(jobs.map(jobQueuedEvent), 1);
    await db.query(ins.sql, ins.values);
    queuedIn.get(db)?.push(...ins.rows);
    // Remembered before the commit: a worker cannot take the job before it (the relay publishes after it), and a
    // rolled-back job's entry is never used (an id that does not exist is never started).
    jobs.forEach(remember);
  };

  /** Sends the user's oldest waiting jobs to their pools while the user is below the running limit. Caller holds the user lock. */
  const dispatchWaiting = async (db: Db, userId: string): Promise<number> => {
    const r = await db.query(dispatchSql("$1", "$2"), [userId, opts.maxRunningPerUser]);
    const jobs = r.rows.map(jobFromRow).sort(byAge);
    await enqueueDispatched(db, jobs);
    return jobs.length;
  };

  /**
   * Final transition: status, billing action owed, event, and the user's next job dispatched, in one statement (plus
   * the queue messages of the jobs it dispatched); the images of a success are inserted by the same statement.
   * Caller holds the user lock and the job's row lock.
   */
  const finish = async (db: Db, job: JobRow, p: FinishPatch, images: ImageRow[] = []): Promise<JobWithImages> => {
    // The event carries what this statement writes, so it is built before it.
    const event = jobUpdatedEvent({ ...job, status: p.status, imagesProduced: p.imagesProduced ?? 0, creditsCharged: p.creditsCharged ?? 0n,
      errorCode: p.errorCode ?? "" });
    const values: unknown[] = [job.id, p.status, p.settlement, p.errorCode ?? "", p.errorMessage ?? "", p.imagesProduced ?? 0,
      (p.creditsCharged ?? 0n).toString(), job.userId, opts.maxRunningPerUser];
    const ev = outboxInsert([event], values.length + 1);
    values.push(...ev.values);
    let imagesCte = "";
    if (images.length > 0) {
      const tuples = images.map((i) => {
        const at = values.length;
        values.push(i.id, i.jobId, i.userId, i.batchIndex, i.storageKey, i.contentType, i.width, i.height, i.sizeBytes, i.prompt,
          i.negativePrompt, i.seed.toString(), i.workflowId, i.modelId, i.styleId, i.createdAt);
        return `(${Array.from({ length: 16 }, (_, k) => `$${at + k + 1}`).join(", ")})`;
      });
      imagesCte = `img AS (INSERT INTO images (id, job_id, user_id, batch_index, storage_key, content_type, width, height, size_bytes,
        prompt, negative_prompt, seed, workflow_id, model_id, style_id, created_at) VALUES ${tuples.join(", ")}), `;
    }
    const r = await db.query(
      `WITH ${imagesCte}fin AS (
         UPDATE image_jobs SET status = $2, settlement = $3, error_code = $4, error_message = $5, images_produced = $6,
                credits_charged = $7, finished_at = now()
          WHERE id = $1 RETURNING *),
       disp AS (${dispatchSql("$8", "$9", "$1")}),
       ev AS (${ev.sql})
       SELECT false AS dispatched, * FROM fin UNION ALL SELECT true, * FROM disp`, values);
    const updated = jobFromRow(r.rows.find((row: { dispatched: boolean }) => !row.dispatched));
    await enqueueDispatched(db, r.rows.filter((row: { dispatched: boolean }) => row.dispatched).map(jobFromRow).sort(byAge));
    return { ...updated, images };
  };

  const failPatch = (code: string, message: string): FinishPatch => ({ status: "FAILED", errorCode: code, errorMessage: message, settlement: "release" });
  const QUEUE_TIMEOUT = failPatch(ErrorCodes.queueTimeout, "the job waited too long for a free ComfyUI");
  const DEADLINE = failPatch(ErrorCodes.deadlineExceeded, "the job did not finish before its deadline");

  return {
    pool,

    async findJob(jobId: string, userId?: string): Promise<JobWithImages | undefined> {
      // The job and, once it succeeded, its images, or while it is queued, its place in the pool, in one query.
      const r = await pool.query(
        `SELECT j.*, CASE WHEN j.status = 'SUCCEEDED' THEN (SELECT ${IMAGES_JSON} FROM images i WHERE i.job_id = j.id) END AS images_json,
                p.ahead AS pool_ahead, p.running AS pool_running
           FROM image_jobs j
           LEFT JOIN LATERAL (${POOL_COUNTS_SQL("j.model_id", "AND (q.created_at, q.id) < (j.created_at, j.id)", "j.status = 'QUEUED'")}) p ON true
          WHERE j.id = $1 AND ($2::text IS NULL OR j.user_id = $2)`, [jobId, userId ?? null]);
      const row = r.rows[0];
      if (!row) return undefined;
      const job: JobWithImages = { ...jobFromRow(row), images: ((row.images_json ?? []) as Array<Record<string, unknown>>).map(imageFromJson) };
      if (row.pool_ahead !== null) job.pool = { ahead: row.pool_ahead as number, running: row.pool_running as number };
      return job;
    },

    /**
     * Creates a QUEUED job, or returns the one already created for this idempotency key. Under the user's lock: the
     * limits are checked, then `reserve` holds the credits (billing's Reserve is idempotent per job), then the job
     * and its outbox events are written. If the commit fails after the reserve, a retry with the same key reuses the
     * same hold; without a retry, billing's sweeper releases it at its deadline.
     */
    async submit(input: NewJob, reserve: () => Promise<{ holdId: string; amount: bigint }>): Promise<{ job: JobWithImages; replayed: boolean }> {
      const user = pg.escapeLiteral(input.userId);
      const out = await transaction(async (db, r0, committed) => {
        const row0 = r0!.rows[0] as { id: string | null; open: number; dispatched: number; pool_ahead: number; pool_running: number };
        if (row0.id !== null) {
          const job = jobFromRow(row0);
          if (job.requestHash !== input.requestHash) {
            throw new IdempotencyConflictError("idempotency_key: already used for a different request; use a new key");
          }
          return { job: { ...job, images: await imagesOf(db, job.id) }, replayed: true };
        }
        const { open, dispatched } = row0;
        if (open >= opts.maxRunningPerUser + opts.maxQueuedPerUser) {
          throw new JobLimitError(`too many open image jobs: at most ${opts.maxRunningPerUser} running and ${opts.maxQueuedPerUser} queued; wait for one to finish or cancel one`);
        }
        const hold = await reserve();
        const dispatchNow = dispatched < opts.maxRunningPerUser;
        // The job and its events in one statement: the events need nothing the database assigns. The queue message
        // comes first, so the relay publishes it first.
        const identity = { id: input.id, userId: input.userId, workflowId: input.workflowId, modelId: input.modelId };
        const events = [
          ...(dispatchNow ? [jobQueuedEvent(identity)] : []),
          jobUpdatedEvent({ ...identity, status: "QUEUED", imagesProduced: 0, creditsCharged: 0n, errorCode: "" }),
        ];
        const values: unknown[] = [input.id, input.userId, input.idempotencyKey, input.requestHash, input.workflowId, input.modelId, input.prompt,
          input.negativePrompt, input.width, input.height, input.count, input.steps, input.seed.toString(), input.styleId,
          input.pricePerImage.toString(), hold.holdId, hold.amount.toString(), input.runTimeoutMs, input.queueDeadline,
          // created_at is written from this clock at millisecond precision: page tokens carry milliseconds.
          new Date(), dispatchNow];
        const ev = outboxInsert(events, values.length + 1);
        // Sent with the COMMIT in one round trip (simple protocol, so the values go in as literals).
        const statement = inlineParams(
          `WITH job AS (
             INSERT INTO image_jobs (id, user_id, idempotency_key, request_hash, workflow_id, model_id, status, prompt, negative_prompt,
               width, height, count, steps, seed, style_id, price_per_image, hold_id, credits_reserved, run_timeout_ms,
               queue_deadline, created_at, dispatched_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'QUEUED', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
               $20::timestamptz, CASE WHEN $21::boolean THEN $20::timestamptz END)
             RETURNING *),
           ev AS (${ev.sql})
           SELECT * FROM job`,
          [...values, ...ev.values]);
        const [r] = (await db.query(`${statement}; COMMIT`)) as unknown as pg.QueryResult[];
        committed();
        const job = jobFromRow(r!.rows[0]);
        if (dispatchNow) {
          remember(job);
          // The queue message is the first event (see publishQueued).
          queuedIn.get(db)?.push(ev.rows[0]!);
        }
        // Its place in the pool as read before the insert (every queued job then was older): the response needs it,
        // and reading it here saves a query after the commit.
        return { job: { ...job, images: [], pool: { ahead: row0.pool_ahead, running: row0.pool_running } }, replayed: false };
      },
      // With the BEGIN, after the user's lock (so it sees every commit of the user's before it): the job of this key
      // (if any), the user's open jobs and the pool's counts (for the new job's queue position).
      `${lockUserSql(input.userId)};
       SELECT j.*, c.open, c.dispatched, p.ahead AS pool_ahead, p.running AS pool_running FROM (
         SELECT count(*)::int AS open, (count(*) FILTER (WHERE dispatched_at IS NOT NULL))::int AS dispatched
           FROM image_jobs WHERE user_id = ${user} AND status IN ('QUEUED', 'RUNNING')) c
       CROSS JOIN (${POOL_COUNTS_SQL(pg.escapeLiteral(input.modelId), "")}) p
       LEFT JOIN image_jobs j ON j.user_id = ${user} AND j.idempotency_key = ${pg.escapeLiteral(input.idempotencyKey)}`);
      if (!out.replayed) afterCommit();
      return out;
    },

    /** A worker takes a job: QUEUED → RUNNING, or a RUNNING job resumed after a redelivery; final jobs are skipped. */
    async startJob(jobId: string, workerId: string): Promise<StartOutcome> {
      // The job's identity (it never changes), for the RUNNING event: built before the statement that writes it.
      let identity = dispatched.get(jobId);
      dispatched.delete(jobId);
      if (!identity) {
        const who = await pool.query<{ user_id: string; workflow_id: string; model_id: string }>(
          "SELECT user_id, workflow_id, model_id FROM image_jobs WHERE id = $1", [jobId]);
        const row = who.rows[0];
        if (!row) return { kind: "skip", reason: "not_found" };
        identity = { userId: row.user_id, workflowId: row.workflow_id, modelId: row.model_id };
      }
      const running = jobUpdatedEvent({ id: jobId, ...identity, status: "RUNNING", imagesProduced: 0, creditsCharged: 0n, errorCode: "" });
      const ev = outboxRow(running);
      // Fast path, one statement (atomic without BEGIN/COMMIT) under the row lock: the common cases change no user's
      // open-job count, so they need no user lock (and cannot deadlock with one). The event is written only for
      // QUEUED → RUNNING (a resumed job was RUNNING already).
      const r = await pool.query(
        `WITH job AS (
           UPDATE image_jobs SET
              status = 'RUNNING', worker_id = $2, attempts = attempts + 1,
              started_at = CASE WHEN status = 'QUEUED' THEN now() ELSE started_at END,
              run_deadline = CASE WHEN status = 'QUEUED' THEN now() + run_timeout_ms * interval '1 millisecond' ELSE run_deadline END
            WHERE id = $1 AND ((status = 'QUEUED' AND queue_deadline > now()) OR (status = 'RUNNING' AND run_deadline > now()))
            RETURNING *, (attempts > 1) AS resumed),
         ev AS (${OUTBOX_INSERT} SELECT ${outboxValuesSql(3)} FROM job WHERE NOT job.resumed)
         SELECT * FROM job`, [jobId, workerId, ev.id, ev.subject, ev.payload, ev.headers]);
      if (r.rows[0]) {
        const job = jobFromRow(r.rows[0]);
        const resumed = r.rows[0].resumed as boolean;
        if (!resumed) afterCommit();
        return { kind: "run", job, resumed };
      }
      // Final, unknown, or past a deadline (fail it now).
      const userId = identity.userId;
      let wrote = false;
      const out = await transaction(async (db): Promise<StartOutcome> => {
        const job = await lockJob(db, jobId);
        if (!job) return { kind: "skip", reason: "not_found" };
        // Failed at its deadline with no result yet (its worker died or could not report): a redelivery may still
        // collect what ComfyUI finished (never generating it again).
        if (lateRecoverable(job)) return { kind: "skip", reason: "collect", job };
        if (isFinal(job.status)) return { kind: "skip", reason: job.status.toLowerCase() };
        const now = new Date();
        if (job.status === "QUEUED" && job.queueDeadline <= now) {
          wrote = true;
          return { kind: "skip", reason: "failed", finished: { job: await finish(db, job, QUEUE_TIMEOUT), previousStatus: "QUEUED" } };
        }
        if (job.status === "RUNNING" && job.runDeadline && job.runDeadline <= now) {
          wrote = true;
          const failed = await finish(db, job, DEADLINE);
          return { kind: "skip", reason: lateWindowMs > 0 ? "collect" : "failed", finished: { job: failed, previousStatus: "RUNNING" }, job: failed };
        }
        throw new Error(`job ${jobId} could not be started in status ${job.status}`);
      }, lockUserSql(userId));
      if (wrote) afterCommit();
      return out;
    },

    /** Applies a worker's result once (inbox); the first result of a job wins, later ones are ignored. */
    async applyResult(r: ResultInput): Promise<ApplyOutcome> {
      const out = await transaction(async (db, q): Promise<ApplyOutcome> => {
        // An unknown job's result is recorded too, so a redelivery is dropped at once.
        if (!q?.rows[0]) return { kind: "unknown_job" };
        if (!q.rows[0].fresh) return { kind: "duplicate" };
        const job = jobFromRow(q.rows[0]);
        const offeredKeys = r.images.map((i) => i.storageKey);
        // The first result of a job the sweeper failed at its deadline: its images are recovered (its hold is still
        // open, see awaitsLateResult) rather than thrown away.
        const late = r.outcome === "SUCCEEDED" && lateRecoverable(job);
        if (isFinal(job.status) && !late) return { kind: "ignored", job, orphanKeys: r.outcome === "SUCCEEDED" ? offeredKeys : [] };

        if (r.outcome === "SUCCEEDED") {
          const seen = new Set<number>();
          const valid = r.images.filter((i) => {
            const ok = Number.isInteger(i.index) && i.index >= 0 && i.index < job.count && !seen.has(i.index) &&
              isJobStorageKey(i.storageKey, job.userId, job.id) && i.width > 0 && i.height > 0 && i.sizeBytes > 0;
            if (ok) seen.add(i.index);
            return ok;
          });
          const orphanKeys = offeredKeys.filter((k) => !valid.some((v) => v.storageKey === k));
          if (valid.length === 0) {
            const updated = await finish(db, job, failPatch(ErrorCodes.noOutputs, "ComfyUI finished without producing an image"));
            return { kind: "applied", job: updated, previous: job, orphanKeys };
          }
          // Every column is known here, so the records are written by the finishing statement itself.
          const now = new Date();
          const images: ImageRow[] = valid.map((i) => ({
            id: randomUUID(), jobId: job.id, userId: job.userId, batchIndex: i.index, storageKey: i.storageKey, contentType: i.contentType || PNG,
            width: i.width, height: i.height, sizeBytes: i.sizeBytes, prompt: job.prompt, negativePrompt: job.negativePrompt, seed: job.seed,
            workflowId: job.workflowId, modelId: job.modelId, styleId: job.styleId, createdAt: now,
          })).sort((a, b) => a.batchIndex - b.batchIndex);
          const charged = job.pricePerImage * BigInt(valid.length);
          const updated = await finish(db, job, {
            status: "SUCCEEDED", imagesProduced: valid.length,
            creditsCharged: charged > job.creditsReserved ? job.creditsReserved : charged,
            settlement: job.holdId ? "commit" : "",
          }, images);
          return { kind: "applied", job: updated, previous: job, orphanKeys };
        }
        if (r.outcome === "CANCELLED") {
          const updated = await finish(db, job, { status: "CANCELLED", errorCode: ErrorCodes.cancelled, errorMessage: "cancelled", settlement: "release" });
          return { kind: "applied", job: updated, previous: job, orphanKeys: offeredKeys };
        }
        const updated = await finish(db, job, failPatch(r.errorCode || ErrorCodes.executionError, r.errorMessage.slice(0, 2000) || "generation failed"));
        return { kind: "applied", job: updated, previous: job, orphanKeys: offeredKeys };
      },
      // With the BEGIN, in this order: the lock of the job's user (taken before any row lock, as everywhere), then
      // the inbox record and the job's row lock in one statement (a duplicate is recognised before anything changes).
      `${lockJobUserSql(r.jobId)};
       WITH fresh AS (${inboxInsertLiteralSql(RESULT_CONSUMER, r.eventId)})
       SELECT j.*, EXISTS (SELECT 1 FROM fresh) AS fresh FROM image_jobs j WHERE j.id = ${jobIdLiteral(r.jobId)} FOR UPDATE OF j`);
      if (out.kind === "applied") afterCommit();
      return out;
    },

    /** Cancels an open job of the user. Undefined when the user has no such job; final jobs come back unchanged. */
    async cancel(jobId: string, userId: string): Promise<{ job: JobWithImages; previousStatus: string } | undefined> {
      const out = await transaction(async (db) => {
        const job = await lockJob(db, jobId);
        if (!job || job.userId !== userId) return undefined;
        if (isFinal(job.status)) return { job: { ...job, images: await imagesOf(db, jobId) }, previousStatus: job.status };
        const updated = await finish(db, job, { status: "CANCELLED", errorCode: ErrorCodes.cancelled, errorMessage: "cancelled by its owner",
          settlement: job.holdId ? "release" : "" });
        return { job: updated, previousStatus: job.status };
      }, lockUserSql(userId));
      if (out && out.previousStatus !== out.job.status) afterCommit();
      return out;
    },

    /**
     * Fails open jobs past their deadlines: QUEUED ones past the queue deadline, RUNNING ones `graceMs` past their
     * run deadline (the worker normally reports first). Returns the jobs it failed.
     */
    async failExpired(now: Date, graceMs: number, batch: number): Promise<FinishedJob[]> {
      const candidates = await pool.query<{ id: string; user_id: string }>(
        `SELECT id, user_id FROM image_jobs
          WHERE (status = 'QUEUED' AND queue_deadline < $1) OR (status = 'RUNNING' AND run_deadline < $2)
          LIMIT $3`, [now, new Date(now.getTime() - graceMs), batch]);
      const done: FinishedJob[] = [];
      for (const c of candidates.rows) {
        const out = await transaction(async (db) => {
          const job = await lockJob(db, c.id);
          if (!job) return undefined;
          const t = Date.now();
          if (job.status === "QUEUED" && job.queueDeadline.getTime() < t) return { job: await finish(db, job, QUEUE_TIMEOUT), previousStatus: "QUEUED" };
          if (job.status === "RUNNING" && job.runDeadline && job.runDeadline.getTime() < t - graceMs) {
            return { job: await finish(db, job, DEADLINE), previousStatus: "RUNNING" };
          }
          return undefined;
        }, lockUserSql(c.user_id));
        if (out) done.push(out);
      }
      if (done.length > 0) afterCommit();
      return done;
    },

    /** Safety net: dispatches waiting jobs of users below their running limit (e.g. after the limit was raised). */
    async dispatchWaitingJobs(batch: number): Promise<number> {
      const users = await pool.query<{ user_id: string }>(
        "SELECT DISTINCT user_id FROM image_jobs WHERE status = 'QUEUED' AND dispatched_at IS NULL LIMIT $1", [batch]);
      let sent = 0;
      for (const { user_id: userId } of users.rows) {
        sent += await transaction((db) => dispatchWaiting(db, userId), lockUserSql(userId));
      }
      if (sent > 0) afterCommit();
      return sent;
    },

    /**
     * The ids among `refs` that name no job (the hold sweep: holds of submissions that crashed between billing's
     * reserve and their commit). Each candidate is confirmed under its user's lock, which a submission holds from
     * before its reserve until its commit: a job being written is waited for (up to 2 s, else left for the next
     * sweep: `undecided`), never reported missing.
     */
    async jobsMissing(refs: Array<{ jobId: string; userId: string }>): Promise<{ missing: string[]; undecided: string[] }> {
      const valid = refs.filter((r) => isUuid(r.jobId));
      const undecided: string[] = [];
      if (valid.length === 0) return { missing: [], undecided };
      const present = await pool.query("SELECT id FROM image_jobs WHERE id = ANY($1::uuid[])", [valid.map((r) => r.jobId)]);
      const found = new Set(present.rows.map((r: { id: string }) => r.id));
      const missing: string[] = [];
      for (const ref of valid) {
        if (found.has(ref.jobId)) continue;
        try {
          const r = await transaction(async (_db, first) => first,
            `SET LOCAL lock_timeout = '2s'; ${lockUserSql(ref.userId)}; SELECT 1 FROM image_jobs WHERE id = ${jobIdLiteral(ref.jobId)}`);
          if (r?.rowCount === 0) missing.push(ref.jobId);
        } catch {
          undecided.push(ref.jobId); // the user's lock is busy: next sweep
        }
      }
      return { missing, undecided };
    },

    /**
     * Whether a job's release waits for a late result: the sweeper failed it at its deadline, no worker result was
     * applied for it, and the late-result window (plus a margin, so a result applied at the window's end never
     * meets a release in flight) has not passed.
     */
    async awaitsLateResult(job: JobRow): Promise<boolean> {
      if (!lateRecoverable(job, Date.now() - LATE_RELEASE_MARGIN_MS)) return false;
      const r = await pool.query("SELECT 1 FROM inbox_events WHERE consumer = $1 AND event_id = $2", [RESULT_CONSUMER, resultEventId(job.id)]);
      return r.rowCount === 0;
    },

    /** Final jobs whose billing action (commit or release) is not done yet. */
    async unsettled(batch: number, finishedBefore: Date): Promise<JobRow[]> {
      const r = await pool.query(
        `SELECT * FROM image_jobs WHERE settlement <> '' AND settled_at IS NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2`,
        [finishedBefore, batch]);
      return r.rows.map(jobFromRow);
    },

    /**
     * Records the billing action as done (once). For a commit, writes `usage.recorded` in the same statement;
     * `charged` is what billing actually charged (0 when the hold could no longer be committed).
     */
    async markSettled(job: Pick<JobRow, "id" | "userId" | "modelId" | "imagesProduced">, s: { charged?: bigint; error?: string }): Promise<boolean> {
      const values: unknown[] = [job.id, s.error ?? "", s.charged === undefined ? null : s.charged.toString()];
      let usage = "";
      if (s.charged !== undefined && s.charged > 0n) {
        // Built before the statement (it needs nothing the statement writes); written only if this call settles a commit.
        const ev = outboxRow(usageRecordedEvent(job, s.charged));
        usage = `, ev AS (${OUTBOX_INSERT} SELECT ${outboxValuesSql(4)} FROM job WHERE job.settlement = 'commit' RETURNING 1)`;
        values.push(ev.id, ev.subject, ev.payload, ev.headers);
      }
      const r = await pool.query<{ wrote: boolean }>(
        `WITH job AS (
           UPDATE image_jobs SET settled_at = now(), settle_error = $2, credits_charged = coalesce($3::bigint, credits_charged)
            WHERE id = $1 AND settled_at IS NULL RETURNING settlement)${usage}
         SELECT ${usage ? "EXISTS (SELECT 1 FROM ev)" : "false"} AS wrote`, values);
      const wroteUsage = r.rows[0]?.wrote === true;
      if (wroteUsage) afterCommit();
      return wroteUsage;
    },

    async recordSettleFailure(jobId: string, error: string): Promise<void> {
      await pool.query("UPDATE image_jobs SET settle_attempts = settle_attempts + 1, settle_error = $2 WHERE id = $1", [jobId, error.slice(0, 500)]);
    },

    async listJobs(userId: string, cursor: PageCursor | undefined, size: number, status?: string): Promise<JobWithImages[]> {
      const r = await pool.query(
        `SELECT * FROM image_jobs
          WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
            AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
          ORDER BY created_at DESC, id DESC LIMIT $5`,
        [userId, status ?? null, cursor?.createdAt ?? null, cursor?.id ?? null, size + 1]);
      const jobs = r.rows.map(jobFromRow);
      const ids = jobs.filter((j) => j.status === "SUCCEEDED").map((j) => j.id);
      const images = ids.length === 0 ? [] : (await pool.query("SELECT * FROM images WHERE job_id = ANY($1::uuid[]) ORDER BY batch_index", [ids])).rows.map(imageFromRow);
      return jobs.map((j) => ({ ...j, images: images.filter((i) => i.jobId === j.id) }));
    },

    async listImages(userId: string, cursor: PageCursor | undefined, size: number): Promise<ImageRow[]> {
      const r = await pool.query(
        `SELECT * FROM images
          WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
          ORDER BY created_at DESC, id DESC LIMIT $4`,
        [userId, cursor?.createdAt ?? null, cursor?.id ?? null, size + 1]);
      return r.rows.map(imageFromRow);
    },

    async findImage(userId: string, imageId: string): Promise<ImageRow | undefined> {
      const r = await pool.query("SELECT * FROM images WHERE id = $1 AND user_id = $2", [imageId, userId]);
      return r.rows[0] ? imageFromRow(r.rows[0]) : undefined;
    },

    /** Deletes the user's image record; false when there was none. */
    async deleteImage(userId: string, imageId: string): Promise<boolean> {
      const r = await pool.query("DELETE FROM images WHERE id = $1 AND user_id = $2", [imageId, userId]);
      return (r.rowCount ?? 0) > 0;
    },

    async openJobIds(userId: string): Promise<string[]> {
      const r = await pool.query<{ id: string }>("SELECT id FROM image_jobs WHERE user_id = $1 AND status IN ('QUEUED', 'RUNNING')", [userId]);
      return r.rows.map((x) => x.id);
    },

    async countJobs(userId: string): Promise<number> {
      return (await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM image_jobs WHERE user_id = $1", [userId])).rows[0]?.n ?? 0;
    },

    async imageKeysOf(userId: string): Promise<string[]> {
      const r = await pool.query<{ storage_key: string }>("SELECT storage_key FROM images WHERE user_id = $1", [userId]);
      return r.rows.map((x) => x.storage_key);
    },

    /**
     * Deletes the user's final jobs (their images cascade). Open jobs are kept: cancel them first. Final jobs whose
     * billing is not settled yet are kept too, so the settlement is never lost; the sweeper settles them and a later
     * call (or redelivery) removes them.
     */
    async deleteUserData(userId: string): Promise<number> {
      const r = await pool.query(
        `DELETE FROM image_jobs WHERE user_id = $1 AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
            AND (settlement = '' OR settled_at IS NOT NULL)`, [userId]);
      return r.rowCount ?? 0;
    },

    /** Jobs ahead of a queued job in its pool, and the pool's running jobs. */
    async poolSnapshot(job: { modelId: string; createdAt: Date; id: string }): Promise<{ ahead: number; running: number }> {
      const r = await pool.query<{ ahead: number; running: number }>(
        `SELECT (count(*) FILTER (WHERE status = 'QUEUED' AND (created_at, id) < ($2::timestamptz, $3::uuid)))::int AS ahead,
                (count(*) FILTER (WHERE status = 'RUNNING'))::int AS running
           FROM image_jobs WHERE model_id = $1 AND status IN ('QUEUED', 'RUNNING')`,
        [job.modelId, job.createdAt, job.id]);
      return r.rows[0] ?? { ahead: 0, running: 0 };
    },

    /** Mean run time of the pool's last `n` successful jobs; undefined when there are none. */
    async recentRunMs(modelId: string, n = 20): Promise<number | undefined> {
      const r = await pool.query<{ ms: number | null }>(
        `SELECT (avg(extract(epoch FROM finished_at - started_at)) * 1000)::float8 AS ms FROM (
           SELECT finished_at, started_at FROM image_jobs
            WHERE model_id = $1 AND status = 'SUCCEEDED' AND started_at IS NOT NULL
            ORDER BY created_at DESC LIMIT $2) recent`, [modelId, n]);
      const ms = r.rows[0]?.ms;
      return ms === null || ms === undefined ? undefined : ms;
    },

    /** When the pool's oldest QUEUED job was created; undefined when none is queued. */
    async oldestQueuedAt(modelId: string): Promise<Date | undefined> {
      const r = await pool.query<{ at: Date | null }>(`SELECT min(created_at) AS at FROM image_jobs WHERE model_id = $1 AND status = 'QUEUED'`, [modelId]);
      return r.rows[0]?.at ?? undefined;
    },

    /** QUEUED jobs per model pool. */
    async queueDepths(): Promise<Array<{ modelId: string; queued: number }>> {
      const r = await pool.query<{ modelId: string; queued: number }>(
        `SELECT model_id AS "modelId", count(*)::int AS queued FROM image_jobs WHERE status = 'QUEUED' GROUP BY model_id`);
      return r.rows;
    },
  };
}
