import { describe, expect, it } from "vitest";
import * as z from "zod";
import { bool, ConfigError, csv, duration, loadConfig, parseDuration, port, url } from "./config.js";
import { eventRetentionConfigSchema, inboxPruneOf, outboxPruneOf } from "./retention.js";

const schema = z.object({
  LUNA_PORT: port(8080),
  ADMIN_PORT: port(),
  DATABASE_URL: url(),
  SHUTDOWN_GRACE: duration("10s"),
  HOLD_TTL: duration(),
  DEBUG_SQL: bool(false),
  CORS_ORIGINS: csv([]),
  LOG_LEVEL: z.enum(["debug", "info", "warn"]).default("info"),
});

const good = { ADMIN_PORT: "9090", DATABASE_URL: "postgres://u:p@localhost:5432/billing", HOLD_TTL: "5m" };

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("parses values and applies defaults", () => {
    const config = loadConfig(schema, { ...good, CORS_ORIGINS: " https://a.example , ,https://b.example", DEBUG_SQL: "TRUE" });
    expect(config).toEqual({
      LUNA_PORT: 8080,
      ADMIN_PORT: 9090,
      DATABASE_URL: "postgres://u:p@localhost:5432/billing",
      SHUTDOWN_GRACE: 10_000,
      HOLD_TTL: 300_000,
      DEBUG_SQL: true,
      CORS_ORIGINS: ["https://a.example", "https://b.example"],
      LOG_LEVEL: "info",
    });
  });

  it("names every offending variable with its reason in one error", () => {
    const err = configError(() => loadConfig(schema, {
      LUNA_PORT: "abc", ADMIN_PORT: "70000", HOLD_TTL: "5 minutes", DEBUG_SQL: "yes", LOG_LEVEL: "loud",
    }));
    const byVar = Object.fromEntries(err.issues.map((i) => [i.variable, i.message]));
    expect(byVar.LUNA_PORT).toBe('expected a port number 1-65535, got "abc"');
    expect(byVar.ADMIN_PORT).toBe('expected a port number 1-65535, got "70000"');
    expect(byVar.DATABASE_URL).toBe("required but not set");
    expect(byVar.HOLD_TTL).toBe('expected a duration like 250ms, 30s, 5m, 1h or 7d, got "5 minutes"');
    expect(byVar.DEBUG_SQL).toBe('expected true, false, 1 or 0, got "yes"');
    expect(byVar.LOG_LEVEL).toMatch(/debug/);
    expect(Object.keys(byVar).sort()).toEqual(["ADMIN_PORT", "DATABASE_URL", "DEBUG_SQL", "HOLD_TTL", "LOG_LEVEL", "LUNA_PORT"]);
    expect(err.message).toContain('LUNA_PORT: expected a port number 1-65535, got "abc"');
    expect(err.message.split("\n")).toHaveLength(7);
  });

  it("treats empty variables as unset", () => {
    expect(loadConfig(schema, { ...good, LUNA_PORT: "" }).LUNA_PORT).toBe(8080);
    const err = configError(() => loadConfig(schema, { ...good, DATABASE_URL: "" }));
    expect(err.issues).toEqual([{ variable: "DATABASE_URL", message: "required but not set" }]);
  });

  it("never echoes URL values (they carry passwords)", () => {
    const err = configError(() => loadConfig(schema, { ...good, DATABASE_URL: "secret-password@nowhere" }));
    expect(err.message).toContain("DATABASE_URL: expected an absolute URL");
    expect(err.message).not.toContain("secret-password");
  });

  it("restricts URL schemes when asked", () => {
    const s = z.object({ JWKS_URL: url(undefined, { protocols: ["http:", "https:"] }) });
    expect(loadConfig(s, { JWKS_URL: "https://auth/.well-known/jwks.json" }).JWKS_URL).toBe("https://auth/.well-known/jwks.json");
    expect(configError(() => loadConfig(s, { JWKS_URL: "ftp://x" })).issues[0]!.message).toContain("http: or https:");
  });

  it("accepts boolean spellings 1/0/true/false", () => {
    const s = z.object({ B: bool() });
    expect(["1", "true", "True"].map((v) => loadConfig(s, { B: v }).B)).toEqual([true, true, true]);
    expect(["0", "false", "FALSE"].map((v) => loadConfig(s, { B: v }).B)).toEqual([false, false, false]);
  });
});

describe("parseDuration", () => {
  it("converts units to milliseconds", () => {
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("30s")).toBe(30_000);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration("5m")).toBe(300_000);
    expect(parseDuration("1h")).toBe(3_600_000);
    expect(parseDuration("7d")).toBe(604_800_000);
  });
  it("rejects malformed values", () => {
    for (const bad of ["", "30", "s", "-1s", "1w", "1 s", "1e3ms"]) expect(parseDuration(bad)).toBeUndefined();
  });
  it("rejects an invalid default at schema definition", () => {
    expect(() => duration("soon")).toThrow(/invalid default/);
  });
});

describe("eventRetentionConfigSchema", () => {
  it("keeps outbox rows 7 days and inbox rows 14 days, pruned hourly, unless told otherwise", () => {
    const c = loadConfig(eventRetentionConfigSchema, {});
    expect(c).toEqual({ LUNA_OUTBOX_RETAIN: 604_800_000, LUNA_INBOX_RETAIN: 1_209_600_000, LUNA_EVENT_PRUNE_INTERVAL: 3_600_000 });
    expect(outboxPruneOf(c)).toEqual({ retainMs: 604_800_000, intervalMs: 3_600_000 });
    expect(inboxPruneOf(loadConfig(eventRetentionConfigSchema, { LUNA_INBOX_RETAIN: "30d", LUNA_EVENT_PRUNE_INTERVAL: "10m" })))
      .toEqual({ retainMs: 2_592_000_000, intervalMs: 600_000 });
  });

  it("names a bad retention", () => {
    expect(() => loadConfig(eventRetentionConfigSchema, { LUNA_OUTBOX_RETAIN: "a week" })).toThrow(/LUNA_OUTBOX_RETAIN: expected a duration/);
  });
});
