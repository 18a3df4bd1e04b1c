import { describe, expect, it } from "vitest";
import { renderWorkflow } from "@luna/kit";
import { configSchema } from "../config.js";
import { catalogWorkflowToProto, modelInputToSpec } from "./convert.js";
import { DEFAULT_PRICES, defaultCatalog } from "./seed-catalog.js";
import type { WorkflowRecord } from "./types.js";
import { validateModelSpec } from "./validate.js";

const catalog = defaultCatalog({ vllmUrl: "http://vllm:8000/", comfyuiUrl: "http://comfy:8188" });

function record(id: string): WorkflowRecord {
  const w = catalog.workflows.find((x) => x.id === id)!;
  return { ...w, enabled: true, disabledReason: "", version: 1n, updatedAt: new Date() };
}

describe("defaultCatalog", () => {
  it("has abliterated and open text models, FLUX and SDXL image models and their workflows", () => {
    expect(catalog.models.map((m) => m.id)).toEqual(
      expect.arrayContaining(["llama-3.1-8b-abliterated", "mistral-small-24b-abliterated", "qwen2.5-7b-instruct", "flux1-schnell", "sdxl-base-1.0"]),
    );
    expect(catalog.models.filter((m) => m.tags.includes("abliterated")).length).toBeGreaterThanOrEqual(2);
    expect(catalog.workflows.map((w) => [w.id, w.modelId])).toEqual([["flux-schnell", "flux1-schnell"], ["sdxl", "sdxl-base-1.0"]]);
  });

  it("charges the product's default prices (1 credit per 100 tokens, 50 per image)", () => {
    for (const m of catalog.models.filter((x) => x.kind === "TEXT")) expect(m.prices).toEqual({ inputPer1k: 10n, outputPer1k: 10n, perImage: 0n });
    for (const m of catalog.models.filter((x) => x.kind === "IMAGE")) expect(m.prices.perImage).toBe(DEFAULT_PRICES.perImage);
    for (const w of catalog.workflows) expect(w.pricePerImage).toBe(50n);
  });

  it("points text models at the vLLM URL and image models at the ComfyUI URL, each with its kind's probe", () => {
    for (const m of catalog.models) expect(m.upstream.baseUrls).toEqual([m.kind === "TEXT" ? "http://vllm:8000" : "http://comfy:8188"]);
    for (const m of catalog.models) expect(m.upstream.probe).toBe(m.kind === "TEXT" ? "OPENAI" : "COMFYUI");
  });

  it("seeds the image models named in imageWorkers at their workers' Service, probed at the workers' /readyz", () => {
    const workers = new Map([["sdxl-base-1.0", "http://comfyui-sdxl-base-workers:9090/"]]);
    const c = defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188", imageWorkers: workers });
    const up = (id: string) => c.models.find((m) => m.id === id)!.upstream;
    expect(up("sdxl-base-1.0")).toEqual({ baseUrls: [], resolveUrl: "http://comfyui-sdxl-base-workers:9090", apiKeyEnv: "", servedModelName: "", probe: "WORKER" });
    expect(up("flux1-schnell")).toMatchObject({ baseUrls: ["http://comfy:8188"], probe: "COMFYUI" });
    for (const m of c.models) expect(validateModelSpec(modelInputToSpec(m)).problems, m.id).toEqual([]);
  });

  it("reads REGISTRY_SEED_IMAGE_WORKERS as model=url entries and refuses anything else", () => {
    const parse = (v: string) => configSchema.safeParse({ REGISTRY_SEED_IMAGE_WORKERS: v });
    expect(configSchema.parse({}).REGISTRY_SEED_IMAGE_WORKERS.size).toBe(0);
    expect([...parse("flux1-schnell=http://comfyui-flux1-schnell-workers:9090, sdxl-base-1.0=http://w:9090").data!.REGISTRY_SEED_IMAGE_WORKERS])
      .toEqual([["flux1-schnell", "http://comfyui-flux1-schnell-workers:9090"], ["sdxl-base-1.0", "http://w:9090"]]);
    for (const bad of ["http://w:9090", "flux1-schnell=", "flux1-schnell=ftp://w", "Flux=http://w:9090", "=http://w:9090"]) {
      expect(parse(bad).success, bad).toBe(false);
    }
  });

  it("renders FLUX schnell with fixed 4 steps, cfg 1 and no negative prompt", () => {
    const wf = catalogWorkflowToProto(record("flux-schnell"), undefined);
    expect(wf.workflow?.parameters?.negativePromptSupported).toBe(false);
    const g = renderWorkflow(wf, { prompt: "a fox", seed: 1, count: 2, width: 768, height: 1344 });
    expect(g["2"]!.inputs.text).toBe("a fox");
    expect(g["4"]).toMatchObject({ class_type: "EmptySD3LatentImage", inputs: { width: 768, height: 1344, batch_size: 2 } });
    expect(g["5"]!.inputs).toMatchObject({ seed: 1, steps: 4, cfg: 1, sampler_name: "euler", scheduler: "simple" });
    expect(() => renderWorkflow(wf, { prompt: "x", steps: 8 })).toThrow(/fixed at 4/);
  });

  it("renders SDXL with a style LoRA, and without it when no style is chosen", () => {
    const wf = catalogWorkflowToProto(record("sdxl"), undefined);
    const styled = renderWorkflow(wf, { prompt: "a castle", negativePrompt: "blurry", seed: 3, styleId: "pixel-art" });
    expect(styled["2"]!.inputs).toMatchObject({ lora_name: "pixel-art-xl.safetensors", strength_model: 0.9 });
    expect(styled["4"]!.inputs.text).toBe("blurry");
    const plain = renderWorkflow(wf, { prompt: "a castle", seed: 3 });
    expect(plain["2"]).toBeUndefined();
    expect(plain["6"]!.inputs.model).toEqual(["1", 0]);
  });
});
