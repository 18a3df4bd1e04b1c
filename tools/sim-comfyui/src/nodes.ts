/**
 * What each catalog node does in the simulator. Values flowing along links are small descriptions (which checkpoint,
 * which text, which size) instead of tensors; the sampler spends simulated time per step and the image nodes render
 * and store real PNG files.
 */
import { randomInt } from "node:crypto";
import type { ImageRef, ImageStore } from "./images.js";
import { renderPng } from "./png.js";

export interface ModelValue { ckpt: string; loras: string[] }
export interface ConditioningValue { text: string; model: ModelValue }
export interface LatentValue { width: number; height: number; batch: number }
export interface SampledValue extends LatentValue { seed: number; model: ModelValue; positive: string; negative: string }
export interface ImageValue extends SampledValue { decoded: true }

/**
 * A failure inside a node, reported as `execution_error` with this Python exception type; ComfyUI appends `tips` to
 * the exception's text (`"{ex}\n{tips}"`).
 */
export class NodeError extends Error {
  constructor(readonly exceptionType: string, message: string, readonly tips = "") {
    super(message);
  }
}

/** What the executor gives a node while it runs. */
export interface NodeContext {
  images: ImageStore;
  /** Runs `steps` sampler steps (time, progress and preview messages, interrupt checks) for this latent. */
  sample(steps: number, latent: SampledValue): Promise<void>;
  /** The prompt graph, embedded in saved PNGs as ComfyUI does. */
  prompt: unknown;
  /** extra_data.extra_pnginfo, embedded like the prompt. */
  extraPngInfo: unknown;
  maxBatchPixels: number;
}

export interface NodeResult {
  outputs: unknown[];
  ui?: { images: ImageRef[] };
}

type Executor = (inputs: Record<string, unknown>, ctx: NodeContext) => NodeResult | Promise<NodeResult>;

/** The text ComfyUI's tips append to a CUDA out-of-memory error. */
const OOM_TIPS = "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number.";

/** The key that decides the picture of one image: prompt text, seed (+ index in the batch) and model. */
export function imageKey(v: SampledValue, index: number): string {
  return JSON.stringify([v.model.ckpt, v.model.loras, v.seed + index, v.positive, v.negative]);
}

function saveImages(v: ImageValue, ctx: NodeContext, type: "output" | "temp", filenamePrefix: string): NodeResult {
  const { subfolder, base, counter } = ctx.images.savePath(filenamePrefix, v.width, v.height, type);
  const text: Record<string, string> = { prompt: JSON.stringify(ctx.prompt) };
  if (ctx.extraPngInfo && typeof ctx.extraPngInfo === "object") {
    for (const [k, val] of Object.entries(ctx.extraPngInfo)) text[k] = JSON.stringify(val);
  }
  const images: ImageRef[] = [];
  for (let i = 0; i < v.batch; i++) {
    const n = counter + i;
    const filename = `${base.replaceAll("%batch_num%", String(i))}_${String(n).padStart(5, "0")}_.png`;
    const ref: ImageRef = { filename, subfolder, type };
    ctx.images.put(ref, renderPng(imageKey(v, i), v.width, v.height, { text }), { base, counter: n });
    images.push(ref);
  }
  return { outputs: [], ui: { images } };
}

/** PreviewImage's temp prefix: ComfyUI appends five random letters. */
function tempPrefix(): string {
  const letters = "abcdefghijklmnopqrstupvxyz";
  let s = "";
  for (let i = 0; i < 5; i++) s += letters[randomInt(letters.length)];
  return `ComfyUI_temp_${s}`;
}

function emptyLatent(inputs: Record<string, unknown>): NodeResult {
  // Latents are 1/8 of the image size, so the decoded image is rounded down to a multiple of 8.
  const latent: LatentValue = {
    width: Math.floor((inputs.width as number) / 8) * 8,
    height: Math.floor((inputs.height as number) / 8) * 8,
    batch: inputs.batch_size as number,
  };
  return { outputs: [latent] };
}

export const EXECUTORS: ReadonlyMap<string, Executor> = new Map<string, Executor>([
  ["CheckpointLoaderSimple", (inputs) => {
    const model: ModelValue = { ckpt: inputs.ckpt_name as string, loras: [] };
    return { outputs: [model, model, model] };
  }],
  ["LoraLoader", (inputs) => {
    const add = (m: ModelValue): ModelValue => ({ ckpt: m.ckpt, loras: [...m.loras, `${String(inputs.lora_name)}:${String(inputs.strength_model)}`] });
    return { outputs: [add(inputs.model as ModelValue), add(inputs.clip as ModelValue)] };
  }],
  ["CLIPTextEncode", (inputs) => {
    const cond: ConditioningValue = { text: inputs.text as string, model: inputs.clip as ModelValue };
    return { outputs: [cond] };
  }],
  ["EmptyLatentImage", emptyLatent],
  ["EmptySD3LatentImage", emptyLatent],
  ["KSampler", async (inputs, ctx) => {
    const latent = inputs.latent_image as LatentValue;
    const pixels = latent.width * latent.height * latent.batch;
    if (pixels > ctx.maxBatchPixels) {
      throw new NodeError("torch.OutOfMemoryError", "Allocation on device ", OOM_TIPS);
    }
    const sampled: SampledValue = {
      ...latent,
      seed: inputs.seed as number,
      model: inputs.model as ModelValue,
      positive: (inputs.positive as ConditioningValue).text,
      negative: (inputs.negative as ConditioningValue).text,
    };
    await ctx.sample(inputs.steps as number, sampled);
    return { outputs: [sampled] };
  }],
  ["VAEDecode", (inputs) => {
    const samples = inputs.samples as Partial<SampledValue> & LatentValue;
    // An unsampled latent decodes to something too; give it a fixed key so it is still deterministic.
    const image: ImageValue = {
      seed: 0, model: { ckpt: "", loras: [] }, positive: "", negative: "",
      ...samples,
      decoded: true,
    };
    return { outputs: [image] };
  }],
  ["SaveImage", (inputs, ctx) => saveImages(inputs.images as ImageValue, ctx, "output", inputs.filename_prefix as string)],
  ["PreviewImage", (inputs, ctx) => saveImages(inputs.images as ImageValue, ctx, "temp", tempPrefix())],
]);
