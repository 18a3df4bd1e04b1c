// The worker holds its ComfyUI only while ComfyUI works for a job: the next job is pulled and started while the
// previous job's outputs are still being downloaded and its result published, yet ComfyUI never has two of our
// prompts at once, and a job never waits inside a worker while its ComfyUI is busy (it stays in the queue, where any
// worker can take it).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { IMAGE_JOBS_STREAM } from "@luna/kit";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { poolDurable } from "../src/domain/job.js";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  // 4 steps × 300 ms of sampling: long enough to look at the queue while a job runs.
  h = await startHarness({ sim: { stepMs: 300 } });
});

afterAll(async () => {
  await h?.close();
});

/** When ComfyUI received the prompt and when it finished it (its history, ms since the epoch). */
async function comfyTimes(jobId: string): Promise<{ received: number; succeeded: number }> {
  const res = await fetch(`${h.sim.url}/history/${jobId}`);
  const entry = ((await res.json()) as Record<string, { prompt: [number, string, unknown, { create_time: number }];
    status: { messages: Array<[string, { timestamp: number }]> } }>)[jobId]!;
  const success = entry.status.messages.find((m) => m[0] === "execution_success")!;
  return { received: entry.prompt[3].create_time, succeeded: success[1].timestamp };
}

describe("overlapping a job's tail with the next job", () => {
  it("while a job runs on ComfyUI, the next one stays in the queue, not in the worker", async () => {
    const jsm = await jetstreamManager(h.nc);
    const alice = await h.newUser();
    const bob = await h.newUser();
    const { job: a } = await alice.client.submitJob({ workflowId: "flux-schnell", prompt: "first" });
    const { job: b } = await bob.client.submitJob({ workflowId: "flux-schnell", prompt: "second" });
    await eventually(() => (h.sim.stats().executions[a!.id] === 1 ? true : undefined), 10_000, "job a executing");
    await new Promise((r) => setTimeout(r, 200));
    const info = await jsm.consumers.info(IMAGE_JOBS_STREAM, poolDurable("flux1-schnell"));
    expect(info.num_ack_pending).toBe(1); // a, on ComfyUI
    expect(info.num_pending).toBe(1); // b: free for any worker
    expect((await bob.client.getJob({ jobId: b!.id })).job!.status).toBe(JobStatus.QUEUED);
    expect((await waitForJob(alice.client, a!.id)).status).toBe(JobStatus.SUCCEEDED);
    expect((await waitForJob(bob.client, b!.id)).status).toBe(JobStatus.SUCCEEDED);
  });

  it("the next job reaches ComfyUI before the previous job's slow download ends, one prompt at a time", async () => {
    // Every /view answers after 1.5 s: the first job's tail is slow, its ComfyUI free long before.
    h.sim.setFaults({ viewDelayMs: 1500 });
    try {
      const alice = await h.newUser();
      const bob = await h.newUser();
      const { job: a } = await alice.client.submitJob({ workflowId: "flux-schnell", prompt: "slow tail" });
      await eventually(() => (h.sim.stats().executions[a!.id] === 1 ? true : undefined), 10_000, "job a executing");
      const { job: b } = await bob.client.submitJob({ workflowId: "flux-schnell", prompt: "next" });
      const doneA = await waitForJob(alice.client, a!.id, undefined, 30_000);
      const doneB = await waitForJob(bob.client, b!.id, undefined, 30_000);
      expect(doneA.status).toBe(JobStatus.SUCCEEDED);
      expect(doneB.status).toBe(JobStatus.SUCCEEDED);
      const ta = await comfyTimes(a!.id);
      const tb = await comfyTimes(b!.id);
      // One prompt at a time: b reached ComfyUI only once a was finished there...
      expect(tb.received).toBeGreaterThanOrEqual(ta.succeeded);
      // ...and long before a's result was applied (its outputs took 1.5 s to download).
      expect(tb.received).toBeLessThan(timestampDate(doneA.finishedAt!).getTime() - 1000);
      expect(h.sim.stats().executions[a!.id]).toBe(1);
      expect(h.sim.stats().executions[b!.id]).toBe(1);
      await h.assertLedgerConsistent();
    } finally {
      h.sim.setFaults({});
    }
  });
});
