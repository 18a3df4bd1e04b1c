// `make dev-split` as a person runs it: the launcher starts the local stack and one process per service, the dev
// gateway answers, and Ctrl-C (SIGINT) stops every service process and the local servers, exiting 0.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePorts } from "@luna/kit/localstack";
import { afterAll, describe, expect, it } from "vitest";
import { canConnect } from "../src/children.js";

const repo = resolve(import.meta.dirname, "../../..");
const dataDir = mkdtempSync(join(tmpdir(), "luna-dev-split-"));
chmodSync(dataDir, 0o755); // Postgres runs as an unprivileged user when the tests run as root
let launcher: ChildProcess | undefined;

afterAll(() => {
  if (launcher?.exitCode === null) launcher.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("make dev-split", () => {
  it("runs every service as its own process behind the gateway, and Ctrl-C stops them all", async () => {
    const [api, admin, pgPort, redis, nats, natsMon, vllm, comfy] = await freePorts(8);
    let out = "";
    launcher = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", "tools/split/src/main.ts"], {
      cwd: repo,
      env: { ...process.env, LUNA_DATA_DIR: dataDir, LOG_LEVEL: "warn", LUNA_PORT: String(api), LUNA_ADMIN_PORT: String(admin),
        LUNA_PG_PORT: String(pgPort), LUNA_REDIS_PORT: String(redis), LUNA_NATS_PORT: String(nats),
        LUNA_NATS_MONITOR_PORT: String(natsMon), LUNA_SIM_VLLM_PORT: String(vllm), LUNA_SIM_COMFYUI_PORT: String(comfy) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    launcher.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    launcher.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => launcher!.once("exit", (code) => r(code)));

    const deadline = Date.now() + 150_000;
    for (;;) {
      if (launcher.exitCode !== null) throw new Error(`make dev-split exited early:\n${out}`);
      if (out.includes("Luna is running")) break;
      if (Date.now() > deadline) throw new Error(`not running in time:\n${out}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const ready = await fetch(`http://127.0.0.1:${admin}/readyz`);
    expect(ready.status).toBe(200);
    // One line per process in the summary, each with its own pid (none of them the launcher's).
    const pids = [...out.matchAll(/ pid (\d+)$/gm)].map((m) => Number(m[1]));
    expect(pids.length).toBeGreaterThanOrEqual(3);
    expect(new Set(pids).size).toBe(pids.length);
    expect(pids).not.toContain(launcher.pid);
    for (const pid of pids) expect(alive(pid)).toBe(true);

    const models = await fetch(`http://127.0.0.1:${api}/luna.models.v1.ModelService/ListModels`, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(models.status).toBe(200);
    expect(((await models.json()) as { models: unknown[] }).models.length).toBeGreaterThan(0);
    const invites = readFileSync(join(dataDir, "invites.txt"), "utf8").split("\n").filter(Boolean);
    expect(invites).toHaveLength(5);
    expect(out).toContain(invites[0]);

    launcher.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(out).toContain("Luna stopped.");
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(await canConnect(api!)).toBe(false);
    expect(await canConnect(pgPort!)).toBe(false); // the local servers stopped too (LUNA_STOP_STACK_ON_EXIT)
  }, 240_000);
});
