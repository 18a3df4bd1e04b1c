// Configuration is read from the environment once, in main.ts, validated with zod and passed down. A bad deployment
// fails at start with every offending variable named, instead of at the first request that needs it.
import * as z from "zod";

/** One rejected environment variable. */
export type ConfigIssue = { variable: string; message: string };

/** Thrown by {@link loadConfig}; the message lists every bad variable as `NAME: reason`, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly issues: ConfigIssue[]) {
    super(`invalid configuration:\n${issues.map((i) => `  ${i.variable}: ${i.message}`).join("\n")}`);
  }
}

/**
 * Validates `env` against a zod object schema whose keys are variable names and returns the parsed config.
 * Empty variables count as unset (Helm and compose files often render optional values as "").
 */
export function loadConfig<S extends z.ZodObject>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const input: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (value !== undefined && value !== "") input[key] = value;
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue): ConfigIssue => {
    const variable = issue.path.length > 0 ? issue.path.map(String).join(".") : "(config)";
    const unset = issue.path.length === 1 && input[String(issue.path[0])] === undefined;
    return { variable, message: unset && issue.code === "invalid_type" ? "required but not set" : issue.message };
  });
  throw new ConfigError(issues);
}

// Values are echoed in messages only for helpers whose values are never secret (ports, durations, booleans), and
// truncated so a pasted blob cannot flood the log.
function shown(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}

const PORT_RE = /^\d{1,5}$/;

/** A TCP port 1-65535; `def` is used when unset. */
export function port(def?: number) {
  const schema = z.string().trim().transform((v, ctx) => {
    const n = Number(v);
    if (!PORT_RE.test(v) || n < 1 || n > 65535) {
      ctx.addIssue({ code: "custom", message: `expected a port number 1-65535, got ${shown(v)}` });
      return z.NEVER;
    }
    return n;
  });
  return def === undefined ? schema : schema.optional().transform((v) => v ?? def);
}

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Parses "250ms", "30s", "1.5s", "5m", "1h", "7d" to whole milliseconds; undefined when malformed. */
export function parseDuration(value: string): number | undefined {
  const m = DURATION_RE.exec(value.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
}

/** A duration string ("250ms", "30s", "5m", "1h", "7d") parsed to milliseconds; `def` (same syntax) when unset. */
export function duration(def?: string) {
  const schema = z.string().transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: "custom", message: `expected a duration like 250ms, 30s, 5m, 1h or 7d, got ${shown(v)}` });
      return z.NEVER;
    }
    return ms;
  });
  if (def === undefined) return schema;
  const defMs = parseDuration(def);
  if (defMs === undefined) throw new Error(`duration(): invalid default ${JSON.stringify(def)}`);
  return schema.optional().transform((v) => v ?? defMs);
}

/** A boolean: "true"/"false"/"1"/"0" (any case); `def` when unset. */
export function bool(def?: boolean) {
  const schema = z.string().transform((v, ctx) => {
    const s = v.trim().toLowerCase();
    if (s === "true" || s === "1") return true;
    if (s === "false" || s === "0") return false;
    ctx.addIssue({ code: "custom", message: `expected true, false, 1 or 0, got ${shown(v)}` });
    return z.NEVER;
  });
  return def === undefined ? schema : schema.optional().transform((v) => v ?? def);
}

/** A comma-separated list, items trimmed, empty items dropped; `def` when unset. */
export function csv(def?: string[]) {
  const schema = z.string().transform((v) => v.split(",").map((s) => s.trim()).filter((s) => s.length > 0));
  return def === undefined ? schema : schema.optional().transform((v) => v ?? def);
}

/**
 * An absolute URL, returned as given (no normalisation, which would rewrite e.g. database URLs). The value is not
 * echoed in errors because URLs often carry passwords. `protocols` restricts the scheme, e.g. ["http:", "https:"].
 */
export function url(def?: string, opts: { protocols?: string[] } = {}) {
  const schema = z.string().trim().transform((v, ctx) => {
    let parsed: URL;
    try {
      parsed = new URL(v);
    } catch {
      ctx.addIssue({ code: "custom", message: "expected an absolute URL (scheme://host...)" });
      return z.NEVER;
    }
    if (opts.protocols && !opts.protocols.includes(parsed.protocol)) {
      ctx.addIssue({ code: "custom", message: `expected a URL with scheme ${opts.protocols.join(" or ")}, got ${parsed.protocol}` });
      return z.NEVER;
    }
    return v;
  });
  return def === undefined ? schema : schema.optional().transform((v) => v ?? def);
}
