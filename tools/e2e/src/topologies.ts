// The two ways Luna runs locally, started the same way for the end-to-end scenario: the all-in-one process (every
// module in this process, on one port) and the split platform (one process per service behind the dev gateway).
// Each gets fresh databases on the run's shared Postgres, a NATS and a Redis of its own (so durable consumers,
// streams and rate-limit keys never meet another topology's or test file's), and inference simulators the test
// controls (to make a reply hang, for instance).
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServiceName } from "@luna/kit";
import { findRepoRoot } from "@luna/devstack";
import { freePorts } from "@luna/kit/localstack";
import { createTestDatabase, startDedicatedNats, startDedicatedRedis, type TestDatabase } from "@luna/kit/testing";
import { MODULES, startPlatform } from "@luna/allinone";
import { discoverProcesses, splitDatabases, startSplitPlatform } from "@luna/split";
import { startEnvoyContainer } from "@luna/gateway/run";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { startComfySim, type ComfySim } from "@luna/sim-comfyui";

export type TopologyName = "all-in-one" | "split" | "envoy";
/**
 * `envoy` (the split platform behind the real Envoy, in a container: gateway/src/envoy-run.ts) runs only when
 * LUNA_E2E_ENVOY=1, as in .github/workflows/gateway.yml; it needs a container engine and the Envoy image.
 */
export const TOPOLOGIES: readonly TopologyName[] = ["all-in-one", "split", ...(process.env.LUNA_E2E_ENVOY === "1" ? ["envoy" as const] : [])];

/** The dev admin both topologies create on start (AUTH_ADMIN_EMAIL / AUTH_ADMIN_PASSWORD). */
export const ADMIN = { email: "admin@e2e.test", password: "e2e-admin-passphrase-42" } as const;

/**
 * Which services a topology runs, known before it starts (so tests of a service not there yet are skipped at
 * collection): the all-in-one hosts the modules registered in tools/allinone; the split platform every service
 * whose `src/main.ts` exists.
 */
export function servicesOf(name: TopologyName): ReadonlySet<string> {
  if (name === "all-in-one") return new Set(MODULES.map((m) => m.name));
  return new Set(discoverProcesses(findRepoRoot()).map((p) => p.name));
}

export interface Topology {
  name: TopologyName;
  /** What clients talk to: the all-in-one port, or the dev gateway. */
  url: string;
  dataDir: string;
  hosts(service: ServiceName | "image-worker"): boolean;
  vllm: VllmSim;
  comfy: ComfySim;
  /** Invite codes from the dev bootstrap (`<dataDir>/invites.txt`). */
  devInvites(): string[];
  /** Output of the split platform's processes (empty for the all-in-one), for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/** The seeded catalog's text models, each with its context window, for the vLLM simulator. */
function catalogTextModels(): Array<{ name: string; maxModelLen: number }> {
  return MODULES.flatMap((m) => m.simulatedModels ?? []);
}

/**
 * Settings both topologies get: the admin, inference endpoints (ours), no background title generation (titles are
 * billed model calls; the scenario checks every credit, and stops a reply on purpose), quick registry probes.
 */
function commonEnv(vllm: VllmSim, comfy: ComfySim, dataDir: string, ports: { api: number; admin: number }): Record<string, string> {
  return {
    LUNA_PORT: String(ports.api),
    LUNA_ADMIN_PORT: String(ports.admin),
    LUNA_DEV_HOST: "127.0.0.1",
    LUNA_VLLM_URL: vllm.url,
    LUNA_COMFYUI_URL: comfy.url,
    LOG_LEVEL: "warn",
    AUTH_ADMIN_EMAIL: ADMIN.email,
    AUTH_ADMIN_PASSWORD: ADMIN.password,
    CHAT_TITLE_ENABLED: "false",
    REGISTRY_HEALTH_INTERVAL: "1s",
    IMAGE_LOCAL_DIR: join(dataDir, "images"),
    // Shutdown must not wait long for a stream the test left behind.
    LUNA_SHUTDOWN_GRACE: "2s",
    LUNA_SPLIT_STOP_GRACE: "8s",
  };
}

/** Starts one topology on free ports. */
export async function startTopology(name: TopologyName): Promise<Topology> {
  const dataDir = mkdtempSync(join(tmpdir(), `luna-e2e-${name}-`));
  chmodSync(dataDir, 0o755); // Postgres runs as an unprivileged user when the tests run as root
  const databases = new Map<string, TestDatabase>();
  const cleanups: Array<() => Promise<unknown>> = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await Promise.allSettled([...databases.values()].map((d) => d.drop()));
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const [nats, redis, vllm, comfy] = await Promise.all([
      startDedicatedNats(),
      startDedicatedRedis(),
      // Fast decoding keeps replies short in wall-clock time; several deltas still arrive one by one.
      startVllmSim({ models: catalogTextModels(), profile: "fast", timing: { decodeTokensPerSec: 200 } }),
      startComfySim({ stepMs: 5 }),
    ]);
    cleanups.push(() => nats.dispose(), () => redis.dispose(), () => vllm.close(), () => comfy.close());
    const [api, admin] = await freePorts(2);
    const env = { ...commonEnv(vllm, comfy, dataDir, { api: api!, admin: admin! }) };
    const stack = {
      databaseUrl: (db: string): string => {
        const d = databases.get(db);
        if (!d) throw new Error(`no test database for ${db}`);
        return d.url;
      },
      redisUrl: redis.url,
      natsUrl: nats.url,
    };
    const dbNames = name === "all-in-one" ? MODULES.map((m) => m.database) : splitDatabases(discoverProcesses(findRepoRoot()));
    for (const db of dbNames) databases.set(db, await createTestDatabase({ prefix: `e2e_${db.replace(/[^a-z0-9_]/g, "_")}` }));
    const services = servicesOf(name);
    const invites = (): string[] => {
      try {
        return readFileSync(join(dataDir, "invites.txt"), "utf8").split(/\s+/).filter(Boolean);
      } catch {
        return [];
      }
    };

    if (name === "all-in-one") {
      // Errors only: the scenario provokes refusals on purpose, and this process's log is the test's output.
      const platform = await startPlatform({ dataDir, env: { ...env, LOG_LEVEL: "error" }, stack });
      cleanups.push(() => platform.stop());
      return { name, url: `http://127.0.0.1:${platform.port}`, dataDir, vllm, comfy, devInvites: invites, output: () => "",
        hosts: (s) => services.has(s), stop: cleanup };
    }

    const lines: string[] = [];
    let crashed: string | undefined;
    const platform = await startSplitPlatform({
      dataDir,
      env: { ...process.env, ...env },
      stack,
      output: (proc, line) => {
        lines.push(`${proc} | ${line}`);
        if (lines.length > 2000) lines.shift();
      },
      onUnexpectedExit: (message) => (crashed = message),
    });
    cleanups.push(() => platform.stop());
    // The real Envoy in front of the same processes (clients never see the dev gateway then).
    const envoy = name === "envoy"
      ? await startEnvoyContainer({ upstreams: Object.fromEntries(platform.processes.flatMap((p) => (p.url ? [[p.name, p.url]] : []))) })
      : undefined;
    if (envoy) cleanups.push(() => envoy.stop());
    return {
      name, url: envoy?.url ?? platform.url, dataDir, vllm, comfy, devInvites: invites,
      output: () => (crashed ? `${crashed}\n` : "") + lines.join("\n") + (envoy ? `\n--- envoy ---\n${envoy.output()}` : ""),
      hosts: (s) => services.has(s),
      stop: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
