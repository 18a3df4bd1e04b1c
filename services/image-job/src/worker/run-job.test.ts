// runJob against the ComfyUI simulator with an in-memory image store: first runs, resumes (never generating twice),
// lost prompts, refused graphs, cancel and deadline.
import { create } from "@bufbuild/protobuf";
import { JobSpecSchema } from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { CatalogWorkflowSchema, WorkflowParameter as P, type CatalogWorkflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { startComfySim, type ComfySim } from "@luna/sim-comfyui";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { ImageStore } from "../storage/store.js";
import { ComfyClient, ComfyUnavailableError } from "./comfy-client.js";
import { runJob, type RunJobOptions } from "./run-job.js";

const quiet = { info: () => undefined, warn: () => undefined, debug: () => undefined };

const GRAPH = {
  "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "flux1-schnell-fp8.safetensors" } },
  "2": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] } },
  "3": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] } },
  "4": { class_type: "EmptySD3LatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
  "5": { class_type: "KSampler", inputs: { model: ["1", 0], positive: ["2", 0], negative: ["3", 0], latent_image: ["4", 0],
    seed: 0, steps: 4, cfg: 1.0, sampler_name: "euler", scheduler: "simple", denoise: 1.0 } },
  "6": { class_type: "VAEDecode", inputs: { samples: ["5", 0], vae: ["1", 2] } },
  "7": { class_type: "SaveImage", inputs: { images: ["6", 0], filename_prefix: "luna" } },
};

function workflow(ckpt = "flux1-schnell-fp8.safetensors"): CatalogWorkflow {
  const graph = structuredClone(GRAPH);
  graph["1"].inputs.ckpt_name = ckpt;
  return create(CatalogWorkflowSchema, {
    enabled: true,
    workflow: { id: "tiny", modelId: "tiny-model", pricePerImage: 50n, parameters: {
      sizes: [{ width: 64, height: 64 }], defaultSize: { width: 64, height: 64 }, maxImages: 4, minSteps: 4, maxSteps: 4, defaultSteps: 4, maxPromptChars: 100 } },
    template: { graphJson: JSON.stringify(graph), bindings: [
      { parameter: P.PROMPT, nodeId: "2", inputName: "text" }, { parameter: P.SEED, nodeId: "5", inputName: "seed" },
      { parameter: P.WIDTH, nodeId: "4", inputName: "width" }, { parameter: P.HEIGHT, nodeId: "4", inputName: "height" },
      { parameter: P.BATCH_SIZE, nodeId: "4", inputName: "batch_size" }, { parameter: P.FILENAME_PREFIX, nodeId: "7", inputName: "filename_prefix" },
    ] },
  });
}

function memoryStore(): ImageStore & { objects: Map<string, Buffer> } {
  const objects = new Map<string, Buffer>();
  return {
    kind: "memory",
    objects,
    put: async (k, b) => void objects.set(k, b),
    get: async (k) => (objects.has(k) ? { body: objects.get(k)!, contentType: "image/png" } : undefined),
    delete: async (k) => void objects.delete(k),
    signedUrl: async (k) => `mem://${k}`,
  };
}

let sim: ComfySim;
let comfy: ComfyClient;
let seq = 0;

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 30 });
  comfy = new ComfyClient({ baseUrl: sim.url, clientId: "run-job-test", requestTimeoutMs: 5000, log: quiet, reconnectMs: 100 });
  comfy.connect();
});

beforeEach(() => sim.reset());

afterAll(async () => {
  comfy.close();
  await sim.close();
});

function options(over: Partial<RunJobOptions> & { count?: number; prompt?: string } = {}): RunJobOptions & { store: ReturnType<typeof memoryStore> } {
  const jobId = crypto.randomUUID();
  const store = memoryStore();
  return {
    spec: create(JobSpecSchema, { jobId, userId: "u1", workflowId: "tiny", modelId: "tiny-model", prompt: over.prompt ?? `p${++seq}`,
      width: 64, height: 64, count: over.count ?? 2, steps: 4, seed: BigInt(seq) }),
    workflow: workflow(),
    resumed: false,
    comfy,
    signal: new AbortController().signal,
    onProgress: () => undefined,
    log: quiet,
    settings: { historyPollMs: 50, maxResubmits: 1 },
    ...over,
    store,
  };
}

describe("runJob", () => {
  it("generates, downloads and stores every image under the job's keys", async () => {
    const progress: number[] = [];
    const o = options({ onProgress: (p) => progress.push(p) });
    const out = await runJob(o);
    expect(out).toMatchObject({ outcome: "SUCCEEDED" });
    if (out.outcome !== "SUCCEEDED") return;
    expect(out.images.map((i) => [i.index, i.storageKey, i.width])).toEqual([
      [0, `${o.spec.jobId}/0.png`, 64], [1, `${o.spec.jobId}/1.png`, 64]]);
    expect(o.store.objects.size).toBe(2);
    expect(progress.length).toBeGreaterThan(0);
    expect(sim.stats().executions[o.spec.jobId]).toBe(1);
  });

  it("resuming a job ComfyUI already finished collects it without generating again", async () => {
    const first = options();
    await runJob(first);
    const again = await runJob({ ...first, resumed: true, store: memoryStore() });
    expect(again).toMatchObject({ outcome: "SUCCEEDED" });
    expect(sim.stats().executions[first.spec.jobId]).toBe(1);
  });

  it("resuming a job that ComfyUI is still running follows it", async () => {
    const o = options();
    const abandoned = new AbortController();
    const firstRun = runJob({ ...o, signal: abandoned.signal });
    while (!sim.stats().executions[o.spec.jobId]) await new Promise((r) => setTimeout(r, 10));
    abandoned.abort("shutdown");
    expect(await firstRun).toEqual({ outcome: "ABANDONED" });
    expect(await runJob({ ...o, resumed: true })).toMatchObject({ outcome: "SUCCEEDED" });
    expect(sim.stats().executions[o.spec.jobId]).toBe(1);
  });

  it("resuming a job ComfyUI never saw submits it", async () => {
    const o = options({ resumed: true });
    expect(await runJob(o)).toMatchObject({ outcome: "SUCCEEDED" });
    expect(sim.stats().executions[o.spec.jobId]).toBe(1);
  });

  it("a submit that failed on the way back (timeout) but reached ComfyUI is not submitted again", async () => {
    class FlakyClient extends ComfyClient {
      failures = 1;
      override async submit(promptId: string, graph: unknown) {
        const r = await super.submit(promptId, graph);
        if (this.failures-- > 0) throw new ComfyUnavailableError("ComfyUI POST /prompt: The operation was aborted due to timeout");
        return r;
      }
    }
    const flaky = new FlakyClient({ baseUrl: sim.url, clientId: "flaky", requestTimeoutMs: 5000, log: quiet });
    const o = options({ comfy: flaky });
    expect(await runJob(o)).toMatchObject({ outcome: "SUCCEEDED" });
    expect(sim.stats().executions[o.spec.jobId]).toBe(1);
    expect(sim.stats().queued).toBe(1);
  });

  it("fails with ComfyUI's reason when the graph is refused, without retrying", async () => {
    const o = options({ workflow: workflow("missing.safetensors") });
    const out = await runJob(o);
    expect(out).toMatchObject({ outcome: "FAILED", code: "invalid_workflow" });
    if (out.outcome === "FAILED") expect(out.message).toContain("missing.safetensors");
    expect(sim.stats().rejected).toBe(1);
  });

  it("fails without ComfyUI when the workflow is gone or no longer accepts the job", async () => {
    expect(await runJob(options({ workflow: undefined }))).toMatchObject({ outcome: "FAILED", code: "invalid_workflow" });
    expect(await runJob(options({ count: 9 }))).toMatchObject({ outcome: "FAILED", code: "invalid_workflow" });
    expect(sim.stats().queued).toBe(0);
  });

  it("gives up on a prompt ComfyUI keeps losing", async () => {
    sim.setFaults({ crashOnNth: 1, crashDownMs: 50 });
    const o = options({ settings: { historyPollMs: 50, maxResubmits: 0 } });
    expect(await runJob(o)).toMatchObject({ outcome: "FAILED", code: "comfyui_lost" });
  });

  it("cancel interrupts the prompt; the deadline fails it", async () => {
    for (const [reason, expected] of [["cancelled", { outcome: "CANCELLED" }], ["deadline", { outcome: "FAILED", code: "deadline_exceeded" }]] as const) {
      const ac = new AbortController();
      const o = options({ signal: ac.signal });
      const run = runJob(o);
      while (!sim.stats().executions[o.spec.jobId]) await new Promise((r) => setTimeout(r, 10));
      ac.abort(reason);
      expect(await run).toMatchObject(expected);
      while (await comfy.queueState(o.spec.jobId)) await new Promise((r) => setTimeout(r, 10));
      expect(sim.stats().imagesByPrompt[o.spec.jobId] ?? 0).toBe(0);
    }
    expect(sim.stats().interrupted).toBe(2);
  });
});
