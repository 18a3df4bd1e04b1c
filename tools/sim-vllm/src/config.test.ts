import { describe, expect, it } from "vitest";
import { envName, helpText, parseCli } from "./cli.js";
import { NO_FAULTS, SimConfigError, TIMING_PROFILES, parseModelSpec, resolveOptions, validateFaults } from "./config.js";

describe("parseModelSpec", () => {
  it("reads name and optional context window", () => {
    expect(parseModelSpec("qwen3-8b")).toEqual({ name: "qwen3-8b", maxModelLen: 4096 });
    expect(parseModelSpec("qwen3-8b:8192")).toEqual({ name: "qwen3-8b", maxModelLen: 8192 });
    expect(parseModelSpec("qwen3-8b:32k")).toEqual({ name: "qwen3-8b", maxModelLen: 32768 });
    expect(parseModelSpec("org/model", 100)).toEqual({ name: "org/model", maxModelLen: 100 });
  });

  it("keeps Ollama-style tags in the name", () => {
    expect(parseModelSpec("llama3.1:8b")).toEqual({ name: "llama3.1:8b", maxModelLen: 4096 });
    expect(parseModelSpec("llama3.1:8b:16k")).toEqual({ name: "llama3.1:8b", maxModelLen: 16384 });
  });

  it("rejects empty names and zero lengths", () => {
    expect(() => parseModelSpec(" ")).toThrow(SimConfigError);
    expect(() => parseModelSpec("m:0")).toThrow(/at least 1/);
  });
});

describe("resolveOptions", () => {
  it("fills defaults", () => {
    const o = resolveOptions();
    expect(o.models).toEqual([{ name: "sim-model", maxModelLen: 4096 }]);
    expect(o.timing).toEqual(TIMING_PROFILES.fast);
    expect(o.faults).toEqual(NO_FAULTS);
    expect(o.maxNumSeqs).toBe(256);
    expect(o.port).toBe(0);
    expect(o.apiKey).toBeUndefined();
  });

  it("applies a profile and lets timing fields override it", () => {
    const o = resolveOptions({ profile: "realistic", timing: { decodeTokensPerSec: 10 } });
    expect(o.timing).toEqual({ ...TIMING_PROFILES.realistic, decodeTokensPerSec: 10 });
  });

  it("names the bad option", () => {
    expect(() => resolveOptions({ models: ["a", "a"] })).toThrow(/listed twice/);
    expect(() => resolveOptions({ models: [] })).toThrow(/at least one model/);
    expect(() => resolveOptions({ maxNumSeqs: 0 })).toThrow(/maxNumSeqs/);
    expect(() => resolveOptions({ timing: { decodeTokensPerSec: 0 } })).toThrow(/decodeTokensPerSec/);
    expect(() => resolveOptions({ outputTokens: { min: 5, max: 2 } })).toThrow(/outputTokens/);
    expect(() => resolveOptions({ port: 70000 })).toThrow(/port/);
    expect(() => resolveOptions({ profile: "slow" as never })).toThrow(/profile/);
  });
});

describe("validateFaults", () => {
  it("accepts known faults and rejects unknown or out-of-range ones", () => {
    expect(validateFaults({ errorRate: 0.5, hangAfterTokens: 3, unhealthy: true }))
      .toEqual({ errorRate: 0.5, hangAfterTokens: 3, unhealthy: true });
    expect(() => validateFaults({ errorRate: 2 })).toThrow(/errorRate/);
    expect(() => validateFaults({ slowTokenMs: -1 })).toThrow(/slowTokenMs/);
    expect(() => validateFaults({ errorStatus: 200 })).toThrow(/errorStatus/);
    expect(() => validateFaults({ explode: true })).toThrow(/unknown fault "explode"/);
    expect(() => validateFaults([])).toThrow(/JSON object/);
  });
});

describe("parseCli", () => {
  it("uses vLLM's port by default", () => {
    const cli = parseCli([], {});
    expect(cli.sim.port).toBe(8000);
    expect(cli.sim.host).toBe("127.0.0.1");
    expect(cli.help).toBe(false);
  });

  it("reads repeatable models, timing and fault flags", () => {
    const cli = parseCli(["--port", "9000", "--model", "a:1024", "--model", "b", "--api-key", "k", "--decode-tps", "50",
      "--zero-time", "--max-num-seqs", "4", "--error-rate", "0.25", "--hang-after", "2", "--unhealthy",
      "--output-tokens", "3:9", "--no-prefix-caching", "--log-requests"], {});
    expect(cli.sim).toMatchObject({ port: 9000, models: ["a:1024", "b"], apiKey: "k", maxNumSeqs: 4,
      timing: { decodeTokensPerSec: 50, zeroTime: true }, faults: { errorRate: 0.25, hangAfterTokens: 2, unhealthy: true },
      outputTokens: { min: 3, max: 9 }, enablePrefixCaching: false });
    expect(cli.logRequests).toBe(true);
    expect(resolveOptions(cli.sim).models).toEqual([{ name: "a", maxModelLen: 1024 }, { name: "b", maxModelLen: 4096 }]);
  });

  it("falls back to SIM_VLLM_* variables, and flags win", () => {
    const env = { SIM_VLLM_PORT: "7000", SIM_VLLM_MODELS: "x:2k, y", SIM_VLLM_ZERO_TIME: "true", SIM_VLLM_HOST: "0.0.0.0" };
    expect(envName("model")).toBe("SIM_VLLM_MODEL");
    const cli = parseCli(["--port", "7001"], env);
    expect(cli.sim).toMatchObject({ port: 7001, host: "0.0.0.0", models: ["x:2k", "y"], timing: { zeroTime: true } });
  });

  it("reads VLLM_API_KEY like vLLM, SIM_VLLM_API_KEY first", () => {
    expect(parseCli([], { VLLM_API_KEY: "a" }).sim.apiKey).toBe("a");
    expect(parseCli([], { VLLM_API_KEY: "a", SIM_VLLM_API_KEY: "b" }).sim.apiKey).toBe("b");
  });

  it("rejects unknown flags and bad values with the flag's name", () => {
    expect(() => parseCli(["--bogus"], {})).toThrow(SimConfigError);
    expect(() => parseCli(["--port", "eighty"], {})).toThrow(/--port: "eighty" is not an integer/);
    expect(() => parseCli([], { SIM_VLLM_ERROR_RATE: "lots" })).toThrow(/SIM_VLLM_ERROR_RATE/);
    expect(() => parseCli([], { SIM_VLLM_UNHEALTHY: "maybe" })).toThrow(/boolean/);
    expect(() => parseCli(["--profile", "slow"], {})).toThrow(/--profile/);
    expect(() => parseCli(["--output-tokens", "a:b"], {})).toThrow(/--output-tokens/);
  });

  it("documents every flag with its variable", () => {
    const help = helpText();
    for (const flag of ["--port", "--model", "--api-key", "--prefill-tps", "--hang-rate", "--unhealthy"]) {
      expect(help).toContain(flag);
    }
    expect(help).toContain("SIM_VLLM_MAX_NUM_SEQS");
  });
});
