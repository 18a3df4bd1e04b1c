// A worker told to stop (SIGTERM: a KEDA scale-down, a rollout) while ComfyUI runs a job: with
// IMAGE_WORKER_DRAIN_TIMEOUT it finishes that job (charged once, the image stored) and takes no new one; without it
// the job goes back to the queue at once and another worker finishes it.
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  // No worker at first; 4 steps × 300 ms of sampling, so a stop lands while ComfyUI works.
  h = await startHarness({ worker0: false, sim: { stepMs: 300 } });
});

afterAll(async () => {
  await h?.close();
});

async function runningInComfy(client: Awaited<ReturnType<Harness["newUser"]>>["client"], jobId: string): Promise<void> {
  await waitForJob(client, jobId, JobStatus.RUNNING);
  await eventually(() => (h.sim.stats().executions[jobId] === 1 ? true : undefined), 10_000, "prompt executing in ComfyUI");
}

describe("worker drain on stop", () => {
  it("with IMAGE_WORKER_DRAIN_TIMEOUT the running job finishes before stop() returns, and no new job is taken", async () => {
    const w = await h.startWorker({ IMAGE_WORKER_DRAIN_TIMEOUT: "20s" });
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "finish me" });
    await runningInComfy(user.client, job!.id);

    const stopping = w.stop();
    // Submitted while the worker drains: it must stay queued for the next worker.
    const { job: later } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "not for a stopping worker" });
    await stopping;

    // The drained worker published the result; image-job applies it (no other worker runs: nothing could redo it).
    expect((await waitForJob(user.client, job!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect(h.sim.stats().executions[job!.id]).toBe(1); // ran once, never handed back and redone
    expect((await user.client.getJob({ jobId: later!.id })).job!.status).toBe(JobStatus.QUEUED);
    expect(h.sim.stats().executions[later!.id]).toBeUndefined();

    const next = await h.startWorker();
    expect((await waitForJob(user.client, later!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 900n });
    await h.assertLedgerConsistent();
    await next.stop();
  });

  it("without a drain timeout the running job is handed back at once and another worker finishes it", async () => {
    const w = await h.startWorker();
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "hand me back" });
    await runningInComfy(user.client, job!.id);
    await w.stop();
    expect((await user.client.getJob({ jobId: job!.id })).job!.status).not.toBe(JobStatus.SUCCEEDED);

    const next = await h.startWorker();
    expect((await waitForJob(user.client, job!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 950n });
    await h.assertLedgerConsistent();
    await next.stop();
  });
});
