/**
 * Command-line flags and `SIM_COMFYUI_*` environment variables → {@link ComfySimOptions}. Flags win over variables;
 * every flag `--some-name` has the variable `SIM_COMFYUI_SOME_NAME`.
 */
import { parseArgs } from "node:util";
import type { ComfySimOptions, SimFaults } from "./options.js";

type Kind = "int" | "number" | "bool" | "string" | "list" | "intlist" | "cache";

interface Setting {
  flag: string;
  kind: Kind;
  /** Where the value goes: an option, or a fault. */
  option?: keyof ComfySimOptions;
  fault?: keyof SimFaults;
  help: string;
}

/** Every setting, in the order `--help` lists them. */
export const SETTINGS: readonly Setting[] = [
  { flag: "port", kind: "int", option: "port", help: "TCP port (0 = any free port). Default 8188." },
  { flag: "host", kind: "string", option: "host", help: "Interface to listen on. Default 127.0.0.1." },
  { flag: "step-ms", kind: "number", option: "stepMs", help: "Time per sampler step in ms (0 = as fast as possible). Default 5." },
  { flag: "node-ms", kind: "number", option: "nodeMs", help: "Overhead per executed node in ms. Default 1." },
  { flag: "previews", kind: "bool", option: "previews", help: "Send binary preview frames per step (--no-previews to disable). Default on." },
  { flag: "preview-max-size", kind: "int", option: "previewMaxSize", help: "Longest side of previews in px. Default 512." },
  { flag: "cache", kind: "cache", option: "cache", help: "Node output cache: classic (ComfyUI's default) or none. Default classic." },
  { flag: "keep-history-on-restart", kind: "bool", option: "keepHistoryOnRestart", help: "Keep /history across simulated restarts. Default off." },
  { flag: "max-history", kind: "int", option: "maxHistory", help: "History entries kept. Default 10000." },
  { flag: "max-images", kind: "int", option: "maxImages", help: "Images kept in memory. Default 2000." },
  { flag: "max-batch-pixels", kind: "int", option: "maxBatchPixels", help: "width*height*batch above which sampling runs out of memory. Default 67108864." },
  { flag: "max-body-bytes", kind: "int", option: "maxBodyBytes", help: "Largest request body. Default 33554432." },
  { flag: "checkpoints", kind: "list", option: "checkpoints", help: "Comma-separated checkpoint files the server has. Default: SDXL base/refiner/turbo, FLUX.1 schnell/dev fp8, SD 1.5." },
  { flag: "loras", kind: "list", option: "loras", help: "Comma-separated LoRA files the server has." },
  { flag: "cold-start-ms", kind: "int", option: "coldStartMs", help: "Cold-start mode: refuse prompts (and every API route) with 503 for this long after start or POST /_sim/reset (ms). Default 0." },
  { flag: "fault-seed", kind: "int", option: "faultSeed", help: "Seed of the PRNG behind --fail-rate. Default 1." },
  { flag: "fail-nth", kind: "intlist", fault: "failOnNth", help: "Fail the Nth executed prompt(s), e.g. 3 or 2,5." },
  { flag: "fail-marker", kind: "string", fault: "failMarker", help: "Fail prompts whose text contains this marker." },
  { flag: "fail-rate", kind: "number", fault: "failRate", help: "Fail each prompt with this probability (0-1)." },
  { flag: "fail-node", kind: "string", fault: "failNode", help: "class_type of the node that fails. Default KSampler." },
  { flag: "fail-exception-type", kind: "string", fault: "failExceptionType", help: "exception_type of injected errors. Default RuntimeError." },
  { flag: "fail-message", kind: "string", fault: "failMessage", help: "exception_message of injected errors." },
  { flag: "ws-silent", kind: "bool", fault: "wsSilent", help: "Send nothing on websockets; prompts still complete in /history." },
  { flag: "ws-silent-after", kind: "int", fault: "wsSilentAfter", help: "Per prompt, go silent after this many messages." },
  { flag: "view-delay-ms", kind: "number", fault: "viewDelayMs", help: "Delay every /view response by this many ms." },
  { flag: "crash-nth", kind: "int", fault: "crashOnNth", help: "Crash (and restart) while executing the Nth prompt." },
  { flag: "crash-down-ms", kind: "number", fault: "crashDownMs", help: "How long a crashed server stays down. Default 200." },
];

export const ENV_PREFIX = "SIM_COMFYUI_";

export function envName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replaceAll("-", "_");
}

/** A configuration mistake; the message names the flag or variable. */
export class ConfigError extends Error {}

function convert(s: Setting, raw: string | boolean, source: string): unknown {
  if (s.kind === "bool") {
    if (typeof raw === "boolean") return raw;
    const v = raw.trim().toLowerCase();
    if (["1", "true", "yes", "on"].includes(v)) return true;
    if (["0", "false", "no", "off", ""].includes(v)) return false;
    throw new ConfigError(`${source}: expected true or false, got "${raw}"`);
  }
  const text = String(raw).trim();
  switch (s.kind) {
    case "int":
    case "number": {
      const n = Number(text);
      if (text === "" || !Number.isFinite(n) || (s.kind === "int" && !Number.isInteger(n))) {
        throw new ConfigError(`${source}: expected ${s.kind === "int" ? "an integer" : "a number"}, got "${raw}"`);
      }
      return n;
    }
    case "list":
      return text.split(",").map((x) => x.trim()).filter((x) => x !== "");
    case "intlist":
      return text.split(",").map((x) => {
        const n = Number(x.trim());
        if (x.trim() === "" || !Number.isInteger(n)) throw new ConfigError(`${source}: expected integers separated by commas, got "${raw}"`);
        return n;
      });
    case "cache":
      if (text !== "classic" && text !== "none") throw new ConfigError(`${source}: expected classic or none, got "${raw}"`);
      return text;
    default:
      return text;
  }
}

export interface CliConfig {
  options: ComfySimOptions;
  help: boolean;
  quiet: boolean;
}

/** Reads flags (e.g. `process.argv.slice(2)`) over environment variables. The port defaults to 8188 here. */
export function parseConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): CliConfig {
  const parseOptions: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" }, quiet: { type: "boolean" } };
  for (const s of SETTINGS) {
    parseOptions[s.flag] = { type: s.kind === "bool" ? "boolean" : "string" };
    if (s.kind === "bool") parseOptions[`no-${s.flag}`] = { type: "boolean" };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options: parseOptions, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError(err instanceof Error ? err.message : String(err));
  }

  const options: ComfySimOptions = { port: 8188 };
  const faults: Record<string, unknown> = {};
  const set = (s: Setting, v: unknown) => {
    if (s.option) (options as Record<string, unknown>)[s.option] = v;
    else if (s.fault) faults[s.fault] = v;
  };
  for (const s of SETTINGS) {
    const name = envName(s.flag);
    const fromEnv = env[name];
    if (fromEnv !== undefined && fromEnv !== "") set(s, convert(s, fromEnv, name));
    const fromFlag = values[s.flag];
    if (fromFlag !== undefined) set(s, convert(s, fromFlag, `--${s.flag}`));
    if (s.kind === "bool" && values[`no-${s.flag}`]) set(s, false);
  }
  if (Object.keys(faults).length > 0) options.faults = faults as SimFaults;
  return { options, help: values.help === true, quiet: values.quiet === true };
}

/** The `--help` text. */
export function usage(): string {
  const lines = [
    "Usage: sim-comfyui [options]",
    "",
    "A ComfyUI-compatible server that renders deterministic PNGs without a GPU.",
    "Each option can also be set by an environment variable (shown in brackets); flags win.",
    "",
  ];
  for (const s of SETTINGS) {
    const arg = s.kind === "bool" ? "" : ` <${s.kind === "list" || s.kind === "intlist" ? "a,b" : s.kind === "cache" ? "classic|none" : s.kind === "string" ? "text" : "n"}>`;
    lines.push(`  --${s.flag}${arg}`.padEnd(40) + `${s.help} [${envName(s.flag)}]`);
  }
  lines.push("  --quiet".padEnd(40) + "Do not log prompts and restarts.");
  lines.push("  --help".padEnd(40) + "Show this help.");
  return lines.join("\n");
}
