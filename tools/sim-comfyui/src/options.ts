/** Options, fault settings and statistics of the simulator, with their defaults. */
import { DEFAULT_MODELS } from "./catalog.js";

/**
 * Faults to inject. Every field is optional; `{}` means a healthy server. Prompt ordinals ("Nth") count the prompts
 * whose execution started since the simulator started or was last reset (1 = the first).
 */
export interface SimFaults {
  /** Fail the Nth executed prompt(s) with an `execution_error`. */
  failOnNth?: number[];
  /** Fail every prompt whose graph has a string input (e.g. the prompt text) containing this marker. */
  failMarker?: string;
  /** Fail each prompt with this probability (0–1), drawn from a PRNG seeded with `faultSeed`. */
  failRate?: number;
  /** class_type of the node that raises the injected error. Default `KSampler`; if no such node runs, the last node. */
  failNode?: string;
  /** `exception_type` of the injected error. Default `RuntimeError`. */
  failExceptionType?: string;
  /** `exception_message` of the injected error. Default `Simulated failure injected by sim-comfyui`. */
  failMessage?: string;
  /** Send nothing on any websocket (not even `status`); prompts still run and complete in `/history`. */
  wsSilent?: boolean;
  /**
   * Per prompt: send this many of its messages (counting from `execution_start`), then nothing at all on any
   * websocket until the prompt has finished — a stall in the middle of a job. Completion is visible only in `/history`.
   */
  wsSilentAfter?: number;
  /** Extra delay before every `/view` response, in ms. */
  viewDelayMs?: number;
  /** Crash while executing the Nth prompt (half-way through sampling), losing the queue, then restart. */
  crashOnNth?: number;
  /** How long a crashed server stays down (connections refused) before listening again, in ms. Default 200. */
  crashDownMs?: number;
}

/** The simulated generation pace (see the options of the same names); changeable at run time. */
export interface SimTiming {
  stepMs: number;
  nodeMs: number;
}

/** Options of {@link startComfySim}. Every field is optional. */
export interface ComfySimOptions {
  /** TCP port; 0 (the default here) picks a free one. The CLI defaults to 8188. */
  port?: number;
  /** Interface to listen on. Default `127.0.0.1`. */
  host?: string;
  /** Time per sampler step, in ms. Default 5; 0 runs as fast as possible. */
  stepMs?: number;
  /** Overhead per executed node, in ms. Default 1; 0 for none. */
  nodeMs?: number;
  /** Send binary preview frames after each sampler step. Default true. */
  previews?: boolean;
  /** Longest side of preview images, in px (ComfyUI's MAX_PREVIEW_RESOLUTION). Default 512. */
  previewMaxSize?: number;
  /**
   * Node output cache: `classic` (ComfyUI's default) reuses the outputs of nodes whose inputs did not change since the
   * previous prompt — they are listed in `execution_cached` and not executed again; `none` (`--cache-none`) runs
   * every node every time. Default `classic`.
   */
  cache?: "classic" | "none";
  /** Keep `/history` across a simulated crash/restart. Default false (a real restart loses it). */
  keepHistoryOnRestart?: boolean;
  /** History entries kept (oldest dropped first), as ComfyUI's MAXIMUM_HISTORY_SIZE. Default 10000. */
  maxHistory?: number;
  /** Images kept in memory (oldest dropped first; `/view` then answers 404). Default 2000. */
  maxImages?: number;
  /** width × height × batch_size above which sampling fails with a simulated CUDA out-of-memory error. Default 64 Mpx. */
  maxBatchPixels?: number;
  /** Largest accepted request body, in bytes. Default 32 MiB. */
  maxBodyBytes?: number;
  /** Checkpoint files the server has (the values `ckpt_name` accepts). */
  checkpoints?: string[];
  /** LoRA files the server has (the values `lora_name` accepts). */
  loras?: string[];
  /** Faults active from the start; `reset()` returns to these. Default none. */
  faults?: SimFaults;
  /** Seed of the PRNG behind `failRate`. Default 1. */
  faultSeed?: number;
  /** Receives one line per notable event (prompt queued/finished, restarts). Default: discard. */
  log?: (line: string) => void;
  /**
   * Cold-start mode: for this many ms after start (and after `POST /_sim/reset`, or for the ms given to
   * `POST /_sim/cold-start`) the server listens but is still loading: it refuses prompts and every other API route
   * with 503, as a ComfyUI pod that has just been scheduled on a GPU. Default 0 (ready at once).
   */
  coldStartMs?: number;
}

/** Options with every default filled in. */
export type ResolvedOptions = Required<Omit<ComfySimOptions, "faults">> & { faults: SimFaults };

export const DEFAULTS: Omit<ResolvedOptions, "checkpoints" | "loras" | "faults" | "log"> = {
  port: 0,
  host: "127.0.0.1",
  stepMs: 5,
  nodeMs: 1,
  previews: true,
  previewMaxSize: 512,
  cache: "classic",
  keepHistoryOnRestart: false,
  maxHistory: 10_000,
  maxImages: 2_000,
  maxBatchPixels: 64 * 1024 * 1024,
  maxBodyBytes: 32 * 1024 * 1024,
  faultSeed: 1,
  coldStartMs: 0,
};

function nonNegative(name: string, v: number | undefined, integer = false): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (integer && !Number.isInteger(v))) {
    throw new RangeError(`${name} must be a non-negative ${integer ? "integer" : "number"}, got ${String(v)}`);
  }
}

/** Checks a fault set; throws a RangeError naming the bad field. Returns a normalized copy. */
export function checkFaults(input: unknown): SimFaults {
  if (typeof input !== "object" || input === null || Array.isArray(input)) throw new RangeError("faults must be an object");
  const f = input as Record<string, unknown>;
  const known = new Set(["failOnNth", "failMarker", "failRate", "failNode", "failExceptionType", "failMessage", "wsSilent",
    "wsSilentAfter", "viewDelayMs", "crashOnNth", "crashDownMs"]);
  for (const k of Object.keys(f)) if (!known.has(k)) throw new RangeError(`unknown fault "${k}"`);
  const out: SimFaults = {};
  if (f.failOnNth !== undefined) {
    const list = Array.isArray(f.failOnNth) ? f.failOnNth : [f.failOnNth];
    for (const n of list) {
      if (typeof n !== "number" || !Number.isInteger(n) || n < 1) throw new RangeError(`failOnNth must hold integers ≥ 1, got ${String(n)}`);
    }
    out.failOnNth = list as number[];
  }
  for (const k of ["failMarker", "failNode", "failExceptionType", "failMessage"] as const) {
    if (f[k] === undefined) continue;
    if (typeof f[k] !== "string" || f[k] === "") throw new RangeError(`${k} must be a non-empty string`);
    out[k] = f[k];
  }
  if (f.failRate !== undefined) {
    if (typeof f.failRate !== "number" || !(f.failRate >= 0 && f.failRate <= 1)) throw new RangeError("failRate must be between 0 and 1");
    out.failRate = f.failRate;
  }
  if (f.wsSilent !== undefined) {
    if (typeof f.wsSilent !== "boolean") throw new RangeError("wsSilent must be a boolean");
    out.wsSilent = f.wsSilent;
  }
  for (const k of ["wsSilentAfter", "viewDelayMs", "crashDownMs"] as const) {
    nonNegative(k, f[k] as number | undefined, k === "wsSilentAfter");
    if (f[k] !== undefined) out[k] = f[k] as number;
  }
  if (f.crashOnNth !== undefined) {
    if (typeof f.crashOnNth !== "number" || !Number.isInteger(f.crashOnNth) || f.crashOnNth < 1) {
      throw new RangeError("crashOnNth must be an integer ≥ 1");
    }
    out.crashOnNth = f.crashOnNth;
  }
  return out;
}

/** Fills in defaults and checks ranges; throws a RangeError naming the bad option. */
export function resolveOptions(opts: ComfySimOptions = {}): ResolvedOptions {
  const r: ResolvedOptions = {
    ...DEFAULTS,
    checkpoints: [...DEFAULT_MODELS.checkpoints],
    loras: [...DEFAULT_MODELS.loras],
    log: () => {},
    ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
    faults: checkFaults(opts.faults ?? {}),
  };
  if (!Number.isInteger(r.port) || r.port < 0 || r.port > 65535) throw new RangeError(`port must be 0–65535, got ${r.port}`);
  nonNegative("stepMs", r.stepMs);
  nonNegative("nodeMs", r.nodeMs);
  for (const k of ["previewMaxSize", "maxHistory", "maxImages", "maxBatchPixels", "maxBodyBytes"] as const) {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new RangeError(`${k} must be a positive integer, got ${r[k]}`);
  }
  nonNegative("faultSeed", r.faultSeed, true);
  nonNegative("coldStartMs", r.coldStartMs, true);
  if (r.cache !== "classic" && r.cache !== "none") throw new RangeError(`cache must be "classic" or "none", got ${String(r.cache)}`);
  if (!Array.isArray(r.checkpoints) || !Array.isArray(r.loras)) throw new RangeError("checkpoints and loras must be arrays");
  return r;
}

/** What the simulator observed, for tests of its consumers. Survives restarts; cleared by reset. */
export interface SimStats {
  /** Per prompt_id: how many times its execution started (a prompt generated twice shows 2). */
  executions: Record<string, number>;
  /** Per prompt_id: how many images it produced (cached outputs are not produced again). */
  imagesByPrompt: Record<string, number>;
  /** Prompts accepted by POST /prompt. */
  queued: number;
  /** POST /prompt requests rejected (validation or bad body). */
  rejected: number;
  /** Executions that ended with execution_success. */
  succeeded: number;
  /** Executions that ended with execution_error. */
  failed: number;
  /** Executions that ended with execution_interrupted. */
  interrupted: number;
  /** Executions cut short by a crash/restart (no history entry). */
  lost: number;
  /** Images produced in total. */
  imagesGenerated: number;
  /** Simulated crash/restarts. */
  restarts: number;
  /** Websocket connections accepted. */
  wsConnections: number;
}
