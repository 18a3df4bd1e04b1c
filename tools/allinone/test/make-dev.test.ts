// `make dev` as a person runs it: the all-in-one process comes up with /readyz = 200, stops cleanly on Ctrl-C
// (SIGINT), and a second start reuses the data of the first.
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { stopDevStack } from "@luna/devstack";
import { freePorts } from "@luna/kit/localstack";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";

const repo = resolve(import.meta.dirname, "../../..");
const dataDir = mkdtempSync(join(tmpdir(), "luna-dev-"));
chmodSync(dataDir, 0o755); // Postgres runs as an unprivileged user when the tests run as root

function startDev(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  let out = "";
  const child = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", "tools/allinone/src/main.ts"], {
    cwd: repo,
    env: { ...process.env, ...env, LUNA_DATA_DIR: dataDir, LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

/** Waits for the start-up summary (printed once everything runs) and a 200 from /readyz. */
async function waitReady(adminPort: number, dev: { child: ChildProcess; output: () => string }): Promise<Response> {
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (dev.child.exitCode !== null) throw new Error(`make dev exited early:\n${dev.output()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
      if (res.status === 200 && dev.output().includes("Luna is running")) return res;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`not ready in time:\n${dev.output()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function stop(dev: { child: ChildProcess }): Promise<number | null> {
  dev.child.kill("SIGINT");
  return await new Promise((r) => dev.child.once("exit", (code) => r(code)));
}

const started: ChildProcess[] = [];

// Even when an assertion fails half-way: no platform process and no local server outlives the test.
afterAll(async () => {
  for (const child of started) if (child.exitCode === null) child.kill("SIGKILL");
  await stopDevStack(dataDir);
  rmSync(dataDir, { recursive: true, force: true });
});

describe("make dev (all-in-one)", () => {
  it("serves /readyz, stops cleanly on Ctrl-C, and a second start reuses the data", async () => {
    const [api, admin, pgPort, redis, nats, natsMon, vllm, comfy] = await freePorts(8);
    const env = {
      LUNA_PORT: String(api), LUNA_ADMIN_PORT: String(admin), LUNA_PG_PORT: String(pgPort), LUNA_REDIS_PORT: String(redis),
      LUNA_NATS_PORT: String(nats), LUNA_NATS_MONITOR_PORT: String(natsMon), LUNA_SIM_VLLM_PORT: String(vllm),
      LUNA_SIM_COMFYUI_PORT: String(comfy),
    };

    const first = startDev(env);
    const ready = await waitReady(admin!, first);
    expect(((await ready.json()) as { status: string }).status).toBe("ok");
    expect(first.output()).toMatch(/invite codes .*invites\.txt/);
    // Public RPCs answer on the API port; internal ones are not served there at all (as through the gateway).
    const rpc = (path: string) => fetch(`http://127.0.0.1:${api}/${path}`, { method: "POST", body: "{}",
      headers: { "content-type": "application/json" } });
    expect((await rpc("luna.models.v1.ModelService/ListModels")).status).toBe(200);
    expect((await rpc("luna.billing.v1.CreditsService/Reserve")).status).toBe(404);
    expect((await rpc("luna.models.v1.ModelUpstreamService/GetCatalogSnapshot")).status).toBe(404);
    // Leave a mark in the data that a second start must still see.
    const db = new pg.Client({ connectionString: `postgresql://luna@127.0.0.1:${pgPort}/postgres` });
    await db.connect();
    await db.query("CREATE TABLE IF NOT EXISTS dev_restart_marker (note text)");
    await db.query("INSERT INTO dev_restart_marker VALUES ('kept')");
    await db.end();
    const internalKey = readFileSync(join(dataDir, "internal-key.json"), "utf8");
    expect(await stop(first)).toBe(0);
    expect(first.output()).toContain("Luna stopped.");
    // Ctrl-C stops the local servers too: nothing answers on the API or admin ports any more.
    await expect(fetch(`http://127.0.0.1:${admin}/readyz`)).rejects.toThrow();

    const second = startDev(env);
    await waitReady(admin!, second);
    const db2 = new pg.Client({ connectionString: `postgresql://luna@127.0.0.1:${pgPort}/postgres` });
    await db2.connect();
    const { rows } = await db2.query<{ note: string }>("SELECT note FROM dev_restart_marker");
    await db2.end();
    expect(rows.map((r) => r.note)).toEqual(["kept"]);
    expect(readFileSync(join(dataDir, "internal-key.json"), "utf8")).toBe(internalKey);
    expect(await stop(second)).toBe(0);
  }, 240_000);
});
