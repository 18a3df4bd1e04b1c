// The ways the end-to-end scenario meets Luna. Started here: the all-in-one process (every module in this process,
// on one port) and the split platform (one process per service behind the dev gateway, or behind the real Envoy).
// Each gets fresh databases on the run's shared Postgres, a NATS and a Redis of its own (so durable consumers,
// streams and rate-limit keys never meet another topology's or test file's), and inference simulators the test
// controls (to make a reply hang, for instance). Or already running somewhere: the `remote` topology (remote.ts).
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
import { comfyControl, vllmControl, type ComfyControl, type VllmControl } from "./sim-control.js";

export type TopologyName = "all-in-one" | "split" | "envoy" | "remote";
/**
 * With LUNA_E2E_REMOTE_URL set, only `remote`: an already running Luna (a cluster through its gateway; remote.ts).
 * Otherwise the local topologies, and `remote` against the all-in-one platform after the all-in-one's own run (it
 * is told only the URL, the admin and the simulators' URLs, and meets a platform that is no longer fresh).
 * `envoy` (the split platform behind the real Envoy, in a container: gateway/src/envoy-run.ts) runs only when
 * LUNA_E2E_ENVOY=1, as in .github/workflows/gateway.yml; it needs a container engine and the Envoy image.
 */
export const TOPOLOGIES: readonly TopologyName[] = process.env.LUNA_E2E_REMOTE_URL
  ? ["remote"]
  : ["all-in-one", "remote", "split", ...(process.env.LUNA_E2E_ENVOY === "1" ? ["envoy" as const] : [])];

/** Every service and the image worker: what a full install (a cluster) runs. */
export const ALL_SERVICES: ReadonlySet<string> = new Set(["auth", "billing", "model-registry", "chat-router", "image-job", "image-worker"]);

/** The dev admin both topologies create on start (AUTH_ADMIN_EMAIL / AUTH_ADMIN_PASSWORD). */
export const ADMIN = { email: "admin@e2e.test", password: "e2e-admin-passphrase-42" } as const;

/**
 * Which services a topology runs, known before it starts (so tests of a service not there yet are skipped at
 * collection): the all-in-one hosts the modules registered in tools/allinone; the split platform every service
 * whose `src/main.ts` exists; a remote Luna is a full install.
 */
export function servicesOf(name: TopologyName): ReadonlySet<string> {
  if (name === "remote") return ALL_SERVICES;
  if (name === "all-in-one") return new Set(MODULES.map((m) => m.name));
  return new Set(discoverProcesses(findRepoRoot()).map((p) => p.name));
}

/** A download as a client sees it. */
export interface Download {
  status: number;
  contentType: string | null;
  bytes: Uint8Array;
}

export interface Topology {
  name: TopologyName;
  /** What clients talk to: the all-in-one port, the dev gateway, Envoy, or a remote gateway. */
  url: string;
  hosts(service: ServiceName | "image-worker"): boolean;
  /** The vLLM simulator serving the catalog's text models, driven over its HTTP control routes. */
  vllm: VllmControl;
  /** The ComfyUI simulator, when the topology can reach one. */
  comfy?: ComfyControl;
  /** An admin's credentials (the dev admin the local topologies create; given to a remote one). */
  admin: { email: string; password: string };
  /** Credits a new account is granted (billing's BILLING_SIGNUP_CREDITS). */
  signupCredits: bigint;
  /**
   * At least two unused single-use invite codes: the dev bootstrap's (`<dataDir>/invites.txt`) on a local
   * platform, new ones from the admin API on a remote one.
   */
  invites(): Promise<string[]>;
  /** GETs a URL the platform handed out (an image), as a client would. */
  download(url: string): Promise<Download>;
  /** Output of the split platform's processes (empty for the all-in-one), for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/** The dev admin and the billing default every local topology runs with. */
const LOCAL = { admin: ADMIN, signupCredits: 1000n } as const;

/** GET with fetch; a local platform's URLs are reachable as they are. */
export async function fetchDownload(url: string): Promise<Download> {
  const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  return { status: res.status, contentType: res.headers.get("content-type"), bytes: new Uint8Array(await res.arrayBuffer()) };
}

/** The seeded catalog's text models, each with its context window, for the vLLM simulator. */
function catalogTextModels(): Array<{ name: string; maxModelLen: number }> {
  return MODULES.flatMap((m) => m.simulatedModels ?? []);
}

/**
 * Settings both topologies get: the admin, inference endpoints (ours), no background title generation (titles are
 * not billed, but they are model calls: the simulator's traffic stays the scenario's own, which makes a reply hang
 * on purpose), quick registry probes.
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

/** Starts one local topology on free ports. */
export async function startTopology(name: Exclude<TopologyName, "remote">): Promise<Topology> {
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
    const invites = async (): Promise<string[]> => {
      try {
        return readFileSync(join(dataDir, "invites.txt"), "utf8").split(/\s+/).filter(Boolean);
      } catch {
        return [];
      }
    };
    // The simulators are driven over HTTP, as a remote topology drives them.
    const sims = { vllm: vllmControl(vllm.url), comfy: comfyControl(comfy.url) };

    if (name === "all-in-one") {
      // Errors only: the scenario provokes refusals on purpose, and this process's log is the test's output.
      const platform = await startPlatform({ dataDir, env: { ...env, LOG_LEVEL: "error" }, stack });
      cleanups.push(() => platform.stop());
      return { name, url: `http://127.0.0.1:${platform.port}`, ...sims, ...LOCAL, invites, download: fetchDownload, output: () => "",
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
      name, url: envoy?.url ?? platform.url, ...sims, ...LOCAL, invites, download: fetchDownload,
      output: () => (crashed ? `${crashed}\n` : "") + lines.join("\n") + (envoy ? `\n--- envoy ---\n${envoy.output()}` : ""),
      hosts: (s) => services.has(s),
      stop: cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
