// The fast path of dispatch (IMAGE_FAST_DISPATCH): the committing process publishes a job's queue message itself
// right after the commit, and the outbox relay sends the same row as well. JetStream's duplicate window (same
// Nats-Msg-Id) keeps it to one message, so ComfyUI runs the job once; without the fast publish (as after a crash
// between the commit and it) the relay alone delivers the job, once.
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { IMAGE_JOBS_STREAM } from "@luna/kit";
import { jetstreamManager } from "@nats-io/jetstream";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Subjects } from "../src/domain/job.js";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob } from "./helpers.js";

async function streamLastSeq(h: Harness): Promise<number> {
  const jsm = await jetstreamManager(h.nc);
  return (await jsm.streams.info(IMAGE_JOBS_STREAM)).state.last_seq;
}

/** The job's queue message row in image-job's outbox (its id is the Nats-Msg-Id). */
async function queueRow(db: pg.Client, jobId: string): Promise<{ id: string; published: boolean }> {
  const rows = (await db.query<{ id: string; payload: Buffer; published_at: Date | null }>(
    "SELECT id, payload, published_at FROM outbox_events WHERE subject = $1", [Subjects.jobQueue("flux1-schnell")])).rows;
  const row = rows.find((r) => r.payload.includes(Buffer.from(jobId)));
  if (!row) throw new Error(`no queue message row for ${jobId}`);
  return { id: row.id, published: row.published_at !== null };
}

describe.each([
  { fast: true, what: "with the fast path: published by the committing process and by the relay, one message" },
  { fast: false, what: "without the fast publish (a crash right after the commit): the relay alone delivers it" },
])("dispatch $what", ({ fast }) => {
  let h: Harness;
  let db: pg.Client;

  beforeAll(async () => {
    h = await startHarness({ sim: { stepMs: 1 }, image: { IMAGE_FAST_DISPATCH: String(fast), IMAGE_FAST_DISPATCH_MARK_DELAY: "20ms" } });
    db = new pg.Client({ connectionString: h.jobDatabaseUrl });
    await db.connect();
  });

  afterAll(async () => {
    await db?.end();
    await h?.close();
  });

  it("runs each job once and stores one queue message per job", async () => {
    const user = await h.newUser();
    const before = await streamLastSeq(h);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: `fast ${i}`, count: 1 });
      ids.push(job!.id);
      expect((await waitForJob(user.client, job!.id)).status).toBe(JobStatus.SUCCEEDED);
    }
    for (const id of ids) {
      expect(h.sim.stats().executions[id]).toBe(1);
      await eventually(async () => ((await queueRow(db, id)).published ? true : undefined), 5000, "queue row marked published");
    }
    expect(await streamLastSeq(h)).toBe(before + ids.length);
    await h.assertLedgerConsistent();
  });

  it("drops a copy the relay sends after the worker acked the job (the same message id, within the duplicate window)", async () => {
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "late copy", count: 1 });
    expect((await waitForJob(user.client, job!.id)).status).toBe(JobStatus.SUCCEEDED);
    const row = await eventually(async () => {
      const r = await queueRow(db, job!.id);
      return r.published ? r : undefined;
    }, 5000, "queue row marked published");
    const before = await streamLastSeq(h);
    // As if the relay had been held up and sent the row only now: unmark it and wake the relay.
    await db.query("UPDATE outbox_events SET published_at = NULL WHERE id = $1", [row.id]);
    await db.query("NOTIFY luna_outbox");
    await eventually(async () => ((await queueRow(db, job!.id)).published ? true : undefined), 5000, "the relay publishing the row again");
    expect(await streamLastSeq(h)).toBe(before);
    // Nothing reached the worker: no second execution, no message left waiting.
    await new Promise((r) => setTimeout(r, 200));
    expect(h.sim.stats().executions[job!.id]).toBe(1);
    const jsm = await jetstreamManager(h.nc);
    expect((await jsm.streams.info(IMAGE_JOBS_STREAM)).state.messages).toBe(0);
  });
});
