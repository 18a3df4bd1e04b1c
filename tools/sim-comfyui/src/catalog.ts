/**
 * The node catalog the simulator declares: the built-in ComfyUI nodes a text-to-image graph needs, with the same
 * input names, types, limits and output types as ComfyUI's `nodes.py`, rendered by `GET /object_info` in ComfyUI's
 * format and used by validation. What each node *does* lives in `nodes.ts`.
 */

/** `[type, options]` as ComfyUI's INPUT_TYPES declares it; a combo's type is the list of allowed values. */
export type InputSpec = [type: string | readonly (string | number)[], options?: Record<string, unknown>];

/** One node class as `/object_info` describes it. */
export interface NodeClassInfo {
  input: {
    required: Record<string, InputSpec>;
    optional?: Record<string, InputSpec>;
    hidden?: Record<string, string>;
  };
  input_order: { required: string[]; optional?: string[]; hidden?: string[] };
  output: string[];
  output_is_list: boolean[];
  output_name: string[];
  name: string;
  display_name: string;
  description: string;
  python_module: string;
  category: string;
  output_node: boolean;
  output_tooltips?: string[];
}

/** The model files the simulated server pretends to have (what the loaders' combos accept). */
export interface ModelLists {
  checkpoints: readonly string[];
  loras: readonly string[];
}

/** ComfyUI's MAX_RESOLUTION. */
const MAX_RESOLUTION = 16384;

/** comfy.samplers.KSampler.SAMPLERS (ComfyUI 0.3.x). */
export const SAMPLERS = [
  "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral",
  "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
  "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
  "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
  "res_multistep_ancestral_cfg_pp", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "ddim", "uni_pc",
  "uni_pc_bh2",
] as const;

/** comfy.samplers.KSampler.SCHEDULERS (ComfyUI 0.3.x). */
export const SCHEDULERS = [
  "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic", "kl_optimal",
] as const;

/** Default model files: the SDXL and FLUX.1 schnell checkpoints REFERENCE.md names, plus a few common ones. */
export const DEFAULT_MODELS: ModelLists = {
  checkpoints: [
    "sd_xl_base_1.0.safetensors",
    "sd_xl_refiner_1.0.safetensors",
    "sd_xl_turbo_1.0_fp16.safetensors",
    "flux1-schnell-fp8.safetensors",
    "flux1-dev-fp8.safetensors",
    "v1-5-pruned-emaonly.safetensors",
  ],
  loras: ["sdxl_lightning_4step_lora.safetensors", "add-detail-xl.safetensors", "pixel-art-xl.safetensors"],
};

interface NodeDecl {
  display_name: string;
  description: string;
  category: string;
  required: Record<string, InputSpec>;
  optional?: Record<string, InputSpec>;
  hidden?: Record<string, string>;
  output: string[];
  output_name?: string[];
  output_node?: boolean;
  output_tooltips?: string[];
}

function declarations(models: ModelLists): Record<string, NodeDecl> {
  const dimension = (dflt: number, step: number): InputSpec =>
    ["INT", { default: dflt, min: 16, max: MAX_RESOLUTION, step }];
  const strength = (tooltip: string): InputSpec =>
    ["FLOAT", { default: 1.0, min: -100.0, max: 100.0, step: 0.01, tooltip }];
  return {
    CheckpointLoaderSimple: {
      display_name: "Load Checkpoint",
      description: "Loads a diffusion model checkpoint, diffusion models are used to denoise latents.",
      category: "loaders",
      required: { ckpt_name: [models.checkpoints, { tooltip: "The name of the checkpoint (model) to load." }] },
      output: ["MODEL", "CLIP", "VAE"],
      output_tooltips: [
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
      ],
    },
    LoraLoader: {
      display_name: "Load LoRA",
      description: "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised.",
      category: "loaders",
      required: {
        model: ["MODEL", { tooltip: "The diffusion model the LoRA will be applied to." }],
        clip: ["CLIP", { tooltip: "The CLIP model the LoRA will be applied to." }],
        lora_name: [models.loras, { tooltip: "The name of the LoRA." }],
        strength_model: strength("How strongly to modify the diffusion model. This value can be negative."),
        strength_clip: strength("How strongly to modify the CLIP model. This value can be negative."),
      },
      output: ["MODEL", "CLIP"],
      output_tooltips: ["The modified diffusion model.", "The modified CLIP model."],
    },
    CLIPTextEncode: {
      display_name: "CLIP Text Encode (Prompt)",
      description: "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model.",
      category: "conditioning",
      required: {
        text: ["STRING", { multiline: true, dynamicPrompts: true, tooltip: "The text to be encoded." }],
        clip: ["CLIP", { tooltip: "The CLIP model used for encoding the text." }],
      },
      output: ["CONDITIONING"],
      output_tooltips: ["A conditioning containing the embedded text used to guide the diffusion model."],
    },
    EmptyLatentImage: {
      display_name: "Empty Latent Image",
      description: "Create a new batch of empty latent images to be denoised via sampling.",
      category: "latent",
      required: {
        width: dimension(512, 8),
        height: dimension(512, 8),
        batch_size: ["INT", { default: 1, min: 1, max: 4096, tooltip: "The number of latent images in the batch." }],
      },
      output: ["LATENT"],
      output_tooltips: ["The empty latent image batch."],
    },
    EmptySD3LatentImage: {
      display_name: "EmptySD3LatentImage",
      description: "",
      category: "latent/sd3",
      required: {
        width: dimension(1024, 16),
        height: dimension(1024, 16),
        batch_size: ["INT", { default: 1, min: 1, max: 4096 }],
      },
      output: ["LATENT"],
    },
    KSampler: {
      display_name: "KSampler",
      description: "Uses the provided model, positive and negative conditioning to denoise the latent image.",
      category: "sampling",
      required: {
        model: ["MODEL", { tooltip: "The model used for denoising the input latent." }],
        seed: ["INT", {
          // ComfyUI's max is 0xffffffffffffffff, which JSON numbers round to 2^64 anyway.
          default: 0, min: 0, max: 2 ** 64, control_after_generate: true,
          tooltip: "The random seed used for creating the noise.",
        }],
        steps: ["INT", { default: 20, min: 1, max: 10000, tooltip: "The number of steps used in the denoising process." }],
        cfg: ["FLOAT", { default: 8.0, min: 0.0, max: 100.0, step: 0.1, round: 0.01, tooltip: "The Classifier-Free Guidance scale." }],
        sampler_name: [SAMPLERS, { tooltip: "The algorithm used when sampling." }],
        scheduler: [SCHEDULERS, { tooltip: "The scheduler controls how noise is gradually removed to form the image." }],
        positive: ["CONDITIONING", { tooltip: "The conditioning describing the attributes you want to include in the image." }],
        negative: ["CONDITIONING", { tooltip: "The conditioning describing the attributes you want to exclude from the image." }],
        latent_image: ["LATENT", { tooltip: "The latent image to denoise." }],
        denoise: ["FLOAT", { default: 1.0, min: 0.0, max: 1.0, step: 0.01, tooltip: "The amount of denoising applied." }],
      },
      output: ["LATENT"],
      output_tooltips: ["The denoised latent."],
    },
    VAEDecode: {
      display_name: "VAE Decode",
      description: "Decodes latent images back into pixel space images.",
      category: "latent",
      required: {
        samples: ["LATENT", { tooltip: "The latent to be decoded." }],
        vae: ["VAE", { tooltip: "The VAE model used for decoding the latent." }],
      },
      output: ["IMAGE"],
      output_tooltips: ["The decoded image."],
    },
    SaveImage: {
      display_name: "Save Image",
      description: "Saves the input images to your ComfyUI output directory.",
      category: "image",
      required: {
        images: ["IMAGE", { tooltip: "The images to save." }],
        filename_prefix: ["STRING", {
          default: "ComfyUI",
          tooltip: "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
        }],
      },
      hidden: { prompt: "PROMPT", extra_pnginfo: "EXTRA_PNGINFO" },
      output: [],
      output_node: true,
    },
    PreviewImage: {
      display_name: "Preview Image",
      description: "Saves the input images to your ComfyUI output directory.",
      category: "image",
      required: { images: ["IMAGE"] },
      hidden: { prompt: "PROMPT", extra_pnginfo: "EXTRA_PNGINFO" },
      output: [],
      output_node: true,
    },
  };
}

/** The catalog: every declared node class, keyed by class_type. */
export type Catalog = ReadonlyMap<string, NodeClassInfo>;

/** Builds the catalog for a given set of model files. */
export function buildCatalog(models: ModelLists = DEFAULT_MODELS): Catalog {
  const catalog = new Map<string, NodeClassInfo>();
  for (const [name, d] of Object.entries(declarations(models))) {
    const input: NodeClassInfo["input"] = { required: d.required };
    const inputOrder: NodeClassInfo["input_order"] = { required: Object.keys(d.required) };
    if (d.optional) {
      input.optional = d.optional;
      inputOrder.optional = Object.keys(d.optional);
    }
    if (d.hidden) {
      input.hidden = d.hidden;
      inputOrder.hidden = Object.keys(d.hidden);
    }
    const info: NodeClassInfo = {
      input,
      input_order: inputOrder,
      output: d.output,
      output_is_list: d.output.map(() => false),
      output_name: d.output_name ?? d.output,
      name,
      display_name: d.display_name,
      description: d.description,
      python_module: "nodes",
      category: d.category,
      output_node: d.output_node ?? false,
    };
    if (d.output_tooltips) info.output_tooltips = d.output_tooltips;
    catalog.set(name, info);
  }
  return catalog;
}

/** `GET /object_info` body. */
export function objectInfo(catalog: Catalog): Record<string, NodeClassInfo> {
  return Object.fromEntries(catalog);
}
