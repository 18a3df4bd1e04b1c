// RELIABILITY.md (issue 20 item 7): a finished image is not thrown away when its result comes late. NATS goes down
// while ComfyUI (the simulator) generates a job; ComfyUI finishes, the worker stores the image but cannot publish
// the result; image-job's sweeper fails the job at its deadline (deadline_exceeded), keeping its hold open for
// IMAGE_LATE_RESULT_WINDOW. NATS comes back, the worker's result arrives, and the job is recovered: SUCCEEDED with
// its image, charged once. And when that worker is killed before it could publish, the redelivery's StartJob answers
// SKIP "collect": the next worker takes the outputs from ComfyUI's history (never generating again).
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  // 4 steps × 400 ms in ComfyUI; the run deadline is 3 s after the start (+ 0.5 s grace for the sweeper).
  h = await startHarness({
    durableNats: true,
    sim: { stepMs: 400 },
    image: { IMAGE_RUN_DEADLINE_BASE: "3s", IMAGE_RUN_DEADLINE_PER_MP_STEP: "0ms", IMAGE_DEADLINE_GRACE: "500ms", IMAGE_LATE_RESULT_WINDOW: "2m" },
  });
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("a result that arrives after the sweeper failed the job at its deadline", () => {
  it("recovers the image ComfyUI produced while NATS was down: SUCCEEDED, charged once", async () => {
    const user = await h.newUser();
    const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "finished during the outage" });
    const id = job!.id;
    await eventually(() => (h.sim.stats().executions[id] === 1 ? true : undefined), 20_000, "the job executing in ComfyUI");

    await h.stopNats();
    let natsDown = true;
    try {
      await eventually(() => (h.sim.stats().imagesByPrompt[id] === 1 ? true : undefined), 20_000, "ComfyUI finished the prompt");
      const failed = await waitForJob(user.client, id, JobStatus.FAILED, 20_000);
      expect(failed.errorCode).toBe("deadline_exceeded");
      // Its hold is kept for a late result.
      await new Promise((r) => setTimeout(r, 1000));
      expect(await h.balance(user.id)).toMatchObject({ balance: 1000n, held: 50n });
      await h.startNats();
      natsDown = false;
    } finally {
      if (natsDown) await h.startNats();
    }

    const done = await waitForJob(user.client, id, JobStatus.SUCCEEDED, 30_000);
    expect(done.images).toHaveLength(1);
    expect(done.errorCode).toBe("");
    expect((await fetch(new URL(done.images[0]!.url, h.baseUrl))).status).toBe(200);
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 950n });
    // Generated once: recovered, not generated again.
    expect(h.sim.stats().executions[id]).toBe(1);
    await h.assertLedgerConsistent();
  }, 120_000);
});

describe("a worker killed after ComfyUI finished, before it could publish the result", () => {
  it("the redelivery collects the outputs from ComfyUI's history: SUCCEEDED, executed once, charged once", async () => {
    const k = await startHarness({
      worker0: false,
      durableNats: true,
      sim: { stepMs: 400 },
      image: { IMAGE_RUN_DEADLINE_BASE: "3s", IMAGE_RUN_DEADLINE_PER_MP_STEP: "0ms", IMAGE_DEADLINE_GRACE: "500ms", IMAGE_LATE_RESULT_WINDOW: "2m" },
    });
    try {
      const child = await k.spawnWorker({ IMAGE_WORKER_ID: "doomed" });
      const user = await k.newUser();
      const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "collect me" });
      const id = job!.id;
      await eventually(() => (k.sim.stats().executions[id] === 1 ? true : undefined), 20_000, "the job executing in ComfyUI");
      await k.stopNats();
      try {
        await eventually(() => (k.sim.stats().imagesByPrompt[id] === 1 ? true : undefined), 20_000, "ComfyUI finished the prompt");
        await new Promise((r) => setTimeout(r, 500)); // the worker stores the image and tries to publish
        child.kill("SIGKILL");
        await new Promise((r) => child.once("exit", r));
        expect((await waitForJob(user.client, id, JobStatus.FAILED, 20_000)).errorCode).toBe("deadline_exceeded");
      } finally {
        await k.startNats();
      }
      await k.startWorker({ IMAGE_WORKER_ID: "rescuer" });
      const done = await waitForJob(user.client, id, JobStatus.SUCCEEDED, 30_000);
      expect(done.images).toHaveLength(1);
      expect((await fetch(new URL(done.images[0]!.url, k.baseUrl))).status).toBe(200);
      expect(await waitForNoHold(() => k.balance(user.id))).toMatchObject({ balance: 950n });
      expect(k.sim.stats().executions[id]).toBe(1);
      await k.assertLedgerConsistent();
    } finally {
      await k.close();
    }
  }, 120_000);
});
