// The job store and the billing settlement against a real Postgres, with billing faked by an in-memory Connect
// router: the schema matches the migration, results apply once, settlement survives billing outages and refusals,
// and the sweeper fails jobs past their deadlines.
import { fileURLToPath } from "node:url";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { assertSchemaMatchesDatabase, createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type pg from "pg";
import { fromBinary } from "@bufbuild/protobuf";
import { ImageJobUpdatedSchema } from "@luna/contracts/luna/events/v1/image_events_pb.js";
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { createJobStore, createPool, type JobStore, type NewJob } from "../src/data/job-store.js";
import { resultEventId, Subjects, usageEventId } from "../src/domain/job.js";
import { migrationsDir } from "../src/index.js";
import { eventually } from "./harness.js";
import { createImageJobMetrics } from "../src/metrics.js";
import { createSettler } from "../src/settlement.js";
import { sweepOnce } from "../src/sweeper.js";

const SCHEMA = fileURLToPath(new URL("../prisma/schema.prisma", import.meta.url));

let db: TestDatabase;
let store: JobStore;
let pool: pg.Pool;
let seq = 0;

beforeAll(async () => {
  db = await createTestDatabase({ migrationsDir, prefix: "imgstore" });
  pool = createPool(db.url, 4, { warn: () => undefined });
  store = createJobStore({ pool, maxRunningPerUser: 1, maxQueuedPerUser: 2, afterCommit: () => undefined });
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

function newJob(userId: string, over: Partial<NewJob> = {}): NewJob {
  const id = crypto.randomUUID();
  return {
    id, userId, idempotencyKey: id, requestHash: "h", workflowId: "flux-schnell", modelId: "flux1-schnell", prompt: `p${++seq}`,
    negativePrompt: "", width: 64, height: 64, count: 2, steps: 4, seed: 1n, styleId: "", pricePerImage: 50n, runTimeoutMs: 60_000,
    queueDeadline: new Date(Date.now() + 60_000), ...over,
  };
}

const hold = (amount: bigint) => async () => ({ holdId: `hold-${++seq}`, amount });

async function outboxSubjects(): Promise<string[]> {
  const rows = await pool.query<{ subject: string }>("SELECT subject FROM outbox_events ORDER BY seq");
  return rows.rows.map((r) => r.subject);
}

it("the migration matches schema.prisma", async () => {
  await assertSchemaMatchesDatabase({ schemaPath: SCHEMA, databaseUrl: db.url, ignoreIndexes: ["outbox_events_unpublished_seq_idx"] });
});

describe("dispatch and results", () => {
  it("dispatches one job per user at a time and the next one when it finishes", async () => {
    const before = (await outboxSubjects()).filter((s) => s === Subjects.jobQueue("flux1-schnell")).length;
    const a = await store.submit(newJob("disp"), hold(100n));
    const b = await store.submit(newJob("disp"), hold(100n));
    expect(a.job.dispatchedAt).not.toBeNull();
    expect(b.job.dispatchedAt).toBeNull();
    await expect(store.submit(newJob("disp"), hold(100n))).resolves.toBeTruthy();
    await expect(store.submit(newJob("disp"), hold(100n))).rejects.toThrow(/at most 1 running and 2 queued/);

    expect(await store.startJob(a.job.id, "w1")).toMatchObject({ kind: "run", resumed: false });
    expect(await store.startJob(a.job.id, "w2")).toMatchObject({ kind: "run", resumed: true });
    const applied = await store.applyResult({ eventId: resultEventId(a.job.id), jobId: a.job.id, outcome: "SUCCEEDED", errorCode: "", errorMessage: "",
      workerId: "w2", images: [
        { index: 0, storageKey: `images/disp/${a.job.id}/0.png`, width: 64, height: 64, sizeBytes: 10, contentType: "image/png" },
        { index: 0, storageKey: `images/disp/${a.job.id}/dup.png`, width: 64, height: 64, sizeBytes: 10, contentType: "image/png" },
        { index: 1, storageKey: "images/someone-else/x/1.png", width: 64, height: 64, sizeBytes: 10, contentType: "image/png" },
      ] });
    expect(applied.kind).toBe("applied");
    if (applied.kind !== "applied") return;
    // Only the valid image counts: charged 50, not 100; the other keys are to be deleted.
    expect(applied.job).toMatchObject({ status: "SUCCEEDED", imagesProduced: 1, creditsCharged: 50n, settlement: "commit" });
    expect(applied.orphanKeys).toEqual([`images/disp/${a.job.id}/dup.png`, "images/someone-else/x/1.png"]);
    // The same result again: the inbox drops it.
    expect((await store.applyResult({ eventId: resultEventId(a.job.id), jobId: a.job.id, outcome: "FAILED", errorCode: "x", errorMessage: "",
      workerId: "w", images: [] })).kind).toBe("duplicate");
    // Another result for the finished job: ignored.
    expect((await store.applyResult({ eventId: crypto.randomUUID(), jobId: a.job.id, outcome: "FAILED", errorCode: "x", errorMessage: "",
      workerId: "w", images: [] })).kind).toBe("ignored");
    expect((await store.findJob(b.job.id))!.dispatchedAt).not.toBeNull();
    const queued = (await outboxSubjects()).filter((s) => s === Subjects.jobQueue("flux1-schnell")).length;
    expect(queued - before).toBe(2);
    expect(await store.startJob(a.job.id, "w3")).toEqual({ kind: "skip", reason: "succeeded" });
  });

  it("StartJob writes one RUNNING event with the job's identity, whether or not this replica dispatched the job", async () => {
    // `store` remembers the jobs it dispatched; `other` (another replica, remembering nothing) reads the identity.
    const other = createJobStore({ pool, maxRunningPerUser: 1, maxQueuedPerUser: 2, startCacheSize: 0, afterCommit: () => undefined });
    const mine = await store.submit(newJob("ident1", { workflowId: "wf-a", modelId: "model-a" }), hold(100n));
    const theirs = await store.submit(newJob("ident2", { workflowId: "wf-b", modelId: "model-b" }), hold(100n));
    expect(await store.startJob(mine.job.id, "w1")).toMatchObject({ kind: "run", resumed: false });
    expect(await other.startJob(theirs.job.id, "w2")).toMatchObject({ kind: "run", resumed: false });
    expect(await other.startJob(mine.job.id, "w3")).toMatchObject({ kind: "run", resumed: true });
    const running = async (jobId: string) => (await pool.query<{ payload: Buffer }>(
      "SELECT payload FROM outbox_events WHERE subject = $1 ORDER BY seq", [Subjects.updated])).rows
      .map((r) => fromBinary(ImageJobUpdatedSchema, r.payload))
      .filter((e) => e.jobId === jobId && e.status === JobStatus.RUNNING);
    expect(await running(mine.job.id)).toEqual([expect.objectContaining({ userId: "ident1", workflowId: "wf-a", modelId: "model-a" })]);
    expect(await running(theirs.job.id)).toEqual([expect.objectContaining({ userId: "ident2", workflowId: "wf-b", modelId: "model-b" })]);
    expect(await other.startJob(crypto.randomUUID(), "w4")).toEqual({ kind: "skip", reason: "not_found" });
  });

  it("a SUCCEEDED result without usable images fails the job (no_outputs)", async () => {
    const { job } = await store.submit(newJob("noout"), hold(100n));
    await store.startJob(job.id, "w");
    const out = await store.applyResult({ eventId: crypto.randomUUID(), jobId: job.id, outcome: "SUCCEEDED", errorCode: "", errorMessage: "", workerId: "w", images: [] });
    expect(out).toMatchObject({ kind: "applied", job: { status: "FAILED", errorCode: "no_outputs", settlement: "release" } });
  });
});

describe("queue position read with the job", () => {
  it("gives a queued job its pool's counts from the submit and from findJob, and none once it left the queue", async () => {
    const modelId = `model-pos-${++seq}`;
    const first = await store.submit(newJob("pos1", { modelId }), hold(100n));
    const second = await store.submit(newJob("pos2", { modelId }), hold(100n));
    expect(first.job.pool).toEqual({ ahead: 0, running: 0 });
    expect(second.job.pool).toEqual({ ahead: 1, running: 0 });
    expect((await store.findJob(second.job.id))!.pool).toEqual({ ahead: 1, running: 0 });
    await store.startJob(first.job.id, "w");
    expect((await store.findJob(second.job.id))!.pool).toEqual({ ahead: 0, running: 1 });
    expect((await store.findJob(first.job.id))!.pool).toBeUndefined();
    // A replayed submission reads its position afresh (the counts read before its first insert are stale).
    expect((await store.submit({ ...newJob("pos2", { modelId }), id: second.job.id, idempotencyKey: second.job.idempotencyKey, requestHash: "h" },
      hold(100n))).job.pool).toBeUndefined();
  });
});

describe("fast-path publish of queue messages", () => {
  const published = async (id: string) =>
    (await pool.query<{ at: Date | null }>("SELECT published_at AS at FROM outbox_events WHERE id = $1", [id])).rows[0]?.at ?? null;

  it("publishes a dispatched job's queue message once, after the commit, and marks its row a little later", async () => {
    const sent: Array<{ id: string; subject: string; committed: boolean }> = [];
    let kicks = 0;
    const fast = createJobStore({ pool, maxRunningPerUser: 1, maxQueuedPerUser: 2, afterCommit: () => void kicks++, markDelayMs: 20,
      publish: async (row) => {
        // Another connection sees the row: the transaction has committed before the publish.
        const seen = await pool.query("SELECT 1 FROM outbox_events WHERE id = $1", [row.id]);
        sent.push({ id: row.id, subject: row.subject, committed: seen.rowCount === 1 });
      } });
    const first = await fast.submit(newJob("fast1"), hold(100n));
    const second = await fast.submit(newJob("fast1"), hold(100n)); // waits undispatched: no queue message yet
    await eventually(() => (sent.length === 1 ? true : undefined));
    const queueRows = (await pool.query<{ id: string; payload: Buffer }>(
      "SELECT id FROM outbox_events WHERE subject = $1 AND id = $2", [Subjects.jobQueue("flux1-schnell"), sent[0]!.id])).rows;
    expect(queueRows).toHaveLength(1);
    expect(sent[0]).toMatchObject({ subject: Subjects.jobQueue("flux1-schnell"), committed: true });
    await eventually(async () => ((await published(sent[0]!.id)) !== null ? true : undefined), 2000, "the row marked published");
    // The job's status event is left to the relay.
    const updated = await pool.query<{ at: Date | null }>(
      "SELECT published_at AS at FROM outbox_events WHERE subject = $1 AND seq > (SELECT seq FROM outbox_events WHERE id = $2) ORDER BY seq LIMIT 1",
      [Subjects.updated, sent[0]!.id]);
    expect(updated.rows[0]!.at).toBeNull();

    // Finishing the first job dispatches the second: its message takes the fast path too.
    await fast.startJob(first.job.id, "w");
    await fast.applyResult({ eventId: crypto.randomUUID(), jobId: first.job.id, outcome: "FAILED", errorCode: "x", errorMessage: "boom", workerId: "w", images: [] });
    await eventually(() => (sent.length === 2 ? true : undefined));
    expect(sent[1]!.committed).toBe(true);
    expect((await fast.findJob(second.job.id))!.dispatchedAt).not.toBeNull();
    // Nothing else it wrote (status events) needed the relay at once: it was never kicked.
    expect(kicks).toBe(0);
  });

  it("leaves the row to the relay (kicked at once) when the publish fails, and publishes nothing for a transaction that rolled back", async () => {
    const tried: string[] = [];
    let kicks = 0;
    const failing = createJobStore({ pool, maxRunningPerUser: 1, maxQueuedPerUser: 2, afterCommit: () => void kicks++, markDelayMs: 1,
      publish: (row) => {
        tried.push(row.id);
        throw new Error("nats down"); // thrown at once: the committed submission still stands
      } });
    const { job } = await failing.submit(newJob("fast2"), hold(100n));
    expect(job.status).toBe("QUEUED");
    expect(tried).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 30));
    expect(await published(tried[0]!)).toBeNull();
    expect(kicks).toBe(1); // the relay is woken at once to publish it

    await expect(failing.submit(newJob("fast3"), async () => { throw new Error("billing refused"); })).rejects.toThrow("billing refused");
    expect(tried).toHaveLength(1);
    expect(await failing.countJobs("fast3")).toBe(0);
  });

  it("writes values safely as literals when the insert travels with the COMMIT", async () => {
    const nasty = "it's a \\ back'slash; $1 $21 -- DROP TABLE image_jobs; \u00e9\u{1F600}";
    const { job } = await store.submit(newJob("lit'user\\", { prompt: nasty, negativePrompt: "$2", styleId: "'", seed: 9007199254740993n }), hold(100n));
    const back = await store.findJob(job.id);
    expect(back).toMatchObject({ userId: "lit'user\\", prompt: nasty, negativePrompt: "$2", styleId: "'", seed: 9007199254740993n });
  });
});

describe("settlement", () => {
  function billing(fail: () => ConnectError | undefined) {
    const calls: string[] = [];
    const transport = createRouterTransport((router) => router.service(CreditsService, {
      async commit(req) {
        calls.push(`commit ${req.holdId} ${req.amount}`);
        const err = fail();
        if (err) throw err;
        return { hold: { id: req.holdId, charged: req.amount }, transferId: "t" };
      },
      async release(req) {
        calls.push(`release ${req.holdId}`);
        const err = fail();
        if (err) throw err;
        return { hold: { id: req.holdId } };
      },
    }));
    return { transport, calls };
  }

  const metrics = createImageJobMetrics(new Registry(), async () => []);
  const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const lifecycle = { changed: () => undefined, discardObjects: () => undefined };

  async function succeeded(user: string) {
    const { job } = await store.submit(newJob(user, { count: 1 }), hold(50n));
    await store.startJob(job.id, "w");
    const out = await store.applyResult({ eventId: crypto.randomUUID(), jobId: job.id, outcome: "SUCCEEDED", errorCode: "", errorMessage: "", workerId: "w",
      images: [{ index: 0, storageKey: `images/${user}/${job.id}/0.png`, width: 64, height: 64, sizeBytes: 5, contentType: "image/png" }] });
    if (out.kind !== "applied") throw new Error(out.kind);
    return out.job;
  }

  it("retries a commit billing could not take, then records usage once", async () => {
    let down = true;
    const b = billing(() => (down ? new ConnectError("billing down", Code.Unavailable) : undefined));
    const settler = createSettler({ store, billing: b.transport, log, metrics, callTimeoutMs: 1000 });
    const job = await succeeded("settle1");
    await settler.settle(job);
    expect(await store.findJob(job.id)).toMatchObject({ settledAt: null, settleAttempts: 1, settleError: "[unavailable] billing down" });
    down = false;
    const r = await sweepOnce({ store, lifecycle, settler, log, intervalMs: 1000, batch: 100, deadlineGraceMs: 0, settleDelayMs: 0 });
    expect(r.settled).toBeGreaterThanOrEqual(1);
    const settled = await store.findJob(job.id);
    expect(settled!.settledAt).not.toBeNull();
    expect(settled!.creditsCharged).toBe(50n);
    expect(b.calls.filter((c) => c === `commit ${job.holdId} 50`)).toHaveLength(2);
    const usage = (await pool.query<{ id: string }>("SELECT id FROM outbox_events WHERE subject = $1", [Subjects.usage])).rows;
    expect(usage.filter((u) => u.id === usageEventId(job.id))).toHaveLength(1);
    // Settling again does nothing.
    await settler.settle(settled!);
    await sweepOnce({ store, lifecycle, settler, log, intervalMs: 1000, batch: 100, deadlineGraceMs: 0, settleDelayMs: 0 });
    expect(b.calls.filter((c) => c === `commit ${job.holdId} 50`)).toHaveLength(2);
  });

  it("records a commit billing refuses (expired hold) as settled with nothing charged", async () => {
    const b = billing(() => new ConnectError("hold expired", Code.FailedPrecondition));
    const settler = createSettler({ store, billing: b.transport, log, metrics, callTimeoutMs: 1000 });
    const job = await succeeded("settle2");
    await settler.settle(job);
    expect(await store.findJob(job.id)).toMatchObject({ creditsCharged: 0n, settleError: "[failed_precondition] hold expired" });
    expect((await store.findJob(job.id))!.settledAt).not.toBeNull();
  });
});

describe("sweeper", () => {
  it("fails queued jobs past their queue deadline and running jobs past their run deadline", async () => {
    const b = { transport: createRouterTransport((router) => router.service(CreditsService, { release: async () => ({}) })) };
    const settler = createSettler({ store, billing: b.transport, log: { warn: () => undefined, error: () => undefined }, metrics: createImageJobMetrics(new Registry(), async () => []), callTimeoutMs: 1000 });
    const changed: Array<[string, string]> = [];
    const lifecycle = { changed: (j: { status: string; errorCode: string }, prev: string) => void changed.push([`${prev}→${j.status}`, j.errorCode]), discardObjects: () => undefined };
    const old = await store.submit(newJob("sweep1", { queueDeadline: new Date(Date.now() - 1000) }), hold(100n));
    const running = await store.submit(newJob("sweep2", { runTimeoutMs: 1 }), hold(100n));
    await store.startJob(running.job.id, "w");
    await new Promise((r) => setTimeout(r, 20));
    await sweepOnce({ store, lifecycle, settler, log: { info: () => undefined, warn: () => undefined }, intervalMs: 1000, batch: 100, deadlineGraceMs: 0, settleDelayMs: 0 });
    expect(await store.findJob(old.job.id)).toMatchObject({ status: "FAILED", errorCode: "queue_timeout", settlement: "release" });
    expect(await store.findJob(running.job.id)).toMatchObject({ status: "FAILED", errorCode: "deadline_exceeded" });
    expect(changed).toEqual(expect.arrayContaining([["QUEUED→FAILED", "queue_timeout"], ["RUNNING→FAILED", "deadline_exceeded"]]));
    // A worker that takes the queued job's message later is told to skip it.
    expect(await store.startJob(old.job.id, "w")).toEqual({ kind: "skip", reason: "failed" });
  });
});
