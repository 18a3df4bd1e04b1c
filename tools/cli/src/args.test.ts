import { describe, expect, it } from "vitest";
import { commandHelp, durationArg, intArg, parseCommandArgs, type CommandSpec } from "./args.js";
import { UsageError } from "./errors.js";

const spec: CommandSpec<unknown> = {
  name: "admin grant",
  summary: "Grant credits.",
  positionals: [{ name: "<user>", description: "who" }, { name: "<credits>", description: "how many" }],
  options: { reason: { type: "string", value: "TEXT", description: "why" }, dry: { type: "boolean", description: "dry run" } },
  run: async () => {},
};

function usageError(fn: () => unknown): UsageError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    return err as UsageError;
  }
  throw new Error("expected a UsageError");
}

describe("parseCommandArgs", () => {
  it("parses options and positionals, with --url and --help everywhere", () => {
    const a = parseCommandArgs(spec, ["ann@x.io", "--reason", "thanks", "500", "--dry", "--url", "http://h:1"]);
    expect(a.positionals).toEqual(["ann@x.io", "500"]);
    expect(a.options).toMatchObject({ reason: "thanks", dry: true, url: "http://h:1" });
    expect(parseCommandArgs(spec, ["--help"]).options.help).toBe(true); // no positionals needed for help
  });

  it("names what is wrong, and the command whose help explains it", () => {
    expect(usageError(() => parseCommandArgs(spec, ["ann"]))).toMatchObject({ message: "missing <credits>", command: "admin grant" });
    expect(usageError(() => parseCommandArgs(spec, ["a", "1", "2"])).message).toBe('unexpected argument "2"');
    expect(usageError(() => parseCommandArgs(spec, ["a", "1", "--nope"])).message).toBe("unknown option --nope");
    expect(usageError(() => parseCommandArgs(spec, ["a", "1", "--reason"])).message).toBe("--reason needs a value");
    expect(usageError(() => parseCommandArgs(spec, ["a", "1", "--reason="])).message).toBe("--reason needs a value");
  });

  it("takes a value starting with a dash (a negative number) instead of calling it ambiguous", () => {
    const withLimit: CommandSpec<unknown> = { ...spec, positionals: [], options: { limit: { type: "string", short: "n", description: "n" } } };
    expect(parseCommandArgs(withLimit, ["--limit", "-1"]).options.limit).toBe("-1");
    expect(parseCommandArgs(withLimit, ["-n", "-5"]).options.limit).toBe("-5");
    expect(usageError(() => intArg(parseCommandArgs(withLimit, ["--limit", "-1"]).options.limit, "--limit", { min: 1 })).message)
      .toBe("--limit must be at least 1, got -1");
  });

  it("writes help from the declaration", () => {
    const help = commandHelp(spec);
    expect(help).toMatch(/^Usage: luna admin grant \[options\] <user> <credits>\n\nGrant credits\./);
    expect(help).toMatch(/\n {6}--reason TEXT {6}why\n/);
    expect(help).toContain("-h, --help");
  });
});

describe("value parsers", () => {
  it("intArg checks whole numbers and bounds, with a default", () => {
    expect(intArg("5", "--count", { min: 1, max: 10 })).toBe(5);
    expect(intArg(undefined, "--count", { min: 1, default: 3 })).toBe(3);
    expect(usageError(() => intArg("2.5", "--count", { min: 1 })).message).toBe('--count must be a whole number, got "2.5"');
    expect(usageError(() => intArg("11", "--count", { min: 1, max: 10 })).message).toBe("--count must be between 1 and 10, got 11");
    expect(usageError(() => intArg("0", "--n", { min: 1 })).message).toBe("--n must be at least 1, got 0");
    expect(usageError(() => intArg(undefined, "--n", { min: 1 })).message).toBe("missing --n");
  });

  it("durationArg reads s/m/h/d/w into seconds", () => {
    expect(durationArg("90s", "--expires")).toBe(90);
    expect(durationArg("30m", "--expires")).toBe(1800);
    expect(durationArg("7d", "--expires")).toBe(604_800);
    expect(durationArg("2w", "--expires")).toBe(1_209_600);
    for (const bad of ["7", "0d", "1y", "-1d", "soon"]) expect(() => durationArg(bad, "--expires")).toThrow(/--expires must be a duration/);
  });
});
