/** The standalone entry point, run the way `npm run -w tools/sim-vllm start` runs it (tsx, luna-source). */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { get, post } from "./helpers.js";

const pkgDir = fileURLToPath(new URL("..", import.meta.url));
let child: ChildProcess | undefined;

afterEach(() => {
  if (child && child.exitCode === null) child.kill("SIGKILL");
  child = undefined;
});

/** Starts src/main.ts with tsx; resolves with the listening line, or rejects with the process output. */
function run(args: string[], env: Record<string, string> = {}): { ready: Promise<string>; exit: Promise<number | null>;
  output: () => string } {
  let out = "";
  child = spawn(process.execPath, ["--import", "tsx", "--conditions=luna-source", "src/main.ts", ...args],
    { cwd: pkgDir, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  // "close", not "exit": it also waits for stdout/stderr to drain, so output assertions see every line.
  const exit = new Promise<number | null>((resolve) => child!.on("close", (code) => resolve(code)));
  const ready = new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      const line = /vLLM simulator listening on .*/.exec(out);
      if (line) resolve(line[0]);
    };
    child!.stdout!.on("data", onData);
    child!.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    void exit.then((code) => reject(new Error(`exited with ${code}: ${out}`)));
  });
  ready.catch(() => undefined); // tests that expect an exit never await `ready`
  return { ready, exit, output: () => out };
}

describe("main.ts", () => {
  it("starts from flags and env, serves, and stops cleanly on SIGTERM", async () => {
    const p = run(["--port", "0", "--model", "cli-model:2k", "--zero-time"], { SIM_VLLM_API_KEY: "k" });
    const line = await p.ready;
    expect(line).toMatch(/^vLLM simulator listening on http:\/\/127\.0\.0\.1:\d+ \(models: cli-model \(max_model_len 2048\)\)$/);
    const url = /http:\/\/[^ ]+/.exec(line)![0];
    expect((await get(`${url}/health`)).status).toBe(200);
    expect((await get(`${url}/v1/models`)).status).toBe(401);
    const models = await get(`${url}/v1/models`, { authorization: "Bearer k" });
    expect(JSON.parse(models.body).data[0]).toMatchObject({ id: "cli-model", max_model_len: 2048 });
    const chat = await post(`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "hi" }], max_tokens: 2 },
      { authorization: "Bearer k" });
    expect(JSON.parse(chat.body).usage.completion_tokens).toBe(2);
    child!.kill("SIGTERM");
    expect(await p.exit).toBe(0);
  });

  it("prints help", async () => {
    const p = run(["--help"]);
    expect(await p.exit).toBe(0);
    expect(p.output()).toContain("--max-num-seqs");
  });

  it("exits 2 with a message naming a bad flag", async () => {
    const p = run(["--decode-tps", "fast"]);
    expect(await p.exit).toBe(2);
    expect(p.output()).toContain('--decode-tps: "fast" is not a number');
    const q = run([], { SIM_VLLM_MAX_NUM_SEQS: "0" });
    expect(await q.exit).toBe(2);
    expect(q.output()).toContain("maxNumSeqs");
  });
});
