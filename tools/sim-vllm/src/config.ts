/**
 * Options of the simulator, their defaults, and validation. Every tunable number lives here with its default;
 * the CLI (`cli.ts`) and the embedding API (`startVllmSim`) both end in {@link resolveOptions}.
 */

/** A served model: its name (the `model` field clients send) and context window. */
export interface ModelSpec {
  name: string;
  /** Context window in tokens (prompt + completion). Defaults to {@link VllmSimOptions.maxModelLen}. */
  maxModelLen?: number;
}

/** Simulated timing of one request. */
export interface TimingOptions {
  /** Fixed delay before the first token on top of prefill (scheduling, first forward pass), in ms. */
  ttftMs: number;
  /** Uncached prompt tokens processed per second during prefill; time to first token grows with prompt length. */
  prefillTokensPerSec: number;
  /** Output tokens per second of one request during decode (inter-token latency = 1000 / this, in ms). */
  decodeTokensPerSec: number;
  /** No simulated delays at all: tokens flow as fast as the event loop allows (for benchmarks). */
  zeroTime: boolean;
}

export type TimingProfile = "fast" | "realistic" | "zero";

/**
 * Timing presets. `fast` (the default) keeps tests quick while preserving every ordering effect (queueing,
 * prefill growing with prompt length, prefix-cache savings); `realistic` is roughly an 8B model on one modern GPU;
 * `zero` removes all waiting.
 */
export const TIMING_PROFILES: Readonly<Record<TimingProfile, Readonly<TimingOptions>>> = {
  fast: { ttftMs: 1, prefillTokensPerSec: 200_000, decodeTokensPerSec: 1_000, zeroTime: false },
  realistic: { ttftMs: 25, prefillTokensPerSec: 8_000, decodeTokensPerSec: 60, zeroTime: false },
  zero: { ttftMs: 0, prefillTokensPerSec: 200_000, decodeTokensPerSec: 1_000, zeroTime: true },
};

/** Injected failures. Rates are probabilities in [0, 1] rolled per generation request. */
export interface Faults {
  /** Share of requests answered with HTTP {@link errorStatus} before any output. */
  errorRate: number;
  /** Status code of those errors (500 like an engine exception; 503 to mimic an overloaded server). */
  errorStatus: number;
  /** Share of requests that fail after {@link midStreamErrorAfterTokens} tokens: streamed as `data: {"error":…}`
   * then `data: [DONE]`, non-streamed as HTTP 500. */
  midStreamErrorRate: number;
  midStreamErrorAfterTokens: number;
  /** Share of requests that stop producing output after {@link hangAfterTokens} tokens (0 = before the first token;
   * stream headers are already sent) and hold their slot until the client gives up. */
  hangRate: number;
  hangAfterTokens: number;
  /** Share of requests whose connection is dropped (TCP reset, no `[DONE]`) after {@link disconnectAfterTokens}. */
  disconnectRate: number;
  disconnectAfterTokens: number;
  /** Extra delay added before every token, in ms (slow decoding). */
  slowTokenMs: number;
  /** `GET /health` answers 503 (as when vLLM's engine has died). Requests are still served. */
  unhealthy: boolean;
}

export const NO_FAULTS: Readonly<Faults> = {
  errorRate: 0,
  errorStatus: 500,
  midStreamErrorRate: 0,
  midStreamErrorAfterTokens: 1,
  hangRate: 0,
  hangAfterTokens: 0,
  disconnectRate: 0,
  disconnectAfterTokens: 1,
  slowTokenMs: 0,
  unhealthy: false,
};

/** What happened to one generation request; kept in {@link SimStats.recent} and passed to `onRequest`. */
export interface RequestRecord {
  id: string;
  model: string;
  endpoint: "chat" | "completions";
  stream: boolean;
  promptTokens: number;
  /** Prompt tokens served from the prefix cache. */
  cachedTokens: number;
  completionTokens: number;
  finishReason: "stop" | "length" | "abort" | "error";
  /** The injected fault, if any. */
  fault?: "error" | "mid-stream-error" | "hang" | "disconnect";
  /** Simulated prefill time (ttftMs + uncached prompt tokens / prefill rate): deterministic, unlike wall clock. */
  prefillMs: number;
  /** Measured wall-clock times. */
  queueMs: number;
  ttftMs: number | null;
  e2eMs: number;
}

export interface VllmSimOptions {
  /** Port to listen on; 0 (the default) picks a free one. */
  port?: number;
  /** Interface to bind; default 127.0.0.1. */
  host?: string;
  /** Served models, as names, `name:max_model_len` strings, or specs. Default: one model named `sim-model`. */
  models?: Array<string | ModelSpec>;
  /** Context window of models that do not set their own; default 4096. */
  maxModelLen?: number;
  /** When set, `/v1/*` requires `Authorization: Bearer <apiKey>` (like vLLM's `--api-key`). */
  apiKey?: string;
  /** Timing preset; default `fast`. Fields in {@link timing} override it. */
  profile?: TimingProfile;
  timing?: Partial<TimingOptions>;
  /** Requests generating at once per model (vLLM `--max-num-seqs`); beyond it requests wait. Default 256. */
  maxNumSeqs?: number;
  /** Tokens per KV-cache block, the prefix-cache granularity (vLLM `--block-size`). Default 16. */
  blockSize?: number;
  /** KV-cache size in blocks per model: prefix-cache capacity and the denominator of `vllm:kv_cache_usage_perc`.
   * Default 8192 (131072 tokens at block size 16). */
  kvCacheBlocks?: number;
  /** Automatic prefix caching (vLLM's default is on). */
  enablePrefixCaching?: boolean;
  /** Natural reply length in tokens when neither `max_tokens` nor a stop string ends it first; the reply then
   * ends at the first sentence end at or after a length drawn from [min, max]. Default 8..48. */
  outputTokens?: { min: number; max: number };
  /** Initial faults; change them later with `setFaults` or `POST /_sim/faults`. */
  faults?: Partial<Faults>;
  /** Seed of the fault dice, for reproducible fault sequences. Default: random. */
  faultSeed?: number;
  /** Largest accepted request body in bytes; larger gets 413. Default 16 MiB. */
  maxBodyBytes?: number;
  /** How many finished requests `stats().recent` keeps. Default 100. */
  recentRequests?: number;
  /** Called when each generation request ends (for logging). */
  onRequest?: (record: RequestRecord) => void;
  /**
   * Cold-start mode: for this many ms after start (and after `POST /_sim/reset`, or for the ms given to
   * `POST /_sim/cold-start`) the server listens but is still "loading the model": `GET /health` and every `/v1/*`
   * route answer 503, as a vLLM pod that has just been scheduled on a GPU. Default 0 (ready at once).
   */
  coldStartMs?: number;
}

/** Options after defaults and validation. */
export interface ResolvedOptions {
  port: number;
  host: string;
  models: Required<ModelSpec>[];
  apiKey: string | undefined;
  timing: TimingOptions;
  maxNumSeqs: number;
  blockSize: number;
  kvCacheBlocks: number;
  enablePrefixCaching: boolean;
  outputTokens: { min: number; max: number };
  faults: Faults;
  faultSeed: number;
  maxBodyBytes: number;
  recentRequests: number;
  onRequest: ((record: RequestRecord) => void) | undefined;
  coldStartMs: number;
}

export const DEFAULT_MODEL = "sim-model";
export const DEFAULT_MAX_MODEL_LEN = 4096;

/** Bad configuration (an option, a CLI flag or a `POST /_sim/faults` body). */
export class SimConfigError extends Error {
  override name = "SimConfigError";
}

function check(cond: boolean, message: string): void {
  if (!cond) throw new SimConfigError(message);
}

function isInt(v: unknown, min: number): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= min;
}

/**
 * Parses `name` or `name:max_model_len` (`4096`, or `32k` = 32768). A suffix that is not a number stays part of
 * the name, so Ollama-style names such as `llama3.1:8b` work.
 */
export function parseModelSpec(spec: string, defaultMaxModelLen = DEFAULT_MAX_MODEL_LEN): Required<ModelSpec> {
  const m = /^(.+):(\d+)(k?)$/i.exec(spec.trim());
  if (m) {
    const len = Number(m[2]) * (m[3] ? 1024 : 1);
    check(len >= 1, `model "${spec}": max_model_len must be at least 1`);
    return { name: m[1]!, maxModelLen: len };
  }
  check(spec.trim().length > 0, "model name must not be empty");
  return { name: spec.trim(), maxModelLen: defaultMaxModelLen };
}

/** Validates a partial fault set (from options, flags or the control endpoint); unknown keys are rejected. */
export function validateFaults(input: unknown): Partial<Faults> {
  check(typeof input === "object" && input !== null && !Array.isArray(input), "faults must be a JSON object");
  const out: Partial<Faults> = {};
  const record = input as Record<string, unknown>;
  for (const [key, value] of Object.entries(record)) {
    switch (key) {
      case "errorRate":
      case "midStreamErrorRate":
      case "hangRate":
      case "disconnectRate":
        check(typeof value === "number" && value >= 0 && value <= 1, `faults.${key} must be a number in [0, 1]`);
        out[key] = value as number;
        break;
      case "midStreamErrorAfterTokens":
      case "hangAfterTokens":
      case "disconnectAfterTokens":
      case "slowTokenMs":
        check(isInt(value, 0), `faults.${key} must be a non-negative integer`);
        out[key] = value as number;
        break;
      case "errorStatus":
        check(isInt(value, 400) && (value as number) <= 599, "faults.errorStatus must be an HTTP status in 400..599");
        out.errorStatus = value as number;
        break;
      case "unhealthy":
        check(typeof value === "boolean", "faults.unhealthy must be a boolean");
        out.unhealthy = value as boolean;
        break;
      default:
        throw new SimConfigError(`unknown fault "${key}" (known: ${Object.keys(NO_FAULTS).join(", ")})`);
    }
  }
  return out;
}

/** Applies defaults and validates; throws {@link SimConfigError} naming the bad option. */
export function resolveOptions(o: VllmSimOptions = {}): ResolvedOptions {
  const maxModelLen = o.maxModelLen ?? DEFAULT_MAX_MODEL_LEN;
  check(isInt(maxModelLen, 1), "maxModelLen must be a positive integer");
  const models = (o.models ?? [DEFAULT_MODEL]).map((m) =>
    typeof m === "string" ? parseModelSpec(m, maxModelLen) : { name: m.name, maxModelLen: m.maxModelLen ?? maxModelLen });
  check(models.length > 0, "at least one model is required");
  const seen = new Set<string>();
  for (const m of models) {
    check(typeof m.name === "string" && m.name.length > 0, "model names must be non-empty strings");
    check(isInt(m.maxModelLen, 1), `model "${m.name}": maxModelLen must be a positive integer`);
    check(!seen.has(m.name), `model "${m.name}" is listed twice`);
    seen.add(m.name);
  }

  const profile = o.profile ?? "fast";
  check(profile in TIMING_PROFILES, `profile must be one of ${Object.keys(TIMING_PROFILES).join(", ")}`);
  const timing: TimingOptions = { ...TIMING_PROFILES[profile], ...stripUndefined(o.timing ?? {}) };
  check(typeof timing.ttftMs === "number" && timing.ttftMs >= 0, "timing.ttftMs must be >= 0");
  check(typeof timing.prefillTokensPerSec === "number" && timing.prefillTokensPerSec > 0,
    "timing.prefillTokensPerSec must be > 0");
  check(typeof timing.decodeTokensPerSec === "number" && timing.decodeTokensPerSec > 0,
    "timing.decodeTokensPerSec must be > 0");
  check(typeof timing.zeroTime === "boolean", "timing.zeroTime must be a boolean");

  const outputTokens = o.outputTokens ?? { min: 8, max: 48 };
  check(isInt(outputTokens.min, 1) && isInt(outputTokens.max, outputTokens.min),
    "outputTokens must be integers with 1 <= min <= max");

  const port = o.port ?? 0;
  check(isInt(port, 0) && port <= 65535, "port must be an integer in 0..65535");
  const apiKey = o.apiKey === undefined || o.apiKey === "" ? undefined : o.apiKey;
  const r: ResolvedOptions = {
    port,
    host: o.host ?? "127.0.0.1",
    models,
    apiKey,
    timing,
    maxNumSeqs: o.maxNumSeqs ?? 256,
    blockSize: o.blockSize ?? 16,
    kvCacheBlocks: o.kvCacheBlocks ?? 8192,
    enablePrefixCaching: o.enablePrefixCaching ?? true,
    outputTokens,
    faults: { ...NO_FAULTS, ...validateFaults(o.faults ?? {}) },
    faultSeed: o.faultSeed ?? Math.floor(Math.random() * 2 ** 32),
    maxBodyBytes: o.maxBodyBytes ?? 16 * 1024 * 1024,
    recentRequests: o.recentRequests ?? 100,
    onRequest: o.onRequest,
    coldStartMs: o.coldStartMs ?? 0,
  };
  check(isInt(r.coldStartMs, 0), "coldStartMs must be a non-negative integer");
  check(isInt(r.maxNumSeqs, 1), "maxNumSeqs must be a positive integer");
  check(isInt(r.blockSize, 1), "blockSize must be a positive integer");
  check(isInt(r.kvCacheBlocks, 1), "kvCacheBlocks must be a positive integer");
  check(isInt(r.faultSeed, 0), "faultSeed must be a non-negative integer");
  check(isInt(r.maxBodyBytes, 1), "maxBodyBytes must be a positive integer");
  check(isInt(r.recentRequests, 0), "recentRequests must be a non-negative integer");
  return r;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
