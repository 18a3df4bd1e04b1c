// A small command-line layer over node:util parseArgs: each command declares its options and positionals once, and
// gets parsing, validation (UsageError → exit 2) and its `--help` text from that declaration.
import { parseArgs } from "node:util";
import { UsageError } from "./errors.js";

export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  /** Placeholder in help, e.g. "N" for `--count N`. */
  value?: string;
  description: string;
}

export interface PositionalSpec {
  name: string;
  description: string;
  optional?: boolean;
}

/** Parsed arguments handed to a command. */
export interface Args {
  /** Option values by name; repeated options keep the last value. */
  options: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export interface CommandSpec<C> {
  /** Words after `luna`, e.g. "admin invites create". */
  name: string;
  summary: string;
  /** Extra help paragraphs (examples, notes). */
  details?: string;
  options?: Record<string, OptionSpec>;
  positionals?: PositionalSpec[];
  /** Resolves to the exit code, or to nothing for success. */
  run(ctx: C, args: Args): Promise<void | number>;
}

/** Options every command accepts. */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  url: { type: "string", value: "URL", description: "Luna server (default $LUNA_URL or http://localhost:8080)" },
  help: { type: "boolean", short: "h", description: "Show help for this command" },
};

/** Parses a command's own arguments (after its name words). */
export function parseCommandArgs<C>(spec: CommandSpec<C>, argv: string[]): Args {
  const options = { ...GLOBAL_OPTIONS, ...spec.options };
  let parsed;
  try {
    parsed = parseArgs({
      args: joinDashValues(argv, options),
      options: Object.fromEntries(Object.entries(options).map(([k, o]) => [k, { type: o.type, ...(o.short ? { short: o.short } : {}) }])),
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(cleanParseError(err), spec.name);
  }
  const values = parsed.values as Args["options"];
  if (values.help) return { options: values, positionals: parsed.positionals };
  const specs = spec.positionals ?? [];
  const required = specs.filter((p) => !p.optional).length;
  if (parsed.positionals.length < required) {
    throw new UsageError(`missing ${specs[parsed.positionals.length]!.name}`, spec.name);
  }
  if (parsed.positionals.length > specs.length) {
    const extra = parsed.positionals[specs.length]!;
    throw new UsageError(`unexpected argument "${extra}"`, spec.name);
  }
  for (const [name, o] of Object.entries(options)) {
    if (o.type === "string" && values[name] === "") throw new UsageError(`--${name} needs a value`, spec.name);
  }
  return { options: values, positionals: parsed.positionals };
}

/**
 * parseArgs refuses a value that starts with "-" (`--limit -1` is "ambiguous"); a string option always takes the
 * next word, so join it as `--limit=-1` and let the option's own check say what is wrong with it.
 */
function joinDashValues(argv: string[], options: Record<string, OptionSpec>): string[] {
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== "string") continue;
    takesValue.add(`--${name}`);
    if (o.short) takesValue.add(`-${o.short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    if (takesValue.has(a) && next !== undefined && next.startsWith("-") && next !== "-") {
      out.push(a.startsWith("--") ? `${a}=${next}` : `${a}${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

function cleanParseError(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  // parseArgs explains how to pass a value starting with "-"; the first sentence is the useful part.
  const unknown = /Unknown option '([^']+)'/.exec(msg);
  if (unknown) return `unknown option ${unknown[1]}`;
  const missing = /Option '(?:-\w, )?(--[\w-]+)[^']*' argument missing/.exec(msg);
  if (missing) return `${missing[1]} needs a value`;
  return msg.split(/\.\s/)[0]!.replace(/\.$/, "");
}

/** The `--help` text of one command. */
export function commandHelp<C>(spec: CommandSpec<C>): string {
  const positionals = (spec.positionals ?? []).map((p) => (p.optional ? `[${p.name}]` : p.name)).join(" ");
  const lines = [`Usage: luna ${spec.name}${spec.options ? " [options]" : ""}${positionals ? ` ${positionals}` : ""}`, "", spec.summary];
  if (spec.details) lines.push("", spec.details);
  if (spec.positionals?.length) {
    lines.push("", "Arguments:");
    for (const p of spec.positionals) lines.push(`  ${p.name.padEnd(22)} ${p.description}`);
  }
  lines.push("", "Options:");
  for (const [name, o] of Object.entries({ ...spec.options, ...GLOBAL_OPTIONS })) {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${o.type === "string" ? ` ${o.value ?? "VALUE"}` : ""}`;
    lines.push(`  ${flag.padEnd(22)} ${o.description}`);
  }
  return lines.join("\n");
}

/** Integer option or positional within [min, max]. */
export function intArg(value: string | boolean | undefined, name: string, opts: { min: number; max?: number; default?: number }, command?: string): number {
  if (value === undefined || value === false) {
    if (opts.default !== undefined) return opts.default;
    throw new UsageError(`missing ${name}`, command);
  }
  const text = String(value);
  if (!/^-?\d+$/.test(text)) throw new UsageError(`${name} must be a whole number, got "${text}"`, command);
  const n = Number(text);
  if (n < opts.min || (opts.max !== undefined && n > opts.max)) {
    throw new UsageError(`${name} must be ${opts.max !== undefined ? `between ${opts.min} and ${opts.max}` : `at least ${opts.min}`}, got ${n}`, command);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

/** Parses "90s", "30m", "12h", "7d", "2w" into seconds. */
export function durationArg(value: string, name: string, command?: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(value.trim());
  if (!m || Number(m[1]) <= 0) throw new UsageError(`${name} must be a duration like 30m, 12h or 7d, got "${value}"`, command);
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

/** A string option or undefined. */
export function str(args: Args, name: string): string | undefined {
  const v = args.options[name];
  return typeof v === "string" ? v : undefined;
}
