import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ModelKind, UpstreamProbe } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelSpecSchema, type ModelSpec } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { modelInputToSpec, workflowInputToSpec } from "./convert.js";
import { defaultCatalog } from "./seed-catalog.js";
import { CATALOG_ID, validateModelSpec, validateWorkflowSpec } from "./validate.js";

type Fields<T> = Partial<Omit<T, "$typeName" | "$unknown">>;

function textSpec(over: Fields<ModelSpec> = {}): ModelSpec {
  return create(ModelSpecSchema, {
    id: "llama-3.1-8b",
    displayName: "Llama 3.1 8B",
    description: "fast",
    kind: ModelKind.TEXT,
    tags: ["fast", "abliterated"],
    contextWindow: 8192,
    maxOutputTokens: 2048,
    prices: { inputPer1kTokens: 10n, outputPer1kTokens: 10n, perImage: 0n },
    upstream: { baseUrls: ["http://10.0.0.1:8000/"], resolveUrl: "", apiKeyEnv: "VLLM_API_KEY", servedModelName: "" },
    ...over,
  });
}

const imageSpec = (over: Fields<ModelSpec> = {}) =>
  textSpec({ id: "sdxl", kind: ModelKind.IMAGE, contextWindow: 0, maxOutputTokens: 0, prices: { inputPer1kTokens: 0n, outputPer1kTokens: 0n, perImage: 50n } as never, ...over });

function problemFields(spec: ModelSpec | undefined): string[] {
  return validateModelSpec(spec).problems.map((p) => p.field);
}

describe("catalog ids", () => {
  it.each(["a", "llama-3.1-8b", "qwen2.5-7b-instruct", "x1"])("accepts %s", (id) => expect(CATALOG_ID.test(id)).toBe(true));
  it.each(["", "A", "-a", "a-", ".a", "a.", "a b", "a/b", "a_b", "a".repeat(65)])("rejects %j", (id) => expect(CATALOG_ID.test(id)).toBe(false));
});

describe("validateModelSpec", () => {
  it("fills in the kind's probe, keeps an image model's WORKER probe, and refuses probes the kind cannot use", () => {
    expect(validateModelSpec(textSpec()).input?.upstream.probe).toBe("OPENAI");
    expect(validateModelSpec(imageSpec()).input?.upstream.probe).toBe("COMFYUI");
    const worker = { baseUrls: [], resolveUrl: "http://comfyui-sdxl-workers:9090", apiKeyEnv: "", servedModelName: "", probe: UpstreamProbe.WORKER };
    expect(validateModelSpec(imageSpec({ upstream: worker as never })).input?.upstream).toMatchObject({ probe: "WORKER", resolveUrl: "http://comfyui-sdxl-workers:9090" });
    expect(problemFields(textSpec({ upstream: worker as never }))).toEqual(["model.upstream.probe"]);
    expect(problemFields(imageSpec({ upstream: { ...worker, probe: UpstreamProbe.OPENAI } as never }))).toEqual(["model.upstream.probe"]);
    expect(problemFields(imageSpec({ upstream: { ...worker, probe: 99 as UpstreamProbe } as never }))).toEqual(["model.upstream.probe"]);
  });

  it("accepts a valid text model and normalizes its URLs", () => {
    const { input, problems } = validateModelSpec(textSpec());
    expect(problems).toEqual([]);
    expect(input).toMatchObject({ id: "llama-3.1-8b", kind: "TEXT", prices: { inputPer1k: 10n, outputPer1k: 10n, perImage: 0n } });
    expect(input?.upstream.baseUrls).toEqual(["http://10.0.0.1:8000"]);
  });

  it("accepts a valid image model", () => {
    expect(validateModelSpec(imageSpec()).problems).toEqual([]);
  });

  it("takes scale to zero with its expected cold start, and refuses a cold start that does not fit", () => {
    const { input } = validateModelSpec(textSpec({ scaleToZero: true, coldStartSeconds: 120 }));
    expect(input).toMatchObject({ scaleToZero: true, coldStartSeconds: 120 });
    expect(validateModelSpec(textSpec()).input).toMatchObject({ scaleToZero: false, coldStartSeconds: 0 });
    expect(problemFields(textSpec({ scaleToZero: true, coldStartSeconds: 0 }))).toEqual(["model.cold_start_seconds"]);
    expect(problemFields(textSpec({ scaleToZero: true, coldStartSeconds: 3601 }))).toEqual(["model.cold_start_seconds"]);
    expect(problemFields(textSpec({ scaleToZero: false, coldStartSeconds: 30 }))).toEqual(["model.cold_start_seconds"]);
  });
  it("requires the spec", () => {
    expect(problemFields(undefined)).toEqual(["model"]);
  });

  const up = (o: object) => ({ upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "", servedModelName: "", ...o } as never });

  it.each<[string, Fields<ModelSpec>, string, RegExp]>([
    ["an empty id", { id: "" }, "model.id", /is required/],
    ["an upper-case id", { id: "Llama" }, "model.id", /\[a-z0-9.-\]/],
    ["a path-like id", { id: "../etc" }, "model.id", /\[a-z0-9.-\]/],
    ["an id with ..", { id: "a..b" }, "model.id", /\.\./],
    ["a too long id", { id: "a".repeat(65) }, "model.id", /1-64/],
    ["an empty display name", { displayName: "  " }, "model.display_name", /is required/],
    ["a too long display name", { displayName: "x".repeat(101) }, "model.display_name", /at most 100/],
    ["a display name with a newline", { displayName: "a\nb" }, "model.display_name", /control/],
    ["a too long description", { description: "x".repeat(2001) }, "model.description", /at most 2000/],
    ["a description with control characters", { description: "a\u0007b" }, "model.description", /control/],
    ["no kind", { kind: ModelKind.UNSPECIFIED }, "model.kind", /MODEL_KIND_TEXT or MODEL_KIND_IMAGE/],
    ["an unknown kind", { kind: 9 as ModelKind }, "model.kind", /MODEL_KIND_TEXT/],
    ["a bad tag", { tags: ["Fast"] }, "model.tags[0]", /\[a-z0-9.-\]/],
    ["a duplicate tag", { tags: ["fast", "fast"] }, "model.tags[1]", /duplicates/],
    ["too many tags", { tags: Array.from({ length: 17 }, (_, i) => `t${i}`) }, "model.tags", /at most 16/],
    ["a zero context window", { contextWindow: 0 }, "model.context_window", /between 1 and/],
    ["a negative context window", { contextWindow: -5 }, "model.context_window", /between 1 and/],
    ["a huge context window", { contextWindow: 20_000_000 }, "model.context_window", /between 1 and/],
    ["zero max output tokens", { maxOutputTokens: 0 }, "model.max_output_tokens", /> 0/],
    ["max output tokens >= context window", { maxOutputTokens: 8192 }, "model.max_output_tokens", /less than context_window/],
    ["no prices", { prices: undefined }, "model.prices", /is required/],
    ["a negative input price", { prices: { inputPer1kTokens: -1n, outputPer1kTokens: 10n, perImage: 0n } as never }, "model.prices.input_per_1k_tokens", />= 0/],
    ["a negative output price", { prices: { inputPer1kTokens: 1n, outputPer1kTokens: -10n, perImage: 0n } as never }, "model.prices.output_per_1k_tokens", />= 0/],
    ["an absurd price", { prices: { inputPer1kTokens: 10n ** 12n, outputPer1kTokens: 10n, perImage: 0n } as never }, "model.prices.input_per_1k_tokens", /at most/],
    ["a per-image price on a text model", { prices: { inputPer1kTokens: 1n, outputPer1kTokens: 1n, perImage: 5n } as never }, "model.prices.per_image", /0 for a text model/],
    ["no upstream", { upstream: undefined }, "model.upstream", /is required/],
    ["an upstream without URLs", up({ baseUrls: [] }), "model.upstream", /base_urls or resolve_url/],
    ["a base URL that is not a URL", up({ baseUrls: ["not a url"] }), "model.upstream.base_urls[0]", /not a URL/],
    ["a non-http base URL", up({ baseUrls: ["ftp://a:1"] }), "model.upstream.base_urls[0]", /http or https/],
    ["a base URL with credentials", up({ baseUrls: ["http://user:secret@a:1"] }), "model.upstream.base_urls[0]", /credentials/],
    ["a base URL with a query", up({ baseUrls: ["http://a:1/?key=x"] }), "model.upstream.base_urls[0]", /query/],
    ["a duplicate base URL", up({ baseUrls: ["http://a:1", "http://a:1/"] }), "model.upstream.base_urls[1]", /duplicates/],
    ["too many base URLs", up({ baseUrls: Array.from({ length: 33 }, (_, i) => `http://a:${i + 1}`) }), "model.upstream.base_urls", /at most 32/],
    ["a bad resolve URL", up({ resolveUrl: "vllm.svc:8000" }), "model.upstream.resolve_url", /http or https|not a URL/],
    ["an API key instead of its env var name", up({ apiKeyEnv: "sk-abc123" }), "model.upstream.api_key_env", /NAME of an environment variable/],
    ["a served model name with spaces", up({ servedModelName: "my model" }), "model.upstream.served_model_name", /whitespace/],
    ["a too long served model name", up({ servedModelName: "m".repeat(257) }), "model.upstream.served_model_name", /at most 256/],
  ])("rejects %s", (_name, over, field, message) => {
    const problems = validateModelSpec(textSpec(over)).problems;
    const p = problems.find((x) => x.field === field);
    expect(p, JSON.stringify(problems)).toBeDefined();
    expect(p!.message).toMatch(message);
  });

  it.each<[string, Fields<ModelSpec>, string]>([
    ["a context window", { contextWindow: 4096 }, "model.context_window"],
    ["max output tokens", { maxOutputTokens: 10 }, "model.max_output_tokens"],
    ["a token price", { prices: { inputPer1kTokens: 1n, outputPer1kTokens: 0n, perImage: 50n } as never }, "model.prices.input_per_1k_tokens"],
    ["an output token price", { prices: { inputPer1kTokens: 0n, outputPer1kTokens: 3n, perImage: 50n } as never }, "model.prices.output_per_1k_tokens"],
  ])("rejects an image model with %s", (_name, over, field) => {
    expect(problemFields(imageSpec(over))).toContain(field);
  });

  it("reports every problem at once", () => {
    expect(problemFields(textSpec({ id: "", displayName: "", contextWindow: 0 }))).toEqual(
      expect.arrayContaining(["model.id", "model.display_name", "model.context_window"]),
    );
  });
});

describe("validateWorkflowSpec", () => {
  const seeded = defaultCatalog({ vllmUrl: "http://v:1", comfyuiUrl: "http://c:2" });
  const sdxl = () => workflowInputToSpec(seeded.workflows.find((w) => w.id === "sdxl")!);

  it("accepts the seeded workflows and keeps the template text as written", () => {
    for (const w of seeded.workflows) {
      const { input, problems } = validateWorkflowSpec(workflowInputToSpec(w));
      expect(problems, w.id).toEqual([]);
      expect(input?.template.graphJson).toBe(w.template.graphJson);
    }
  });

  it("requires the spec", () => {
    expect(validateWorkflowSpec(undefined).problems.map((p) => p.field)).toEqual(["workflow"]);
  });

  it.each<[string, (s: ReturnType<typeof sdxl>) => void, string]>([
    ["a bad id", (s) => (s.id = "SDXL!"), "workflow.id"],
    ["a missing model id", (s) => (s.modelId = ""), "workflow.model_id"],
    ["an empty display name", (s) => (s.displayName = ""), "workflow.display_name"],
    ["a bad tag", (s) => (s.tags = ["has space"]), "workflow.tags[0]"],
    ["a negative price", (s) => (s.pricePerImage = -1n), "workflow.price_per_image"],
    ["no parameters", (s) => (s.parameters = undefined), "workflow.parameters"],
    ["zero max images", (s) => (s.parameters!.maxImages = 0), "workflow.parameters.max_images"],
    ["no template", (s) => (s.template = undefined), "workflow.template"],
    ["a template that is not JSON", (s) => (s.template!.graphJson = "{"), "workflow.template.graph_json"],
    ["a binding to a missing node", (s) => (s.template!.bindings[0]!.nodeId = "404"), "workflow.template.bindings[0].node_id"],
  ])("rejects %s", (_name, mutate, field) => {
    const spec = sdxl();
    mutate(spec);
    expect(validateWorkflowSpec(spec).problems.map((p) => p.field)).toContain(field);
  });
});

describe("seeded models", () => {
  it("all pass the admin validation", () => {
    for (const m of defaultCatalog({ vllmUrl: "http://v:1", comfyuiUrl: "http://c:2" }).models) {
      expect(validateModelSpec(modelInputToSpec(m)).problems, m.id).toEqual([]);
    }
  });
});
