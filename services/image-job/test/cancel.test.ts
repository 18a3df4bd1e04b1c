// Cancelling: a queued job never reaches ComfyUI (the worker asks image-job before submitting); a running one is
// interrupted in ComfyUI by prompt id. Both release their credits, and the worker goes on with the next job.
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  // No worker at first: queued jobs stay queued until the test starts one. 4 steps × 300 ms of sampling.
  h = await startHarness({ worker0: false, sim: { stepMs: 300 } });
});

afterAll(async () => {
  await h?.close();
});

describe("cancel", () => {
  it("a queued job is cancelled before any worker takes it and never reaches ComfyUI", async () => {
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "never drawn" });
    expect(await h.balance(user.id)).toMatchObject({ held: 50n });
    const { job: cancelled } = await user.client.cancelJob({ jobId: job!.id });
    expect(cancelled!.status).toBe(JobStatus.CANCELLED);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n });

    // The job's queue message is still in NATS: a worker takes it, asks image-job, and drops it.
    const w = await h.startWorker();
    const { job: next } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "drawn" });
    expect((await waitForJob(user.client, next!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect(h.sim.stats().executions[job!.id]).toBeUndefined();
    expect(h.sim.stats().executions[next!.id]).toBe(1);
    // Cancelling a final job changes nothing.
    expect((await user.client.cancelJob({ jobId: next!.id })).job!.status).toBe(JobStatus.SUCCEEDED);
    await w.stop();
  });

  it("a running job is interrupted in ComfyUI, cancelled and released; the worker then takes the next job", async () => {
    const w = await h.startWorker();
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "interrupt me" });
    await waitForJob(user.client, job!.id, JobStatus.RUNNING);
    await eventually(() => (h.sim.stats().executions[job!.id] === 1 ? true : undefined), 10_000, "prompt executing in ComfyUI");
    const interruptedBefore = h.sim.stats().interrupted;
    const { job: cancelled } = await user.client.cancelJob({ jobId: job!.id });
    expect(cancelled!.status).toBe(JobStatus.CANCELLED);
    await eventually(() => (h.sim.stats().interrupted > interruptedBefore ? true : undefined), 10_000, "ComfyUI interrupted");
    expect(h.sim.stats().imagesByPrompt[job!.id] ?? 0).toBe(0);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n });
    expect((await user.client.getJob({ jobId: job!.id })).job!.status).toBe(JobStatus.CANCELLED);

    const { job: next } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "after the cancel" });
    expect((await waitForJob(user.client, next!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 950n });
    await h.assertLedgerConsistent();
    await w.stop();
  });
});
