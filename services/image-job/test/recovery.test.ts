// A worker killed in the middle of a job (SIGKILL: no ack, no nak, no result): after the ack wait JetStream hands
// the job to another worker, which finds the prompt in ComfyUI by its id and collects it instead of generating it
// again. The job ends SUCCEEDED once, charged once, and the prompt executed once.
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  // 4 steps × 400 ms: the worker is killed while ComfyUI samples.
  h = await startHarness({ worker0: false, sim: { stepMs: 400 } });
});

afterAll(async () => {
  await h?.close();
});

describe("worker crash", () => {
  it("a new worker resumes the killed worker's job by prompt id: one execution, one charge", async () => {
    const child = await h.spawnWorker({ IMAGE_WORKER_ID: "doomed" });
    const alice = await h.newUser();
    const bob = await h.newUser();
    const { job: a } = await alice.client.submitJob({ workflowId: "flux-schnell", prompt: "resume me", count: 2 });
    const { job: b } = await bob.client.submitJob({ workflowId: "flux-schnell", prompt: "after the crash" });
    await eventually(() => (h.sim.stats().executions[a!.id] === 1 ? true : undefined), 20_000, "job a executing in ComfyUI");
    expect((await alice.client.getJob({ jobId: a!.id })).job!.status).toBe(JobStatus.RUNNING);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    await h.startWorker({ IMAGE_WORKER_ID: "rescuer" });
    const doneA = await waitForJob(alice.client, a!.id, undefined, 30_000);
    expect(doneA.status).toBe(JobStatus.SUCCEEDED);
    expect(doneA.images).toHaveLength(2);
    const doneB = await waitForJob(bob.client, b!.id, undefined, 30_000);
    expect(doneB.status).toBe(JobStatus.SUCCEEDED);

    const stats = h.sim.stats();
    expect(stats.executions[a!.id]).toBe(1);
    expect(stats.imagesByPrompt[a!.id]).toBe(2);
    expect(stats.executions[b!.id]).toBe(1);
    expect(await waitForNoHold(() => h.balance(alice.id))).toMatchObject({ balance: 900n });
    expect(await waitForNoHold(() => h.balance(bob.id))).toMatchObject({ balance: 950n });
    const images = await alice.client.listImages({});
    expect(images.images).toHaveLength(2);
    for (const img of images.images) expect((await fetch(new URL(img.url, h.baseUrl))).status).toBe(200);
    await h.assertLedgerConsistent();
  });
});
