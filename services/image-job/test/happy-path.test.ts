// End to end on the real platform: submit → watch (queued, running with progress, succeeded) → PNG fetched from its
// signed URL; credits committed for the images produced, usage recorded once, the prompt executed once.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { publishEvent } from "@luna/kit";
import { jetstream } from "@nats-io/jetstream";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { JobStatus, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, PNG_SIGNATURE, startHarness, type Harness } from "./harness.js";
import { waitForJob } from "./helpers.js";

let h: Harness;
let worker: Promise<unknown> | undefined;
/** Starts the in-process worker once (the first test starts it only when its watch is open). */
const ensureWorker = (): Promise<unknown> => (worker ??= h.startWorker());

beforeAll(async () => {
  // Slow enough sampling (4 steps × 60 ms) that RUNNING and progress are observable.
  h = await startHarness({ sim: { stepMs: 60 }, worker0: false });
});

afterAll(async () => {
  await h?.close();
});

describe("happy path", () => {
  it("submits, watches and serves the PNGs; charges exactly the images produced", async () => {
    const usage: UsageRecorded[] = [];
    const sub = h.nc.subscribe("luna.events.usage.recorded", { callback: (_e, m) => { usage.push(fromBinary(UsageRecordedSchema, m.data)); } });
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "a lighthouse at dusk", count: 2, seed: 42n,
      idempotencyKey: "happy-1" });
    expect(job!.status).toBe(JobStatus.QUEUED);
    expect(job!.creditsReserved).toBe(100n);
    expect(job!.seed).toBe(42n);
    expect(job!.width).toBe(1024);
    expect(await h.balance(user.id)).toMatchObject({ balance: 1000n, held: 100n });

    const seen: JobStatus[] = [];
    let progress = 0;
    let last: Job | undefined;
    for await (const update of user.client.watchJob({ jobId: job!.id })) {
      // No worker runs until the watch is open: dispatch takes milliseconds, so otherwise the job could be RUNNING
      // before the stream's first read.
      void ensureWorker();
      if (seen[seen.length - 1] !== update.job!.status) seen.push(update.job!.status);
      progress = Math.max(progress, update.progressPercent);
      last = update.job;
    }
    await ensureWorker();
    expect(last!.status).toBe(JobStatus.SUCCEEDED);
    expect(seen[seen.length - 1]).toBe(JobStatus.SUCCEEDED);
    expect(seen[0]).toBe(JobStatus.QUEUED);
    expect(seen).toContain(JobStatus.RUNNING);
    expect(seen).not.toContain(JobStatus.FAILED);
    expect(progress).toBeGreaterThan(0);
    expect(last!.images).toHaveLength(2);
    expect(last!.creditsCharged).toBe(100n);

    for (const img of last!.images) {
      // An opaque key (the job's folder): no user id, no doubled images/ segment.
      expect(img.url).toMatch(new RegExp(`^/images/${job!.id}/[01]\\.png\\?exp=\\d+&sig=[A-Za-z0-9_-]{43}$`));
      expect(img.url).not.toContain(user.id);
      const res = await fetch(`${h.baseUrl}${img.url}`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("image/png");
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(bytes.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
      expect(bytes.length).toBe(Number(img.sizeBytes));
      expect(bytes.readUInt32BE(16)).toBe(1024);
      expect(bytes.readUInt32BE(20)).toBe(1024);
      expect(img.width).toBe(1024);
      expect(img.prompt).toBe("a lighthouse at dusk");
      expect(img.seed).toBe(42n);
    }
    expect(new Set(last!.images.map((i) => i.index))).toEqual(new Set([0, 1]));
    expect(h.sim.stats().executions[job!.id]).toBe(1);

    // Credits: committed once for 2 images × 50; nothing left held.
    await eventually(async () => {
      const b = await h.balance(user.id);
      return b.held === 0n ? b : undefined;
    }, 10_000, "hold settled");
    expect(await h.balance(user.id)).toMatchObject({ balance: 900n, held: 0n });
    await eventually(() => (usage.length > 0 ? true : undefined), 5000, "usage.recorded");
    expect(usage).toHaveLength(1);
    expect(usage[0]).toMatchObject({ userId: user.id, modelId: "flux1-schnell", feature: "image", images: 2n, creditsCharged: 100n, reference: job!.id });
    sub.unsubscribe();

    // The same idempotency key returns the same job, without a second hold or run.
    const again = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "a lighthouse at dusk", count: 2, seed: 42n, idempotencyKey: "happy-1" });
    expect(again.job!.id).toBe(job!.id);
    expect(again.job!.status).toBe(JobStatus.SUCCEEDED);
    expect(await h.balance(user.id)).toMatchObject({ balance: 900n, held: 0n });

    // Gallery and history.
    const gallery = await user.client.listImages({});
    expect(gallery.images.map((i) => i.jobId)).toEqual([job!.id, job!.id]);
    const jobs = await user.client.listJobs({});
    expect(jobs.jobs.map((j) => j.id)).toEqual([job!.id]);
    const got = await user.client.getJob({ jobId: job!.id });
    expect(got.job!.images).toHaveLength(2);
    await h.assertLedgerConsistent();
  });

  it("forgets a deleted user's jobs and images (user.deleted)", async () => {
    await ensureWorker();
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "soon gone" });
    const done = await waitForJob(user.client, job!.id);
    const url = new URL(done.images[0]!.url, h.baseUrl);
    expect((await fetch(url)).status).toBe(200);
    const { job: open } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "still queued" });
    const ev = create(UserDeletedSchema, { meta: { eventId: crypto.randomUUID(), subjectId: user.id }, userId: user.id });
    await publishEvent(jetstream(h.nc), "luna.events.user.deleted", toBinary(UserDeletedSchema, ev), { msgId: ev.meta!.eventId });
    await eventually(async () => ((await user.client.listJobs({})).jobs.length === 0 ? true : undefined), 20_000, "jobs deleted");
    expect((await fetch(url)).status).toBe(404);
    expect((await user.client.listImages({})).images).toHaveLength(0);
    expect(h.sim.stats().executions[open!.id] ?? 0).toBeLessThanOrEqual(1);
    expect(await h.balance(user.id)).toMatchObject({ held: 0n });
    await h.assertLedgerConsistent();
  });
});
