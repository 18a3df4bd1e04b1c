import { describe, expect, it } from "vitest";
import { ConfigError, SETTINGS, envName, parseConfig, usage } from "./config.js";
import { resolveOptions } from "./options.js";

describe("parseConfig", () => {
  it("defaults the port to 8188 and sets nothing else", () => {
    expect(parseConfig([], {})).toEqual({ options: { port: 8188 }, help: false, quiet: false });
  });

  it("reads flags into options and faults", () => {
    const { options } = parseConfig(
      ["--port", "9000", "--host", "0.0.0.0", "--step-ms", "0", "--no-previews", "--cache", "none", "--checkpoints", "a.safetensors, b.safetensors",
        "--fail-nth", "2,5", "--fail-marker", "BOOM", "--ws-silent", "--view-delay-ms", "250", "--crash-nth", "3"],
      {},
    );
    expect(options).toEqual({
      port: 9000, host: "0.0.0.0", stepMs: 0, previews: false, cache: "none", checkpoints: ["a.safetensors", "b.safetensors"],
      faults: { failOnNth: [2, 5], failMarker: "BOOM", wsSilent: true, viewDelayMs: 250, crashOnNth: 3 },
    });
  });

  it("reads SIM_COMFYUI_* variables; flags win", () => {
    const env = { SIM_COMFYUI_PORT: "7000", SIM_COMFYUI_STEP_MS: "12", SIM_COMFYUI_WS_SILENT_AFTER: "4", SIM_COMFYUI_KEEP_HISTORY_ON_RESTART: "yes" };
    const { options } = parseConfig(["--port", "7001"], env);
    expect(options).toMatchObject({ port: 7001, stepMs: 12, keepHistoryOnRestart: true, faults: { wsSilentAfter: 4 } });
  });

  it("names the flag or variable in errors", () => {
    expect(() => parseConfig(["--step-ms", "fast"], {})).toThrow(/--step-ms: expected a number/);
    expect(() => parseConfig([], { SIM_COMFYUI_PORT: "80.5" })).toThrow(/SIM_COMFYUI_PORT: expected an integer/);
    expect(() => parseConfig(["--cache", "lru"], {})).toThrow(/--cache: expected classic or none/);
    expect(() => parseConfig(["--bogus"], {})).toThrow(ConfigError);
    expect(() => parseConfig([], { SIM_COMFYUI_PREVIEWS: "maybe" })).toThrow(/SIM_COMFYUI_PREVIEWS/);
  });

  it("documents every setting with its variable in --help", () => {
    const text = usage();
    for (const s of SETTINGS) {
      expect(text).toContain(`--${s.flag}`);
      expect(text).toContain(envName(s.flag));
    }
  });
});

describe("resolveOptions", () => {
  it("fills defaults", () => {
    const r = resolveOptions();
    expect(r).toMatchObject({ port: 0, host: "127.0.0.1", stepMs: 5, nodeMs: 1, previews: true, cache: "classic", faults: {} });
    expect(r.checkpoints).toContain("flux1-schnell-fp8.safetensors");
  });

  it("rejects out-of-range options and faults, naming them", () => {
    expect(() => resolveOptions({ stepMs: -1 })).toThrow(/stepMs/);
    expect(() => resolveOptions({ port: 70000 })).toThrow(/port/);
    expect(() => resolveOptions({ maxImages: 0 })).toThrow(/maxImages/);
    expect(() => resolveOptions({ faults: { failOnNth: [0] } })).toThrow(/failOnNth/);
    expect(() => resolveOptions({ faults: { failRate: 1.5 } })).toThrow(/failRate/);
    expect(() => resolveOptions({ faults: { nope: true } as never })).toThrow(/unknown fault "nope"/);
  });
});
