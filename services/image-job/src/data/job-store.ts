// Image jobs and images in Postgres. The schema of record is prisma/schema.prisma (its migration is checked against
// it by a test); queries are plain SQL over node-postgres because the dispatch path is timed in milliseconds and
// Prisma's per-statement overhead (~3× a plain query here) would dominate it.
//
// Every status change runs in one transaction that also writes its events to the outbox. Changes to a user's set
// of open jobs are serialized by a per-user advisory lock, always taken before any row lock, which makes the
// per-user limits and the dispatch of the user's next job exact.
import { randomUUID } from "node:crypto";
import pg from "pg";
import { enqueueEvent, recordInbox, sqlTxFromPg } from "@luna/kit";
import { ErrorCodes, RESULT_CONSUMER, isFinal, jobStoragePrefix } from "../domain/job.js";
import type { PageCursor } from "../domain/page-token.js";
import { jobQueuedEvent, jobUpdatedEvent, usageRecordedEvent } from "../events/messages.js";
import { imageFromRow, jobFromRow, type ImageRow, type JobRow, type JobWithImages } from "./rows.js";

export type { ImageRow, JobRow, JobWithImages } from "./rows.js";

type Db = pg.PoolClient;

/** A connection pool for the service's database; a transaction left idle (a stuck caller) is ended by Postgres. */
export function createPool(databaseUrl: string, size: number): pg.Pool {
  return new pg.Pool({
    connectionString: databaseUrl,
    max: size,
    application_name: "image-job",
    connectionTimeoutMillis: 10_000,
    options: "-c idle_in_transaction_session_timeout=60000",
  });
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
  | { kind: "skip"; reason: string; finished?: { job: JobRow; previousStatus: string } };

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
  /** Called after each commit that wrote outbox events (wakes the relay). */
  afterCommit: () => void;
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

export type JobStore = ReturnType<typeof createJobStore>;

export function createJobStore(opts: JobStoreOptions) {
  const { pool } = opts;

  async function transaction<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    const db = await pool.connect();
    let broken: Error | undefined;
    try {
      await db.query("BEGIN");
      const out = await fn(db);
      await db.query("COMMIT");
      return out;
    } catch (err) {
      await db.query("ROLLBACK").catch((e: unknown) => { broken = e as Error; });
      throw err;
    } finally {
      db.release(broken);
    }
  }

  const lockUser = (db: Db, userId: string) =>
    db.query("SELECT pg_advisory_xact_lock(hashtext('luna.image-job.user'), hashtext($1))", [userId]);

  const lockJob = async (db: Db, jobId: string): Promise<JobRow | undefined> => {
    const r = await db.query("SELECT * FROM image_jobs WHERE id = $1 FOR UPDATE", [jobId]);
    return r.rows[0] ? jobFromRow(r.rows[0]) : undefined;
  };

  const imagesOf = async (db: pg.Pool | Db, jobId: string): Promise<ImageRow[]> =>
    (await db.query("SELECT * FROM images WHERE job_id = $1 ORDER BY batch_index", [jobId])).rows.map(imageFromRow);

  const userIdOf = async (jobId: string): Promise<string | undefined> =>
    (await pool.query<{ user_id: string }>("SELECT user_id FROM image_jobs WHERE id = $1", [jobId])).rows[0]?.user_id;

  /** Sends the user's oldest waiting jobs to their pools while the user is below the running limit. */
  const dispatchWaiting = async (db: Db, userId: string): Promise<number> => {
    let sent = 0;
    for (;;) {
      // One statement per job: the limit check and the pick (usually nothing waits and nothing is updated).
      const r = await db.query(
        `UPDATE image_jobs SET dispatched_at = now() WHERE id = (
           SELECT id FROM image_jobs WHERE user_id = $1 AND status = 'QUEUED' AND dispatched_at IS NULL
            ORDER BY created_at, id LIMIT 1)
           AND (SELECT count(*) FROM image_jobs WHERE user_id = $1 AND status IN ('QUEUED', 'RUNNING') AND dispatched_at IS NOT NULL) < $2
         RETURNING *`, [userId, opts.maxRunningPerUser]);
      if (!r.rows[0]) return sent;
      await enqueueEvent(sqlTxFromPg(db), jobQueuedEvent(jobFromRow(r.rows[0])));
      sent++;
    }
  };

  /** Final transition: status, billing action owed, event, and the user's next job dispatched. Caller holds the user lock. */
  const finish = async (db: Db, job: JobRow, p: FinishPatch, images: ImageRow[] = []): Promise<JobWithImages> => {
    const r = await db.query(
      `UPDATE image_jobs SET status = $2, settlement = $3, error_code = $4, error_message = $5, images_produced = $6,
              credits_charged = $7, finished_at = now()
        WHERE id = $1 RETURNING *`,
      [job.id, p.status, p.settlement, p.errorCode ?? "", p.errorMessage ?? "", p.imagesProduced ?? 0, (p.creditsCharged ?? 0n).toString()]);
    const updated = jobFromRow(r.rows[0]);
    await enqueueEvent(sqlTxFromPg(db), jobUpdatedEvent(updated));
    await dispatchWaiting(db, job.userId);
    return { ...updated, images };
  };

  const failPatch = (code: string, message: string): FinishPatch => ({ status: "FAILED", errorCode: code, errorMessage: message, settlement: "release" });
  const QUEUE_TIMEOUT = failPatch(ErrorCodes.queueTimeout, "the job waited too long for a free ComfyUI");
  const DEADLINE = failPatch(ErrorCodes.deadlineExceeded, "the job did not finish before its deadline");

  return {
    pool,

    async findJob(jobId: string, userId?: string): Promise<JobWithImages | undefined> {
      const r = userId === undefined
        ? await pool.query("SELECT * FROM image_jobs WHERE id = $1", [jobId])
        : await pool.query("SELECT * FROM image_jobs WHERE id = $1 AND user_id = $2", [jobId, userId]);
      if (!r.rows[0]) return undefined;
      const job = jobFromRow(r.rows[0]);
      return { ...job, images: job.status === "SUCCEEDED" ? await imagesOf(pool, jobId) : [] };
    },

    /**
     * Creates a QUEUED job, or returns the one already created for this idempotency key. Under the user's lock: the
     * limits are checked, then `reserve` holds the credits (billing's Reserve is idempotent per job), then the job
     * and its outbox events are written. If the commit fails after the reserve, a retry with the same key reuses the
     * same hold; without a retry, billing's sweeper releases it at its deadline.
     */
    async submit(input: NewJob, reserve: () => Promise<{ holdId: string; amount: bigint }>): Promise<{ job: JobWithImages; replayed: boolean }> {
      const out = await transaction(async (db) => {
        await lockUser(db, input.userId);
        // The job of this key (if any) and the user's open jobs, in one round trip.
        const r0 = await db.query(
          `SELECT j.*, c.open, c.dispatched FROM (
             SELECT count(*)::int AS open, (count(*) FILTER (WHERE dispatched_at IS NOT NULL))::int AS dispatched
               FROM image_jobs WHERE user_id = $1 AND status IN ('QUEUED', 'RUNNING')) c
           LEFT JOIN image_jobs j ON j.user_id = $1 AND j.idempotency_key = $2`, [input.userId, input.idempotencyKey]);
        const row0 = r0.rows[0] as { id: string | null; open: number; dispatched: number };
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
        // created_at is written from this clock at millisecond precision: page tokens carry milliseconds.
        const r = await db.query(
          `INSERT INTO image_jobs (id, user_id, idempotency_key, request_hash, workflow_id, model_id, status, prompt, negative_prompt,
             width, height, count, steps, seed, style_id, price_per_image, hold_id, credits_reserved, run_timeout_ms,
             queue_deadline, created_at, dispatched_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'QUEUED', $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             $20::timestamptz, CASE WHEN $21::boolean THEN $20::timestamptz END)
           RETURNING *`,
          [input.id, input.userId, input.idempotencyKey, input.requestHash, input.workflowId, input.modelId, input.prompt,
            input.negativePrompt, input.width, input.height, input.count, input.steps, input.seed.toString(), input.styleId,
            input.pricePerImage.toString(), hold.holdId, hold.amount.toString(), input.runTimeoutMs, input.queueDeadline,
            new Date(), dispatchNow]);
        const job = jobFromRow(r.rows[0]);
        const sql = sqlTxFromPg(db);
        if (dispatchNow) await enqueueEvent(sql, jobQueuedEvent(job));
        await enqueueEvent(sql, jobUpdatedEvent(job));
        return { job: { ...job, images: [] }, replayed: false };
      });
      if (!out.replayed) opts.afterCommit();
      return out;
    },

    /** A worker takes a job: QUEUED → RUNNING, or a RUNNING job resumed after a redelivery; final jobs are skipped. */
    async startJob(jobId: string, workerId: string): Promise<StartOutcome> {
      // Fast path, one statement under the row lock: the common cases change no user's open-job count, so they need
      // no user lock (and cannot deadlock with one).
      const fast = await transaction(async (db): Promise<StartOutcome | undefined> => {
        const r = await db.query(
          `UPDATE image_jobs SET
              status = 'RUNNING', worker_id = $2, attempts = attempts + 1,
              started_at = CASE WHEN status = 'QUEUED' THEN now() ELSE started_at END,
              run_deadline = CASE WHEN status = 'QUEUED' THEN now() + run_timeout_ms * interval '1 millisecond' ELSE run_deadline END
            WHERE id = $1 AND ((status = 'QUEUED' AND queue_deadline > now()) OR (status = 'RUNNING' AND run_deadline > now()))
            RETURNING *, (attempts > 1) AS resumed`, [jobId, workerId]);
        if (!r.rows[0]) return undefined;
        const job = jobFromRow(r.rows[0]);
        const resumed = r.rows[0].resumed as boolean;
        if (!resumed) await enqueueEvent(sqlTxFromPg(db), jobUpdatedEvent(job));
        return { kind: "run", job, resumed };
      });
      if (fast) {
        if (fast.kind === "run" && !fast.resumed) opts.afterCommit();
        return fast;
      }
      // Final, unknown, or past a deadline (fail it now).
      const userId = await userIdOf(jobId);
      if (userId === undefined) return { kind: "skip", reason: "not_found" };
      let wrote = false;
      const out = await transaction(async (db): Promise<StartOutcome> => {
        await lockUser(db, userId);
        const job = await lockJob(db, jobId);
        if (!job) return { kind: "skip", reason: "not_found" };
        if (isFinal(job.status)) return { kind: "skip", reason: job.status.toLowerCase() };
        const now = new Date();
        if (job.status === "QUEUED" && job.queueDeadline <= now) {
          wrote = true;
          return { kind: "skip", reason: "failed", finished: { job: await finish(db, job, QUEUE_TIMEOUT), previousStatus: "QUEUED" } };
        }
        if (job.status === "RUNNING" && job.runDeadline && job.runDeadline <= now) {
          wrote = true;
          return { kind: "skip", reason: "failed", finished: { job: await finish(db, job, DEADLINE), previousStatus: "RUNNING" } };
        }
        throw new Error(`job ${jobId} could not be started in status ${job.status}`);
      });
      if (wrote) opts.afterCommit();
      return out;
    },

    /** Applies a worker's result once (inbox); the first result of a job wins, later ones are ignored. */
    async applyResult(r: ResultInput): Promise<ApplyOutcome> {
      const userId = await userIdOf(r.jobId);
      if (userId === undefined) {
        await recordInbox(sqlTxFromPg(pool), RESULT_CONSUMER, r.eventId);
        return { kind: "unknown_job" };
      }
      const out = await transaction(async (db): Promise<ApplyOutcome> => {
        await lockUser(db, userId);
        if (!(await recordInbox(sqlTxFromPg(db), RESULT_CONSUMER, r.eventId))) return { kind: "duplicate" };
        const job = await lockJob(db, r.jobId);
        if (!job) return { kind: "unknown_job" };
        const offeredKeys = r.images.map((i) => i.storageKey);
        if (isFinal(job.status)) return { kind: "ignored", job, orphanKeys: r.outcome === "SUCCEEDED" ? offeredKeys : [] };

        if (r.outcome === "SUCCEEDED") {
          const prefix = jobStoragePrefix(job.userId, job.id);
          const seen = new Set<number>();
          const valid = r.images.filter((i) => {
            const ok = Number.isInteger(i.index) && i.index >= 0 && i.index < job.count && !seen.has(i.index) &&
              i.storageKey.startsWith(prefix) && i.width > 0 && i.height > 0 && i.sizeBytes > 0;
            if (ok) seen.add(i.index);
            return ok;
          });
          const orphanKeys = offeredKeys.filter((k) => !valid.some((v) => v.storageKey === k));
          if (valid.length === 0) {
            const updated = await finish(db, job, failPatch(ErrorCodes.noOutputs, "ComfyUI finished without producing an image"));
            return { kind: "applied", job: updated, previous: job, orphanKeys };
          }
          const now = new Date();
          const values: unknown[] = [];
          const tuples = valid.map((i) => {
            const base = values.length;
            values.push(randomUUID(), job.id, job.userId, i.index, i.storageKey, i.contentType || PNG, i.width, i.height, i.sizeBytes,
              job.prompt, job.negativePrompt, job.seed.toString(), job.workflowId, job.modelId, job.styleId, now);
            return `(${Array.from({ length: 16 }, (_, k) => `$${base + k + 1}`).join(", ")})`;
          });
          const inserted = await db.query(
            `INSERT INTO images (id, job_id, user_id, batch_index, storage_key, content_type, width, height, size_bytes, prompt,
               negative_prompt, seed, workflow_id, model_id, style_id, created_at) VALUES ${tuples.join(", ")} RETURNING *`, values);
          const charged = job.pricePerImage * BigInt(valid.length);
          const updated = await finish(db, job, {
            status: "SUCCEEDED", imagesProduced: valid.length,
            creditsCharged: charged > job.creditsReserved ? job.creditsReserved : charged,
            settlement: job.holdId ? "commit" : "",
          }, inserted.rows.map(imageFromRow).sort((a, b) => a.batchIndex - b.batchIndex));
          return { kind: "applied", job: updated, previous: job, orphanKeys };
        }
        if (r.outcome === "CANCELLED") {
          const updated = await finish(db, job, { status: "CANCELLED", errorCode: ErrorCodes.cancelled, errorMessage: "cancelled", settlement: "release" });
          return { kind: "applied", job: updated, previous: job, orphanKeys: offeredKeys };
        }
        const updated = await finish(db, job, failPatch(r.errorCode || ErrorCodes.executionError, r.errorMessage.slice(0, 2000) || "generation failed"));
        return { kind: "applied", job: updated, previous: job, orphanKeys: offeredKeys };
      });
      if (out.kind === "applied") opts.afterCommit();
      return out;
    },

    /** Cancels an open job of the user. Undefined when the user has no such job; final jobs come back unchanged. */
    async cancel(jobId: string, userId: string): Promise<{ job: JobWithImages; previousStatus: string } | undefined> {
      const out = await transaction(async (db) => {
        await lockUser(db, userId);
        const job = await lockJob(db, jobId);
        if (!job || job.userId !== userId) return undefined;
        if (isFinal(job.status)) return { job: { ...job, images: await imagesOf(db, jobId) }, previousStatus: job.status };
        const updated = await finish(db, job, { status: "CANCELLED", errorCode: ErrorCodes.cancelled, errorMessage: "cancelled by its owner",
          settlement: job.holdId ? "release" : "" });
        return { job: updated, previousStatus: job.status };
      });
      if (out && out.previousStatus !== out.job.status) opts.afterCommit();
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
          await lockUser(db, c.user_id);
          const job = await lockJob(db, c.id);
          if (!job) return undefined;
          const t = Date.now();
          if (job.status === "QUEUED" && job.queueDeadline.getTime() < t) return { job: await finish(db, job, QUEUE_TIMEOUT), previousStatus: "QUEUED" };
          if (job.status === "RUNNING" && job.runDeadline && job.runDeadline.getTime() < t - graceMs) {
            return { job: await finish(db, job, DEADLINE), previousStatus: "RUNNING" };
          }
          return undefined;
        });
        if (out) done.push(out);
      }
      if (done.length > 0) opts.afterCommit();
      return done;
    },

    /** Safety net: dispatches waiting jobs of users below their running limit (e.g. after the limit was raised). */
    async dispatchWaitingJobs(batch: number): Promise<number> {
      const users = await pool.query<{ user_id: string }>(
        "SELECT DISTINCT user_id FROM image_jobs WHERE status = 'QUEUED' AND dispatched_at IS NULL LIMIT $1", [batch]);
      let sent = 0;
      for (const { user_id: userId } of users.rows) {
        sent += await transaction(async (db) => {
          await lockUser(db, userId);
          return dispatchWaiting(db, userId);
        });
      }
      if (sent > 0) opts.afterCommit();
      return sent;
    },

    /** Final jobs whose billing action (commit or release) is not done yet. */
    async unsettled(batch: number, finishedBefore: Date): Promise<JobRow[]> {
      const r = await pool.query(
        `SELECT * FROM image_jobs WHERE settlement <> '' AND settled_at IS NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2`,
        [finishedBefore, batch]);
      return r.rows.map(jobFromRow);
    },

    /**
     * Records the billing action as done (once). For a commit, writes `usage.recorded` in the same transaction;
     * `charged` is what billing actually charged (0 when the hold could no longer be committed).
     */
    async markSettled(jobId: string, s: { charged?: bigint; error?: string }): Promise<boolean> {
      const wroteUsage = await transaction(async (db) => {
        const r = await db.query(
          `UPDATE image_jobs SET settled_at = now(), settle_error = $2, credits_charged = coalesce($3::bigint, credits_charged)
            WHERE id = $1 AND settled_at IS NULL RETURNING *`,
          [jobId, s.error ?? "", s.charged === undefined ? null : s.charged.toString()]);
        if (!r.rows[0]) return false;
        const job = jobFromRow(r.rows[0]);
        if (job.settlement === "commit" && s.charged !== undefined && s.charged > 0n) {
          await enqueueEvent(sqlTxFromPg(db), usageRecordedEvent(job, s.charged));
          return true;
        }
        return false;
      });
      if (wroteUsage) opts.afterCommit();
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

    /** QUEUED jobs per model pool. */
    async queueDepths(): Promise<Array<{ modelId: string; queued: number }>> {
      const r = await pool.query<{ modelId: string; queued: number }>(
        `SELECT model_id AS "modelId", count(*)::int AS queued FROM image_jobs WHERE status = 'QUEUED' GROUP BY model_id`);
      return r.rows;
    },
  };
}
