import { describe, expect, it, vi } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { createRouterTransport, ConnectError, Code } from "@connectrpc/connect";
import type { NatsConnection, Status } from "@nats-io/nats-core";
import { ModelChangedSchema } from "@luna/contracts/luna/events/v1/model_events_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import {
  CatalogModelSchema,
  CatalogWorkflowSchema,
  ModelKind,
  ModelStatus,
  WorkflowParameter as P,
  WorkflowParametersSchema,
  WorkflowTemplateSchema,
  type CatalogModel,
  type CatalogWorkflow,
  type WorkflowParameters,
  type WorkflowTemplate,
} from "@luna/contracts/luna/models/v1/models_pb.js";
import {
  MAX_SEED,
  MODEL_CHANGED_SUBJECT,
  WorkflowParamError,
  createCatalogCache,
  effectiveWorkflowStatus,
  isServable,
  renderWorkflow,
  resolveImageJobParams,
  resolveReplicaUrls,
  validateWorkflowDefinition,
  type ComfyGraph,
} from "./catalog.js";

// An SDXL-like graph with a style LoRA between the checkpoint and its consumers.
const GRAPH = {
  "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sdxl.safetensors" } },
  "2": { class_type: "LoraLoader", inputs: { model: ["1", 0], clip: ["1", 1], lora_name: "x.safetensors", strength_model: 1, strength_clip: 1 } },
  "3": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["2", 1] } },
  "4": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["2", 1] } },
  "5": { class_type: "EmptyLatentImage", inputs: { width: 1024, height: 1024, batch_size: 1 } },
  "6": { class_type: "KSampler", inputs: { model: ["2", 0], positive: ["3", 0], negative: ["4", 0], latent_image: ["5", 0], seed: 0, steps: 30, cfg: 7, sampler_name: "euler", scheduler: "normal", denoise: 1 } },
  "7": { class_type: "VAEDecode", inputs: { samples: ["6", 0], vae: ["1", 2] } },
  "8": { class_type: "SaveImage", inputs: { images: ["7", 0], filename_prefix: "luna" } },
};

/** A message's fields, for partial overrides of a message init. */
type Fields<T> = Partial<Omit<T, "$typeName" | "$unknown">>;

function params(over: Fields<WorkflowParameters> = {}): WorkflowParameters {
  return create(WorkflowParametersSchema, {
    sizes: [{ width: 1024, height: 1024 }, { width: 832, height: 1216 }],
    defaultSize: { width: 1024, height: 1024 },
    maxImages: 4,
    minSteps: 10,
    maxSteps: 40,
    defaultSteps: 30,
    styles: [{ id: "pixel-art", displayName: "Pixel art", description: "" }],
    defaultStyleId: "",
    maxPromptChars: 500,
    ...over,
  });
}

function template(over: Fields<WorkflowTemplate> = {}, graph: unknown = GRAPH): WorkflowTemplate {
  return create(WorkflowTemplateSchema, {
    graphJson: JSON.stringify(graph),
    bindings: [
      { parameter: P.PROMPT, nodeId: "3", inputName: "text" },
      { parameter: P.NEGATIVE_PROMPT, nodeId: "4", inputName: "text" },
      { parameter: P.SEED, nodeId: "6", inputName: "seed" },
      { parameter: P.STEPS, nodeId: "6", inputName: "steps" },
      { parameter: P.WIDTH, nodeId: "5", inputName: "width" },
      { parameter: P.HEIGHT, nodeId: "5", inputName: "height" },
      { parameter: P.BATCH_SIZE, nodeId: "5", inputName: "batch_size" },
      { parameter: P.LORA_NAME, nodeId: "2", inputName: "lora_name" },
      { parameter: P.LORA_STRENGTH_MODEL, nodeId: "2", inputName: "strength_model" },
      { parameter: P.LORA_STRENGTH_CLIP, nodeId: "2", inputName: "strength_clip" },
      { parameter: P.FILENAME_PREFIX, nodeId: "8", inputName: "filename_prefix" },
    ],
    styleLoras: [{ styleId: "pixel-art", loraName: "pixel-art-xl.safetensors", strengthModel: 0.9, strengthClip: 0.8 }],
    ...over,
  });
}

function workflow(p = params(), t = template(), over: Fields<CatalogWorkflow> = {}): CatalogWorkflow {
  return create(CatalogWorkflowSchema, {
    workflow: { id: "sdxl", modelId: "sdxl-base", parameters: p, version: 1n, status: ModelStatus.AVAILABLE },
    template: t,
    enabled: true,
    ...over,
  });
}

function fields(p: WorkflowParameters | undefined, t: WorkflowTemplate | undefined): string[] {
  return validateWorkflowDefinition(p, t).map((x) => x.field);
}

describe("validateWorkflowDefinition", () => {
  it("accepts a complete definition", () => {
    expect(validateWorkflowDefinition(params(), template())).toEqual([]);
  });

  it.each<[string, Fields<WorkflowParameters>, string]>([
    ["no sizes", { sizes: [] }, "parameters.sizes"],
    ["a width not a multiple of 8", { sizes: [{ width: 1020, height: 1024 }] as never }, "parameters.sizes[0].width"],
    ["a height too small", { sizes: [{ width: 1024, height: 32 }] as never, defaultSize: { width: 1024, height: 32 } as never }, "parameters.sizes[0].height"],
    ["a duplicate size", { sizes: [{ width: 1024, height: 1024 }, { width: 1024, height: 1024 }] as never }, "parameters.sizes[1]"],
    ["a default size not offered", { defaultSize: { width: 512, height: 512 } as never }, "parameters.default_size"],
    ["no default size", { defaultSize: undefined }, "parameters.default_size"],
    ["max_images 0", { maxImages: 0 }, "parameters.max_images"],
    ["max_images too high", { maxImages: 1000 }, "parameters.max_images"],
    ["min_steps 0", { minSteps: 0 }, "parameters.min_steps"],
    ["max_steps below min_steps", { maxSteps: 5 }, "parameters.max_steps"],
    ["default_steps out of range", { defaultSteps: 45 }, "parameters.default_steps"],
    ["max_prompt_chars 0", { maxPromptChars: 0 }, "parameters.max_prompt_chars"],
    ["a bad style id", { styles: [{ id: "Pixel Art", displayName: "x", description: "" }] as never }, "parameters.styles[0].id"],
    ["a style without a name", { styles: [{ id: "pixel-art", displayName: " ", description: "" }] as never }, "parameters.styles[0].display_name"],
    ["an unknown default style", { defaultStyleId: "nope" }, "parameters.default_style_id"],
  ])("reports %s", (_name, over, field) => {
    expect(fields(params(over), template())).toContain(field);
  });

  it("reports a duplicate style id", () => {
    const p = params({ styles: [{ id: "a", displayName: "A" }, { id: "a", displayName: "A2" }] as never });
    expect(fields(p, template({ styleLoras: [{ styleId: "a", loraName: "a.safetensors", strengthModel: 1, strengthClip: 1 }] as never }))).toContain("parameters.styles[1].id");
  });

  it("requires parameters and a template", () => {
    expect(fields(undefined, template())).toContain("parameters");
    expect(fields(params(), undefined)).toContain("template");
  });

  it.each<[string, string, RegExp]>([
    ["empty", "", /is required/],
    ["not JSON", "{nope", /not valid JSON/],
    ["an array", "[]", /API-format graph/],
    ["empty graph", "{}", /no nodes/],
    ["a node without class_type", JSON.stringify({ "1": { inputs: {} } }), /no class_type/],
    ["a node without inputs", JSON.stringify({ "1": { class_type: "X" } }), /no inputs object/],
    ["a link to a missing node", JSON.stringify({ ...GRAPH, "7": { class_type: "VAEDecode", inputs: { samples: ["99", 0], vae: ["1", 2] } } }), /missing node "99"/],
  ])("rejects a graph that is %s", (_name, graphJson, message) => {
    const problems = validateWorkflowDefinition(params(), template({ graphJson }));
    expect(problems.find((p) => p.field === "template.graph_json")?.message).toMatch(message);
  });

  it("rejects an oversized graph", () => {
    const big = JSON.stringify({ ...GRAPH, "9": { class_type: "Note", inputs: { text: "x".repeat(300_000) } } });
    expect(validateWorkflowDefinition(params(), template({ graphJson: big }))[0]?.message).toMatch(/longer than/);
  });

  const bindingsWith = (i: number, over: object) => {
    const t = template();
    t.bindings[i] = { ...t.bindings[i]!, ...over };
    return t;
  };

  it.each<[string, WorkflowTemplate, string, RegExp]>([
    ["an unknown parameter", bindingsWith(0, { parameter: 99 }), "template.bindings[0].parameter", /known parameter/],
    ["a missing node", bindingsWith(0, { nodeId: "42" }), "template.bindings[0].node_id", /not in the graph/],
    ["a missing input", bindingsWith(0, { inputName: "txt" }), "template.bindings[0].input_name", /no input "txt"/],
    ["a link input", bindingsWith(0, { inputName: "clip" }), "template.bindings[0].input_name", /is a link/],
    ["a type mismatch", bindingsWith(2, { nodeId: "6", inputName: "sampler_name" }), "template.bindings[2].input_name", /default integer for SEED/],
    ["an input bound twice", bindingsWith(1, { nodeId: "3" }), "template.bindings[1]", /bound twice/],
  ])("rejects a binding with %s", (_name, t, field, message) => {
    const problems = validateWorkflowDefinition(params(), t);
    expect(problems.find((p) => p.field === field)?.message).toMatch(message);
  });

  it.each([P.PROMPT, P.SEED, P.WIDTH, P.HEIGHT, P.BATCH_SIZE])("requires parameter %s to be bound", (param) => {
    const t = template();
    t.bindings = t.bindings.filter((b) => b.parameter !== param);
    expect(validateWorkflowDefinition(params(), t).map((p) => p.message)).toContain(`must bind ${P[param]}`);
  });

  it("requires STEPS to be bound when jobs may choose steps, not when they are fixed", () => {
    const t = template();
    t.bindings = t.bindings.filter((b) => b.parameter !== P.STEPS);
    expect(validateWorkflowDefinition(params(), t).map((p) => p.message).join()).toMatch(/must bind STEPS/);
    expect(validateWorkflowDefinition(params({ minSteps: 30, maxSteps: 30, defaultSteps: 30 }), t)).toEqual([]);
  });

  it("requires LORA_NAME when styles are offered and refuses LoRA bindings without styles", () => {
    const t = template();
    t.bindings = t.bindings.filter((b) => b.parameter !== P.LORA_NAME);
    expect(validateWorkflowDefinition(params(), t).map((p) => p.message)).toContain("must bind LORA_NAME (parameters offer styles)");
    const noStyles = validateWorkflowDefinition(params({ styles: [] }), template({ styleLoras: [] }));
    expect(noStyles.map((p) => p.message)).toContain("binds LORA_NAME but parameters offer no styles");
  });

  it("requires a style node that can be left out when there is no default style", () => {
    const graph = { ...GRAPH, "2": { ...GRAPH["2"], class_type: "CustomLoraStack" } };
    const problems = validateWorkflowDefinition(params(), template({}, graph));
    expect(problems.find((p) => p.field === "template.bindings[7].node_id")?.message).toMatch(/LoraLoader/);
    expect(validateWorkflowDefinition(params({ defaultStyleId: "pixel-art" }), template({}, graph))).toEqual([]);
  });

  it("rejects undeclared {{placeholders}} but accepts them where a binding declares them", () => {
    const graph = { ...GRAPH, "4": { class_type: "CLIPTextEncode", inputs: { text: "{{negative}}", clip: ["2", 1] } } };
    const t = template({}, graph);
    expect(validateWorkflowDefinition(params(), t)).toEqual([]); // node 4 text is bound (NEGATIVE_PROMPT)
    t.bindings = t.bindings.filter((b) => b.parameter !== P.NEGATIVE_PROMPT);
    expect(validateWorkflowDefinition(params(), t)[0]?.message).toMatch(/placeholder "\{\{negative\}\}" that no binding declares/);
  });

  it.each<[string, object, string]>([
    ["an unknown style", { styleId: "nope" }, "template.style_loras[0].style_id"],
    ["a path-like LoRA name", { loraName: "../../etc/passwd" }, "template.style_loras[0].lora_name"],
    ["an absolute LoRA name", { loraName: "/models/x.safetensors" }, "template.style_loras[0].lora_name"],
    ["an empty LoRA name", { loraName: "" }, "template.style_loras[0].lora_name"],
    ["a huge strength", { strengthModel: 100 }, "template.style_loras[0].strength_model"],
    ["a NaN strength", { strengthClip: Number.NaN }, "template.style_loras[0].strength_clip"],
  ])("rejects a style LoRA with %s", (_name, over, field) => {
    const t = template();
    t.styleLoras[0] = { ...t.styleLoras[0]!, ...over };
    expect(fields(params(), t)).toContain(field);
  });

  it("requires one LoRA per style", () => {
    expect(validateWorkflowDefinition(params(), template({ styleLoras: [] })).map((p) => p.message)).toContain('style "pixel-art" has no LoRA');
    const two = template();
    two.styleLoras.push({ ...two.styleLoras[0]! });
    expect(fields(params(), two)).toContain("template.style_loras[1].style_id");
  });
});

describe("resolveImageJobParams", () => {
  const wf = workflow();

  it("fills in defaults", () => {
    expect(resolveImageJobParams(wf, { prompt: "a cat" }, { randomSeed: () => 7 })).toEqual({
      prompt: "a cat", negativePrompt: "", width: 1024, height: 1024, count: 1, steps: 30, seed: 7, styleId: "", filenamePrefix: "luna",
    });
  });

  it("keeps valid choices", () => {
    const r = resolveImageJobParams(wf, { prompt: "a cat", negativePrompt: "blurry", width: 832, height: 1216, count: 4, steps: 10, seed: 12345n, styleId: "pixel-art", filenamePrefix: "luna/job-1" });
    expect(r).toMatchObject({ width: 832, height: 1216, count: 4, steps: 10, seed: 12345, styleId: "pixel-art", filenamePrefix: "luna/job-1" });
  });

  it.each<[string, object, string]>([
    ["an empty prompt", { prompt: "   " }, "prompt"],
    ["a prompt over the limit", { prompt: "x".repeat(501) }, "prompt"],
    ["a NUL in the prompt", { prompt: "a\u0000b" }, "prompt"],
    ["a size not offered", { width: 512, height: 512 }, "width"],
    ["a height that does not match the width", { width: 1024, height: 1216 }, "height"],
    ["a zero count", { count: -1 }, "count"],
    ["too many images", { count: 5 }, "count"],
    ["a fractional count", { count: 1.5 }, "count"],
    ["too few steps", { steps: 5 }, "steps"],
    ["a negative seed", { seed: -1 }, "seed"],
    ["a seed above 2^53-1", { seed: BigInt(MAX_SEED) + 1n }, "seed"],
    ["a fractional seed", { seed: 1.5 }, "seed"],
    ["an unknown style", { styleId: "nope" }, "style_id"],
    ["a path-like filename prefix", { filenamePrefix: "../etc" }, "filename_prefix"],
    ["an absolute filename prefix", { filenamePrefix: "/tmp/x" }, "filename_prefix"],
  ])("rejects %s", (_name, over, field) => {
    const err = (() => {
      try {
        resolveImageJobParams(wf, { prompt: "a cat", ...over });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(WorkflowParamError);
    expect((err as WorkflowParamError).field).toBe(field);
  });

  it("rejects a negative prompt where the template does not bind one", () => {
    const t = template();
    t.bindings = t.bindings.filter((b) => b.parameter !== P.NEGATIVE_PROMPT);
    expect(() => resolveImageJobParams(workflow(params(), t), { prompt: "x", negativePrompt: "y" })).toThrow(/negative_prompt: is not supported/);
  });

  it("explains fixed steps", () => {
    const fixed = workflow(params({ minSteps: 4, maxSteps: 4, defaultSteps: 4 }));
    expect(() => resolveImageJobParams(fixed, { prompt: "x", steps: 8 })).toThrow("steps: is fixed at 4 for this workflow");
  });

  it("draws random seeds within the exact-integer range", () => {
    for (let i = 0; i < 100; i++) {
      const { seed } = resolveImageJobParams(wf, { prompt: "x" });
      expect(Number.isSafeInteger(seed) && seed >= 0).toBe(true);
    }
  });
});

describe("renderWorkflow", () => {
  const wf = workflow();
  const base = { prompt: "a cat", seed: 42 };

  it("assigns typed values to the bound inputs", () => {
    const g = renderWorkflow(wf, { ...base, negativePrompt: "blurry", width: 832, height: 1216, count: 2, steps: 20, styleId: "pixel-art", filenamePrefix: "luna/j1" });
    expect(g["3"]!.inputs.text).toBe("a cat");
    expect(g["4"]!.inputs.text).toBe("blurry");
    expect(g["5"]!.inputs).toMatchObject({ width: 832, height: 1216, batch_size: 2 });
    expect(g["6"]!.inputs).toMatchObject({ seed: 42, steps: 20, cfg: 7 });
    expect(g["2"]!.inputs).toMatchObject({ lora_name: "pixel-art-xl.safetensors", strength_model: 0.9, strength_clip: 0.8 });
    expect(g["8"]!.inputs.filename_prefix).toBe("luna/j1");
  });

  it("never lets prompt text change the graph's structure", () => {
    const evil = '", "class_type": "Evil"}, "99": {"class_type": "Evil", "inputs": {}}, "x": {"y": "{{prompt}}';
    const g = renderWorkflow(wf, { ...base, prompt: evil });
    expect(Object.keys(g).sort()).toEqual(["1", "3", "4", "5", "6", "7", "8"]);
    expect(g["3"]!.inputs.text).toBe(evil);
    expect(g["3"]!.class_type).toBe("CLIPTextEncode");
    expect((JSON.parse(JSON.stringify(g)) as ComfyGraph)["3"]!.inputs.text).toBe(evil);
  });

  it("leaves the LoRA node out and reconnects its consumers when no style is chosen", () => {
    const g = renderWorkflow(wf, base);
    expect(g["2"]).toBeUndefined();
    expect(g["3"]!.inputs.clip).toEqual(["1", 1]);
    expect(g["4"]!.inputs.clip).toEqual(["1", 1]);
    expect(g["6"]!.inputs.model).toEqual(["1", 0]);
    // Every link still points at an existing node.
    for (const node of Object.values(g)) {
      for (const v of Object.values(node.inputs)) if (Array.isArray(v)) expect(g[v[0] as string]).toBeDefined();
    }
  });

  it("uses the default style when the job chooses none", () => {
    const g = renderWorkflow(workflow(params({ defaultStyleId: "pixel-art" })), base);
    expect(g["2"]!.inputs.lora_name).toBe("pixel-art-xl.safetensors");
  });

  it("renders the same graph for the same resolved parameters and never changes the template", () => {
    const resolved = resolveImageJobParams(wf, { prompt: "a dog" });
    expect(renderWorkflow(wf, resolved)).toEqual(renderWorkflow(wf, resolved));
    renderWorkflow(wf, { ...base, styleId: "pixel-art" });
    expect(JSON.parse(wf.template!.graphJson)).toEqual(GRAPH);
  });

  it("checks the parameters it renders", () => {
    expect(() => renderWorkflow(wf, { prompt: "" })).toThrow(WorkflowParamError);
  });
});

describe("status helpers", () => {
  it("serves AVAILABLE and DEGRADED only", () => {
    expect([ModelStatus.AVAILABLE, ModelStatus.DEGRADED, ModelStatus.STANDBY, ModelStatus.OFFLINE, ModelStatus.DISABLED, ModelStatus.UNSPECIFIED].map(isServable)).toEqual([true, true, true, false, false, false]);
  });

  it("combines a workflow's switch with its model's status", () => {
    const model = { id: "m", status: ModelStatus.DEGRADED, statusReason: "1 of 2" };
    expect(effectiveWorkflowStatus({ enabled: true, disabledReason: "" }, model)).toEqual({ status: ModelStatus.DEGRADED, reason: "1 of 2" });
    expect(effectiveWorkflowStatus({ enabled: false, disabledReason: "broken" }, model)).toEqual({ status: ModelStatus.DISABLED, reason: "broken" });
    expect(effectiveWorkflowStatus({ enabled: true, disabledReason: "" }, { ...model, status: ModelStatus.DISABLED, statusReason: "gpu swap" }).reason).toBe("model m disabled: gpu swap");
    expect(effectiveWorkflowStatus({ enabled: true, disabledReason: "" }, undefined).status).toBe(ModelStatus.OFFLINE);
  });
});

describe("resolveReplicaUrls", () => {
  it("adds one replica per address of the resolve_url host, deduplicated and sorted", async () => {
    const lookup = vi.fn(async () => ["10.0.0.2", "10.0.0.1", "fd00::1"]);
    const urls = await resolveReplicaUrls({ baseUrls: ["http://10.0.0.1:8000/"], resolveUrl: "http://vllm.luna.svc:8000" }, { lookup });
    expect(lookup).toHaveBeenCalledWith("vllm.luna.svc");
    expect(urls).toEqual(["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://[fd00::1]:8000"]);
  });

  it("contributes no replica when the lookup fails", async () => {
    const urls = await resolveReplicaUrls({ baseUrls: ["http://a:1"], resolveUrl: "http://gone:8000" }, { lookup: async () => { throw new Error("ENOTFOUND"); } });
    expect(urls).toEqual(["http://a:1"]);
  });
});

// ------------------------------------------------------------------------------------------------------------
// The cache, against an in-memory registry and a fake NATS connection.

function model(id: string, version: bigint, status = ModelStatus.AVAILABLE, over: Fields<NonNullable<CatalogModel["model"]>> = {}): CatalogModel {
  return create(CatalogModelSchema, {
    model: { id, displayName: id, kind: ModelKind.TEXT, version, status, sortOrder: 0, ...over },
    upstream: { modelId: id, baseUrls: [`http://${id}:8000`] },
  });
}

function fakeNats() {
  const subs = new Map<string, (err: Error | null, msg: { data: Uint8Array }) => void>();
  let pushStatus: ((s: Status) => void) | undefined;
  const queue: Status[] = [];
  const nc = {
    subscribe(subject: string, opts: { callback: (err: Error | null, msg: { data: Uint8Array }) => void }) {
      subs.set(subject, opts.callback);
      let closed = false;
      return { unsubscribe: () => { closed = true; subs.delete(subject); }, isClosed: () => closed };
    },
    status() {
      return {
        async *[Symbol.asyncIterator]() {
          for (;;) {
            const next = queue.shift() ?? (await new Promise<Status>((r) => (pushStatus = r)));
            yield next;
          }
        },
      };
    },
  };
  return {
    nc: nc as unknown as NatsConnection,
    subscribed: (subject: string) => subs.has(subject),
    publish(entry: { case: "model"; value: CatalogModel } | { case: "workflow"; value: CatalogWorkflow }) {
      const data = toBinary(ModelChangedSchema, create(ModelChangedSchema, { meta: { eventId: "e" }, entry }));
      subs.get(MODEL_CHANGED_SUBJECT)?.(null, { data });
    },
    publishRaw(data: Uint8Array) {
      subs.get(MODEL_CHANGED_SUBJECT)?.(null, { data });
    },
    status(s: Status) {
      if (pushStatus) {
        const p = pushStatus;
        pushStatus = undefined;
        p(s);
      } else queue.push(s);
    },
  };
}

const silent = { info() {}, warn() {}, error() {}, debug() {} };

function registry(snapshot: () => { models: CatalogModel[]; workflows: CatalogWorkflow[] } | Promise<{ models: CatalogModel[]; workflows: CatalogWorkflow[] }>) {
  const calls = { count: 0 };
  const transport = createRouterTransport((router) => {
    router.service(ModelUpstreamService, {
      async getCatalogSnapshot() {
        calls.count++;
        return snapshot();
      },
      getModelUpstream() {
        throw new ConnectError("unused", Code.Unimplemented);
      },
    });
  });
  return { transport, calls };
}

describe("createCatalogCache", () => {
  it("loads the catalog on start and answers from memory", async () => {
    const wf = workflow();
    const { transport, calls } = registry(() => ({ models: [model("b", 1n, ModelStatus.AVAILABLE, { sortOrder: 2 }), model("a", 1n, ModelStatus.OFFLINE, { sortOrder: 1, kind: ModelKind.IMAGE })], workflows: [wf] }));
    const nats = fakeNats();
    const cache = createCatalogCache({ transport, nc: nats.nc, log: silent, resyncIntervalMs: 0 });
    await cache.start();
    expect(cache.loaded).toBe(true);
    await expect(cache.readiness.check()).resolves.toBeUndefined();
    expect(cache.listModels().map((m) => m.id)).toEqual(["a", "b"]);
    expect(cache.listModels(ModelKind.TEXT).map((m) => m.id)).toEqual(["b"]);
    expect(cache.getModel("a")?.status).toBe(ModelStatus.OFFLINE);
    expect(cache.upstreams("b")?.baseUrls).toEqual(["http://b:8000"]);
    expect(cache.getWorkflow("sdxl")?.template?.graphJson).toBe(wf.template!.graphJson);
    expect(cache.getModel("zzz")).toBeUndefined();
    expect(nats.subscribed(MODEL_CHANGED_SUBJECT)).toBe(true);
    expect(calls.count).toBe(1);
    await cache.stop();
    expect(nats.subscribed(MODEL_CHANGED_SUBJECT)).toBe(false);
  });

  it("applies newer versions from events and ignores older ones", async () => {
    const { transport } = registry(() => ({ models: [model("a", 5n)], workflows: [] }));
    const nats = fakeNats();
    const cache = createCatalogCache({ transport, nc: nats.nc, log: silent, resyncIntervalMs: 0 });
    const changes: string[] = [];
    cache.onChange((c) => changes.push(`${c.kind}:${c.id}`));
    await cache.start();
    nats.publish({ case: "model", value: model("a", 6n, ModelStatus.DISABLED) });
    expect(cache.getModel("a")?.status).toBe(ModelStatus.DISABLED);
    nats.publish({ case: "model", value: model("a", 4n, ModelStatus.AVAILABLE) });
    expect(cache.getModel("a")?.version).toBe(6n);
    nats.publish({ case: "model", value: model("new", 1n) });
    expect(cache.getModel("new")).toBeDefined();
    nats.publishRaw(new Uint8Array([0xff, 0xff, 0xff])); // garbage is ignored
    expect(changes).toEqual(["model:a", "model:a", "model:new"]);
    await cache.stop();
  });

  it("keeps an event that overtook the snapshot", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { transport } = registry(async () => {
      await gate;
      return { models: [model("a", 1n)], workflows: [] };
    });
    const nats = fakeNats();
    const cache = createCatalogCache({ transport, nc: nats.nc, log: silent, resyncIntervalMs: 0 });
    const started = cache.start();
    await vi.waitFor(() => expect(nats.subscribed(MODEL_CHANGED_SUBJECT)).toBe(true));
    nats.publish({ case: "model", value: model("a", 2n, ModelStatus.DISABLED) });
    release();
    await started;
    expect(cache.getModel("a")?.version).toBe(2n);
    expect(cache.getModel("a")?.status).toBe(ModelStatus.DISABLED);
    await cache.stop();
  });

  it("derives a workflow's status from its model's current state", async () => {
    const wf = workflow(params(), template(), { workflow: { id: "sdxl", modelId: "img", parameters: params(), version: 1n, status: ModelStatus.AVAILABLE } as never });
    const { transport } = registry(() => ({ models: [model("img", 1n)], workflows: [wf] }));
    const nats = fakeNats();
    const cache = createCatalogCache({ transport, nc: nats.nc, log: silent, resyncIntervalMs: 0 });
    await cache.start();
    expect(cache.getWorkflow("sdxl")?.workflow?.status).toBe(ModelStatus.AVAILABLE);
    nats.publish({ case: "model", value: model("img", 2n, ModelStatus.DISABLED, { statusReason: "maintenance" }) });
    expect(cache.getWorkflow("sdxl")?.workflow?.status).toBe(ModelStatus.DISABLED);
    expect(cache.listWorkflows()[0]?.workflow?.statusReason).toBe("model img disabled: maintenance");
    nats.publish({ case: "workflow", value: { ...wf, enabled: false, disabledReason: "bad outputs", workflow: { ...wf.workflow!, version: 2n } } as CatalogWorkflow });
    nats.publish({ case: "model", value: model("img", 3n, ModelStatus.AVAILABLE) });
    expect(cache.getWorkflow("sdxl")?.workflow?.status).toBe(ModelStatus.DISABLED);
    expect(cache.getWorkflow("sdxl")?.workflow?.statusReason).toBe("bad outputs");
    await cache.stop();
  });

  it("retries a failed load with backoff until the registry answers", async () => {
    let fail = 2;
    const { transport, calls } = registry(() => {
      if (fail-- > 0) throw new ConnectError("down", Code.Unavailable);
      return { models: [model("a", 1n)], workflows: [] };
    });
    const cache = createCatalogCache({ transport, nc: fakeNats().nc, log: silent, resyncIntervalMs: 0, retryDelayMs: 10 });
    await cache.start();
    expect(cache.loaded).toBe(false);
    await expect(cache.readiness.check()).rejects.toThrow(/not loaded/);
    await cache.whenLoaded();
    expect(cache.getModel("a")).toBeDefined();
    expect(calls.count).toBe(3);
    await cache.stop();
  });

  it("reloads after a NATS reconnect (events sent meanwhile were missed)", async () => {
    let version = 1n;
    const { transport, calls } = registry(() => ({ models: [model("a", version)], workflows: [] }));
    const nats = fakeNats();
    const cache = createCatalogCache({ transport, nc: nats.nc, log: silent, resyncIntervalMs: 0 });
    await cache.start();
    version = 2n;
    nats.status({ type: "reconnect", server: "x" } as Status);
    await vi.waitFor(() => expect(cache.getModel("a")?.version).toBe(2n));
    expect(calls.count).toBe(2);
    await cache.stop();
  });

  it("reloads periodically", async () => {
    let version = 1n;
    const { transport } = registry(() => ({ models: [model("a", version)], workflows: [] }));
    const cache = createCatalogCache({ transport, nc: fakeNats().nc, log: silent, resyncIntervalMs: 20 });
    await cache.start();
    version = 3n;
    await vi.waitFor(() => expect(cache.getModel("a")?.version).toBe(3n));
    await cache.stop();
  });
});
