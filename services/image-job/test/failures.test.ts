// ComfyUI misbehaving: execution errors, a silent websocket, a crash that loses the queue, and a job that runs past
// its deadline. Every job ends exactly once, with the right charge (or none), and the ledger stays consistent.
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startHarness, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  h = await startHarness();
});

afterEach(() => {
  h.sim.reset();
});

afterAll(async () => {
  await h?.close();
});

describe("ComfyUI faults", () => {
  it("an execution error fails the job with ComfyUI's message and releases the credits", async () => {
    h.sim.setFaults({ failMarker: "EXPLODE", failMessage: "CUDA error: device-side assert triggered" });
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "please EXPLODE", count: 2 });
    const done = await waitForJob(user.client, job!.id);
    expect(done.status).toBe(JobStatus.FAILED);
    expect(done.errorCode).toBe("execution_error");
    expect(done.errorMessage).toContain("CUDA error: device-side assert triggered");
    expect(done.images).toHaveLength(0);
    expect(done.creditsCharged).toBe(0n);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n, held: 0n });
    expect(h.sim.stats().executions[job!.id]).toBe(1);
    await h.assertLedgerConsistent();
  });

  it("a silent websocket still completes the job through /history polling", async () => {
    h.sim.setFaults({ wsSilent: true });
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "quiet night" });
    const done = await waitForJob(user.client, job!.id);
    expect(done.status).toBe(JobStatus.SUCCEEDED);
    expect(done.images).toHaveLength(1);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 950n });
    expect(h.sim.stats().executions[job!.id]).toBe(1);
  });

  it("a ComfyUI crash that loses the queue: the prompt is submitted again and the job charged once", async () => {
    h.sim.setFaults({ crashOnNth: 1, crashDownMs: 300 });
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "phoenix", count: 1 });
    const done = await waitForJob(user.client, job!.id, undefined, 30_000);
    expect(done.status).toBe(JobStatus.SUCCEEDED);
    expect(h.sim.stats().restarts).toBe(1);
    // Lost once mid-sampling (no image), then generated once.
    expect(h.sim.stats().executions[job!.id]).toBe(2);
    expect(h.sim.stats().imagesByPrompt[job!.id]).toBe(1);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 950n });
    await h.assertLedgerConsistent();
  });

  it("a job running past its deadline is interrupted in ComfyUI, failed and released", async () => {
    // A deadline of ~1 s (base only) against 4 steps × 1 s of sampling.
    const slow = await startHarness({ image: { IMAGE_RUN_DEADLINE_BASE: "1s", IMAGE_RUN_DEADLINE_PER_MP_STEP: "0ms" }, sim: { stepMs: 1000 } });
    try {
      const u = await slow.newUser();
      const { job } = await u.client.submitJob({ workflowId: "flux-schnell", prompt: "slow" });
      const done = await waitForJob(u.client, job!.id, undefined, 20_000);
      expect(done.status).toBe(JobStatus.FAILED);
      expect(done.errorCode).toBe("deadline_exceeded");
      expect(await waitForNoHold(() => slow.balance(u.id))).toMatchObject({ balance: 1000n });
      expect(slow.sim.stats().interrupted).toBe(1);
      await slow.assertLedgerConsistent();
    } finally {
      await slow.close();
    }
  });
});
