// The default catalog a fresh registry starts with: three open text models (two abliterated), FLUX.1 schnell and
// SDXL image models, and one curated workflow for each (ComfyUI API-format graphs as in REFERENCE.md). Checkpoint
// and LoRA file names are the usual upstream file names (which the ComfyUI simulator also has); operators edit
// them to match their own model folders.
import { WorkflowParameter as P } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ModelInput, WorkflowInput } from "./types.js";

/** Default prices from the product brief: text 1 credit per 100 tokens (= 10 per 1k), 50 credits per image. */
export const DEFAULT_PRICES = { textPer1k: 10n, perImage: 50n } as const;

export interface SeedOptions {
  /** Base URL of the vLLM-compatible server that serves every seeded text model. */
  vllmUrl: string;
  /** Base URL of the ComfyUI that runs every seeded workflow (probed at `/system_stats`). */
  comfyuiUrl: string;
  /**
   * Image model id → URL of its pool's image workers' admin port, usually a headless Service
   * ("http://comfyui-flux1-schnell-workers:9090"): that model is seeded with it as resolve_url and probed at the
   * workers' `/readyz` (probe WORKER) instead of at comfyuiUrl. A cluster needs it: there ComfyUI listens on
   * 127.0.0.1 inside its pod.
   */
  imageWorkers?: ReadonlyMap<string, string>;
}

const FLUX_GRAPH = {
  "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "flux1-schnell-fp8.safetensors" }, _meta: { title: "Load FLUX.1 schnell" } },
  "2": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] }, _meta: { title: "Prompt" } },
  // FLUX schnell runs at cfg 1.0: the negative conditioning is ignored, so it stays empty and unbound.
  "3": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] }, _meta: { title: "Negative (unused)" } },
  "4": { class_type: "EmptySD3LatentImage", inputs: { width: 1024, height: 1024, batch_size: 1 } },
  "5": {
    class_type: "KSampler",
    inputs: {
      model: ["1", 0], positive: ["2", 0], negative: ["3", 0], latent_image: ["4", 0],
      seed: 0, steps: 4, cfg: 1.0, sampler_name: "euler", scheduler: "simple", denoise: 1.0,
    },
  },
  "6": { class_type: "VAEDecode", inputs: { samples: ["5", 0], vae: ["1", 2] } },
  "7": { class_type: "SaveImage", inputs: { images: ["6", 0], filename_prefix: "luna" } },
};

const SDXL_GRAPH = {
  "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" }, _meta: { title: "Load SDXL base" } },
  // The style LoRA sits between the checkpoint and everything that uses its model and CLIP; with no style chosen
  // the renderer leaves it out and links the consumers straight to the checkpoint.
  "2": { class_type: "LoraLoader", inputs: { model: ["1", 0], clip: ["1", 1], lora_name: "none.safetensors", strength_model: 1.0, strength_clip: 1.0 }, _meta: { title: "Style LoRA" } },
  "3": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["2", 1] }, _meta: { title: "Prompt" } },
  "4": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["2", 1] }, _meta: { title: "Negative prompt" } },
  "5": { class_type: "EmptyLatentImage", inputs: { width: 1024, height: 1024, batch_size: 1 } },
  "6": {
    class_type: "KSampler",
    inputs: {
      model: ["2", 0], positive: ["3", 0], negative: ["4", 0], latent_image: ["5", 0],
      seed: 0, steps: 30, cfg: 7.0, sampler_name: "dpmpp_2m", scheduler: "karras", denoise: 1.0,
    },
  },
  "7": { class_type: "VAEDecode", inputs: { samples: ["6", 0], vae: ["1", 2] } },
  "8": { class_type: "SaveImage", inputs: { images: ["7", 0], filename_prefix: "luna" } },
};

const SDXL_SIZES = [
  { width: 1024, height: 1024 },
  { width: 896, height: 1152 },
  { width: 1152, height: 896 },
  { width: 832, height: 1216 },
  { width: 1216, height: 832 },
];

/** Seeded models keep replicas (no scale to zero); an operator turns it on per model (ModelSpec.scale_to_zero). */
const ALWAYS_ON = { scaleToZero: false, coldStartSeconds: 0 };

function textModel(m: Omit<ModelInput, "kind" | "prices" | "upstream" | "scaleToZero" | "coldStartSeconds">, vllmUrl: string): ModelInput {
  return {
    ...m,
    ...ALWAYS_ON,
    kind: "TEXT",
    prices: { inputPer1k: DEFAULT_PRICES.textPer1k, outputPer1k: DEFAULT_PRICES.textPer1k, perImage: 0n },
    upstream: { baseUrls: [vllmUrl], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "OPENAI" },
  };
}

function imageModel(m: Omit<ModelInput, "kind" | "prices" | "upstream" | "contextWindow" | "maxOutputTokens" | "scaleToZero" | "coldStartSeconds">, comfyuiUrl: string, workers: ReadonlyMap<string, string>): ModelInput {
  const workersUrl = workers.get(m.id)?.replace(/\/+$/, "");
  return {
    ...m,
    ...ALWAYS_ON,
    kind: "IMAGE",
    contextWindow: 0,
    maxOutputTokens: 0,
    prices: { inputPer1k: 0n, outputPer1k: 0n, perImage: DEFAULT_PRICES.perImage },
    upstream: workersUrl
      ? { baseUrls: [], resolveUrl: workersUrl, apiKeyEnv: "", servedModelName: "", probe: "WORKER" }
      : { baseUrls: [comfyuiUrl], resolveUrl: "", apiKeyEnv: "", servedModelName: "", probe: "COMFYUI" },
  };
}

/** The default catalog, with upstreams pointing at the given (by default local simulator) URLs. */
export function defaultCatalog(opts: SeedOptions): { models: ModelInput[]; workflows: WorkflowInput[] } {
  const vllm = opts.vllmUrl.replace(/\/+$/, "");
  const comfy = opts.comfyuiUrl.replace(/\/+$/, "");
  const workers = opts.imageWorkers ?? new Map<string, string>();
  const models: ModelInput[] = [
    textModel({
      id: "llama-3.1-8b-abliterated",
      displayName: "Llama 3.1 8B Abliterated",
      description: "Meta Llama 3.1 8B Instruct with its refusal direction removed. Fast, uncensored all-rounder.",
      tags: ["abliterated", "fast"],
      contextWindow: 32768,
      maxOutputTokens: 4096,
      sortOrder: 10,
    }, vllm),
    textModel({
      id: "mistral-small-24b-abliterated",
      displayName: "Mistral Small 24B Abliterated",
      description: "Mistral Small 3 (24B) Instruct, abliterated. Stronger reasoning and writing, slower.",
      tags: ["abliterated", "smart"],
      contextWindow: 32768,
      maxOutputTokens: 8192,
      sortOrder: 20,
    }, vllm),
    textModel({
      id: "qwen2.5-7b-instruct",
      displayName: "Qwen 2.5 7B Instruct",
      description: "Alibaba Qwen 2.5 7B Instruct. Fast, multilingual, good at code.",
      tags: ["open", "fast", "multilingual"],
      contextWindow: 32768,
      maxOutputTokens: 4096,
      sortOrder: 30,
    }, vllm),
    imageModel({
      id: "flux1-schnell",
      displayName: "FLUX.1 schnell",
      description: "Black Forest Labs FLUX.1 schnell (fp8): high-quality images in 4 steps.",
      tags: ["fast"],
      sortOrder: 100,
    }, comfy, workers),
    imageModel({
      id: "sdxl-base-1.0",
      displayName: "Stable Diffusion XL",
      description: "Stability AI SDXL 1.0 base, with curated LoRA styles.",
      tags: ["styles"],
      sortOrder: 110,
    }, comfy, workers),
  ];
  const workflows: WorkflowInput[] = [
    {
      id: "flux-schnell",
      modelId: "flux1-schnell",
      displayName: "FLUX.1 schnell",
      description: "Fast, detailed images from a text prompt.",
      tags: ["fast"],
      pricePerImage: DEFAULT_PRICES.perImage,
      sortOrder: 100,
      parameters: {
        sizes: [{ width: 1024, height: 1024 }, { width: 896, height: 1152 }, { width: 1152, height: 896 }, { width: 768, height: 1344 }, { width: 1344, height: 768 }],
        defaultSize: { width: 1024, height: 1024 },
        maxImages: 4,
        minSteps: 4,
        maxSteps: 4,
        defaultSteps: 4,
        styles: [],
        defaultStyleId: "",
        maxPromptChars: 2000,
      },
      template: {
        graphJson: JSON.stringify(FLUX_GRAPH, null, 2),
        bindings: [
          { parameter: P.PROMPT, nodeId: "2", inputName: "text" },
          { parameter: P.SEED, nodeId: "5", inputName: "seed" },
          { parameter: P.STEPS, nodeId: "5", inputName: "steps" },
          { parameter: P.WIDTH, nodeId: "4", inputName: "width" },
          { parameter: P.HEIGHT, nodeId: "4", inputName: "height" },
          { parameter: P.BATCH_SIZE, nodeId: "4", inputName: "batch_size" },
          { parameter: P.FILENAME_PREFIX, nodeId: "7", inputName: "filename_prefix" },
        ],
        styleLoras: [],
      },
    },
    {
      id: "sdxl",
      modelId: "sdxl-base-1.0",
      displayName: "SDXL with styles",
      description: "Stable Diffusion XL with a negative prompt and optional curated styles.",
      tags: ["styles"],
      pricePerImage: DEFAULT_PRICES.perImage,
      sortOrder: 110,
      parameters: {
        sizes: SDXL_SIZES,
        defaultSize: { width: 1024, height: 1024 },
        maxImages: 4,
        minSteps: 15,
        maxSteps: 50,
        defaultSteps: 30,
        styles: [
          { id: "pixel-art", displayName: "Pixel art", description: "Crisp retro pixel art." },
          { id: "extra-detail", displayName: "Extra detail", description: "Sharper textures and finer detail." },
        ],
        defaultStyleId: "",
        maxPromptChars: 2000,
      },
      template: {
        graphJson: JSON.stringify(SDXL_GRAPH, null, 2),
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
        styleLoras: [
          { styleId: "pixel-art", loraName: "pixel-art-xl.safetensors", strengthModel: 0.9, strengthClip: 0.9 },
          { styleId: "extra-detail", loraName: "add-detail-xl.safetensors", strengthModel: 1.0, strengthClip: 1.0 },
        ],
      },
    },
  ];
  return { models, workflows };
}
