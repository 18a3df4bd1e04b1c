/**
 * Command-line and environment configuration of the standalone simulator. Each flag `--some-flag` also reads
 * `SIM_VLLM_SOME_FLAG`; a flag wins over its variable. Kept apart from `main.ts` so it can be tested.
 */
import { parseArgs } from "node:util";
import {
  DEFAULT_MAX_MODEL_LEN,
  DEFAULT_MODEL,
  type Faults,
  NO_FAULTS,
  SimConfigError,
  TIMING_PROFILES,
  type TimingOptions,
  type TimingProfile,
  type VllmSimOptions,
} from "./config.js";

/** The port the standalone server uses by default (vLLM's). */
export const DEFAULT_PORT = 8000;

type Kind = "int" | "number" | "string" | "bool" | "list";

interface FlagSpec {
  flag: string;
  kind: Kind;
  help: string;
  default: string;
  /** Extra environment variable read when SIM_VLLM_* is unset (vLLM's own names). */
  altEnv?: string;
  apply(o: CliOptions, value: string | number | boolean | string[]): void;
}

/** Options from the command line: the simulator's options plus CLI-only switches. */
export interface CliOptions {
  sim: VllmSimOptions & { port: number; host: string };
  logRequests: boolean;
  help: boolean;
}

const timing = (o: CliOptions): Partial<TimingOptions> => (o.sim.timing ??= {});
const faults = (o: CliOptions): Partial<Faults> => (o.sim.faults ??= {});
const fast = TIMING_PROFILES.fast;

const FLAGS: FlagSpec[] = [
  { flag: "port", kind: "int", default: String(DEFAULT_PORT), help: "port to listen on (0 = any free port)",
    apply: (o, v) => (o.sim.port = v as number) },
  { flag: "host", kind: "string", default: "127.0.0.1", help: "interface to bind (0.0.0.0 for all)",
    apply: (o, v) => (o.sim.host = v as string) },
  { flag: "model", kind: "list", default: DEFAULT_MODEL, altEnv: "SIM_VLLM_MODELS",
    help: "served model as name[:max_model_len] (e.g. qwen3-8b:32k); repeat for several (env: comma-separated)",
    apply: (o, v) => (o.sim.models = v as string[]) },
  { flag: "max-model-len", kind: "int", default: String(DEFAULT_MAX_MODEL_LEN),
    help: "context window of models given without one", apply: (o, v) => (o.sim.maxModelLen = v as number) },
  { flag: "api-key", kind: "string", default: "(none)", altEnv: "VLLM_API_KEY",
    help: "require Authorization: Bearer <key> on /v1/*", apply: (o, v) => (o.sim.apiKey = v as string) },
  { flag: "profile", kind: "string", default: "fast", help: "timing preset: fast | realistic | zero",
    apply: (o, v) => {
      if (!(String(v) in TIMING_PROFILES)) throw new SimConfigError(`--profile must be fast, realistic or zero`);
      o.sim.profile = v as TimingProfile;
    } },
  { flag: "ttft-ms", kind: "number", default: String(fast.ttftMs),
    help: "fixed delay before the first token, on top of prefill (ms)", apply: (o, v) => (timing(o).ttftMs = v as number) },
  { flag: "prefill-tps", kind: "number", default: String(fast.prefillTokensPerSec),
    help: "prefill speed: uncached prompt tokens per second", apply: (o, v) => (timing(o).prefillTokensPerSec = v as number) },
  { flag: "decode-tps", kind: "number", default: String(fast.decodeTokensPerSec),
    help: "decode speed: output tokens per second per request",
    apply: (o, v) => (timing(o).decodeTokensPerSec = v as number) },
  { flag: "zero-time", kind: "bool", default: "false", help: "no simulated delays at all (benchmarks)",
    apply: (o, v) => (timing(o).zeroTime = v as boolean) },
  { flag: "max-num-seqs", kind: "int", default: "256", help: "requests generating at once per model; more wait",
    apply: (o, v) => (o.sim.maxNumSeqs = v as number) },
  { flag: "block-size", kind: "int", default: "16", help: "KV-cache block size in tokens (prefix-cache granularity)",
    apply: (o, v) => (o.sim.blockSize = v as number) },
  { flag: "kv-cache-blocks", kind: "int", default: "8192", help: "KV-cache size in blocks per model",
    apply: (o, v) => (o.sim.kvCacheBlocks = v as number) },
  { flag: "no-prefix-caching", kind: "bool", default: "false", help: "disable automatic prefix caching",
    apply: (o, v) => (o.sim.enablePrefixCaching = !(v as boolean)) },
  { flag: "output-tokens", kind: "string", default: "8:48",
    help: "natural reply length range min:max (or one number) when max_tokens does not cut it first",
    apply: (o, v) => {
      const m = /^(\d+)(?::(\d+))?$/.exec(String(v));
      if (!m) throw new SimConfigError(`--output-tokens must be N or MIN:MAX, got "${String(v)}"`);
      o.sim.outputTokens = { min: Number(m[1]), max: Number(m[2] ?? m[1]) };
    } },
  { flag: "error-rate", kind: "number", default: String(NO_FAULTS.errorRate),
    help: "share of requests answered with an HTTP error before output", apply: (o, v) => (faults(o).errorRate = v as number) },
  { flag: "error-status", kind: "int", default: String(NO_FAULTS.errorStatus), help: "status of those errors",
    apply: (o, v) => (faults(o).errorStatus = v as number) },
  { flag: "mid-stream-error-rate", kind: "number", default: String(NO_FAULTS.midStreamErrorRate),
    help: "share of requests failing during generation (stream: data: {\"error\":...} then [DONE])",
    apply: (o, v) => (faults(o).midStreamErrorRate = v as number) },
  { flag: "mid-stream-error-after", kind: "int", default: String(NO_FAULTS.midStreamErrorAfterTokens),
    help: "tokens sent before a mid-stream error", apply: (o, v) => (faults(o).midStreamErrorAfterTokens = v as number) },
  { flag: "hang-rate", kind: "number", default: String(NO_FAULTS.hangRate),
    help: "share of requests that stop producing output (until the client gives up)",
    apply: (o, v) => (faults(o).hangRate = v as number) },
  { flag: "hang-after", kind: "int", default: String(NO_FAULTS.hangAfterTokens),
    help: "tokens sent before a hang (0 = before the first token)", apply: (o, v) => (faults(o).hangAfterTokens = v as number) },
  { flag: "disconnect-rate", kind: "number", default: String(NO_FAULTS.disconnectRate),
    help: "share of requests whose connection is dropped mid-reply", apply: (o, v) => (faults(o).disconnectRate = v as number) },
  { flag: "disconnect-after", kind: "int", default: String(NO_FAULTS.disconnectAfterTokens),
    help: "tokens sent before the drop", apply: (o, v) => (faults(o).disconnectAfterTokens = v as number) },
  { flag: "slow-token-ms", kind: "int", default: String(NO_FAULTS.slowTokenMs), help: "extra delay before every token (ms)",
    apply: (o, v) => (faults(o).slowTokenMs = v as number) },
  { flag: "cold-start-ms", kind: "int", default: "0",
    help: "cold-start mode: /health and /v1/* answer 503 for this long after start or POST /_sim/reset (ms)",
    apply: (o, v) => (o.sim.coldStartMs = v as number) },
  { flag: "unhealthy", kind: "bool", default: "false", help: "GET /health answers 503",
    apply: (o, v) => (faults(o).unhealthy = v as boolean) },
  { flag: "fault-seed", kind: "int", default: "(random)", help: "seed of the fault dice (reproducible faults)",
    apply: (o, v) => (o.sim.faultSeed = v as number) },
  { flag: "max-body-bytes", kind: "int", default: String(16 * 1024 * 1024), help: "largest request body; larger gets 413",
    apply: (o, v) => (o.sim.maxBodyBytes = v as number) },
  { flag: "log-requests", kind: "bool", default: "false", help: "print one JSON line per finished request",
    apply: (o, v) => (o.logRequests = v as boolean) },
];

/** `--max-num-seqs` → `SIM_VLLM_MAX_NUM_SEQS`. */
export function envName(flag: string): string {
  return `SIM_VLLM_${flag.replaceAll("-", "_").toUpperCase()}`;
}

function convert(spec: FlagSpec, raw: string | boolean | string[], source: string): string | number | boolean | string[] {
  const bad = (what: string) => new SimConfigError(`${source}: ${JSON.stringify(raw)} is not ${what}`);
  switch (spec.kind) {
    case "bool": {
      if (typeof raw === "boolean") return raw;
      const v = String(raw).trim().toLowerCase();
      if (["1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off", ""].includes(v)) return false;
      throw bad("a boolean (true/false/1/0)");
    }
    case "int": {
      const s = String(raw).trim();
      const n = Number(s);
      if (s === "" || !Number.isSafeInteger(n)) throw bad("an integer");
      return n;
    }
    case "number": {
      const s = String(raw).trim();
      const n = Number(s);
      if (s === "" || !Number.isFinite(n)) throw bad("a number");
      return n;
    }
    case "list":
      return Array.isArray(raw) ? raw : String(raw).split(",").map((x) => x.trim()).filter(Boolean);
    default:
      return String(raw);
  }
}

/**
 * Parses flags and environment. Throws {@link SimConfigError} naming the flag (and its variable) on bad input;
 * the options' own ranges are checked later by `resolveOptions`.
 */
export function parseCli(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): CliOptions {
  const options: Record<string, { type: "string" | "boolean"; multiple?: boolean; short?: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const f of FLAGS) {
    options[f.flag] = { type: f.kind === "bool" ? "boolean" : "string", ...(f.kind === "list" ? { multiple: true } : {}) };
  }
  let values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new SimConfigError(`${(err as Error).message} (see --help)`);
  }

  const out: CliOptions = { sim: { port: DEFAULT_PORT, host: "127.0.0.1" }, logRequests: false, help: values.help === true };
  for (const f of FLAGS) {
    const fromFlag = values[f.flag];
    const envKey = envName(f.flag);
    const envValue = env[envKey] ?? (f.altEnv ? env[f.altEnv] : undefined);
    if (fromFlag !== undefined) {
      f.apply(out, convert(f, fromFlag as string | boolean | string[], `--${f.flag}`));
    } else if (envValue !== undefined) {
      f.apply(out, convert(f, envValue, env[envKey] !== undefined ? envKey : f.altEnv!));
    }
  }
  return out;
}

/** The `--help` text, generated from the flag table. */
export function helpText(): string {
  const rows = FLAGS.map((f) => {
    const arg = f.kind === "bool" ? "" : f.kind === "list" ? " <spec>" : " <value>";
    const env = envName(f.flag) + (f.altEnv ? ` | ${f.altEnv}` : "");
    return `  --${f.flag}${arg}\n      ${f.help} [default: ${f.default}; env: ${env}]`;
  });
  return [
    "vLLM-compatible inference simulator (OpenAI API).",
    "",
    "Usage: npm run -w tools/sim-vllm start -- [options]",
    "",
    ...rows,
    "  -h, --help",
    "      show this help",
    "",
  ].join("\n");
}
