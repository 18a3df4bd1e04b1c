/** The standalone process: `npm run -w tools/sim-comfyui start -- …` starts, serves, and stops on SIGTERM. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { postJson, sdxlGraph, waitForHistory } from "./helpers.js";

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const children: ChildProcess[] = [];

afterEach(() => {
  for (const c of children.splice(0)) {
    // The child leads its own process group (npm → sh → tsx → node); end that group only.
    if (c.pid === undefined) continue;
    try {
      process.kill(-c.pid, "SIGKILL");
    } catch {
      // the group has already gone
    }
  }
});

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcess; output: () => string } {
  const child = spawn("npm", ["run", "-s", "-w", "tools/sim-comfyui", "start", "--", ...args], {
    cwd: repoRoot, env: { ...process.env, ...env }, detached: true, stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

async function waitForOutput(output: () => string, pattern: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = pattern.exec(output());
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no ${pattern} in output:\n${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// "close" rather than "exit": it fires once the child's output streams are drained too, so assertions on the
// output see everything the process wrote.
const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => {
  if (child.stdout?.closed && (child.exitCode !== null || child.signalCode !== null)) resolve(child.exitCode);
  else child.once("close", (code) => resolve(code));
});

describe("sim-comfyui CLI", () => {
  it("prints where it listens, serves ComfyUI's API with its flags and env, and shuts down on SIGTERM", async () => {
    const { child, output } = start(["--port", "0", "--step-ms", "0", "--fail-marker", "CLIFAIL"], { SIM_COMFYUI_NODE_MS: "0" });
    const [, url] = await waitForOutput(output, /listening on (http:\/\/127\.0\.0\.1:\d+)/);
    // The faults line is a separate write that may arrive in a later chunk than the listening line.
    await waitForOutput(output, /faults: \{"failMarker":"CLIFAIL"\}/);

    const ok = await postJson(url as string, "/prompt", { prompt: sdxlGraph({ steps: 2, width: 64, height: 64 }) });
    expect(ok.status).toBe(200);
    expect((await waitForHistory(url as string, (ok.body as { prompt_id: string }).prompt_id)).status).toMatchObject({ status_str: "success" });
    const bad = await postJson(url as string, "/prompt", { prompt: sdxlGraph({ text: "CLIFAIL", steps: 2, width: 64, height: 64 }) });
    expect((await waitForHistory(url as string, (bad.body as { prompt_id: string }).prompt_id)).status).toMatchObject({ status_str: "error" });
    expect(output()).toMatch(/\[sim-comfyui\] got prompt/);

    // SIGTERM reaches npm, sh and the simulator alike; the simulator says so and stops listening.
    process.kill(-(child.pid as number), "SIGTERM");
    await waitForOutput(output, /SIGTERM, shutting down/);
    await exited(child);
    await expect(fetch(`${url}/prompt`)).rejects.toThrow();
  });

  it("exits with status 2 and the usage on a bad flag", async () => {
    const { child, output } = start(["--step-ms", "soon"]);
    expect(await exited(child)).not.toBe(0);
    expect(output()).toContain("--step-ms: expected a number");
    expect(output()).toContain("Usage: sim-comfyui");
  });
});
