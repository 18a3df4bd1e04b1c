// The split platform: every service in its own process on its own ports, talking over the network with internal
// JWTs as in the cluster, behind the dev gateway. Shares the all-in-one's data-dir conventions (internal key, admin
// credentials, local secrets, invites file, database names) so both modes can run on the same `.luna/`.
import { join } from "node:path";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { csv, duration, loadConfig, runtimeConfigSchema } from "@luna/kit";
import { freePorts } from "@luna/kit/localstack";
import { findRepoRoot } from "@luna/devstack";
import { ensureInternalKey, platformConfigSchema, startSimulators } from "@luna/allinone";
import * as z from "zod";
import { spawnServiceProcess, waitUntilReady, type ServiceProcess, type Stream } from "./children.js";
import { bootstrapInvites, devAdmin, devSecret } from "./dev-bootstrap.js";
import { startGateway, type Gateway } from "./gateway.js";
import { discoverProcesses, type SplitProcessSpec } from "./services.js";

/** Variables of the split launcher, on top of the all-in-one's (LUNA_DEV_HOST, LUNA_VLLM_URL, ...; see the README). */
export const splitConfigSchema = z.object({
  /** Only these processes (names from SPLIT_PROCESSES); empty = every service whose src/main.ts exists. */
  LUNA_SPLIT_SERVICES: csv([]),
  /** How long one start wave may take to be ready (/readyz 200 and the API port open). */
  LUNA_SPLIT_READY_TIMEOUT: duration("120s"),
  /** After SIGTERM, how long a service may drain before SIGKILL (above the services' LUNA_SHUTDOWN_GRACE). */
  LUNA_SPLIT_STOP_GRACE: duration("15s"),
  /** The gateway resets a stream with no bytes either way for this long (Envoy's stream_idle_timeout). */
  LUNA_GATEWAY_IDLE_TIMEOUT: duration("5m"),
});

export interface SplitPlatformOptions {
  /** Root of local data (.luna): internal key, admin credentials, secrets, invites file, local image store. */
  dataDir: string;
  /** Read for configuration and passed to every process (the launcher's own wiring variables win). */
  env: NodeJS.ProcessEnv;
  /** Postgres/Redis/NATS coordinates; the databases must exist (see splitDatabases). */
  stack: { databaseUrl(db: string): string; redisUrl: string; natsUrl: string };
  /** The repository (where services/ is); default: found from this file. */
  repoRoot?: string;
  /** Every output line of every process; default: written to stdout as `name | line`. */
  output?: (name: string, line: string, stream: Stream) => void;
  /** Progress lines for a person waiting; silent by default. */
  progress?: (line: string) => void;
  /**
   * A process exited on its own after start: the platform has already stopped every other process and the gateway
   * when this is called with a message naming it.
   */
  onUnexpectedExit?: (message: string) => void;
  /** Create invite codes in `<dataDir>/invites.txt` as `make dev` does; default true. */
  devInvites?: boolean;
}

export interface SplitProcessInfo {
  name: string;
  pid: number | undefined;
  /** API services: where they listen. */
  url?: string;
  apiPort?: number;
  adminPort: number;
}

export interface SplitPlatform {
  /** The gateway: every client-facing RPC and route. */
  url: string;
  port: number;
  /** The launcher's admin port: `/readyz` is 200 when every process is ready, `/healthz` while it runs. */
  adminPort: number;
  processes: SplitProcessInfo[];
  simulators: { vllmUrl: string; comfyUrl: string; started: boolean };
  /** Lines worth printing once started (invite codes, admin credentials). */
  notes: string[];
  /** Stops the gateway and every process (reverse start order: SIGTERM, SIGKILL after the grace). Idempotent. */
  stop(): Promise<void>;
}

const COLORS = [36, 33, 35, 32, 34, 31, 96, 93];

/** `name | line` on stdout, the name coloured on a terminal. */
export function prefixedOutput(names: readonly string[]): (name: string, line: string) => void {
  const width = Math.max(...names.map((n) => n.length));
  const color = process.stdout.isTTY;
  return (name, line) => {
    const i = names.indexOf(name);
    const label = name.padEnd(width);
    const prefix = color ? `\x1b[${COLORS[(i < 0 ? 0 : i) % COLORS.length]}m${label} |\x1b[0m` : `${label} |`;
    process.stdout.write(`${prefix} ${line}\n`);
  };
}

/** Starts the split platform; resolves once every process is ready and the gateway serves. */
export async function startSplitPlatform(opts: SplitPlatformOptions): Promise<SplitPlatform> {
  const progress = opts.progress ?? (() => {});
  const runtime = loadConfig(runtimeConfigSchema, opts.env);
  const platformConfig = loadConfig(platformConfigSchema, opts.env);
  const config = loadConfig(splitConfigSchema, opts.env);
  const repoRoot = opts.repoRoot ?? findRepoRoot();
  const host = platformConfig.LUNA_DEV_HOST;
  // Where the processes are reached (a wildcard bind is reached on loopback).
  const reach = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  const specs = discoverProcesses(repoRoot, config.LUNA_SPLIT_SERVICES);
  if (specs.length === 0) throw new Error(`no service entry points found under ${join(repoRoot, "services")}`);
  const output = opts.output ?? prefixedOutput([...specs.map((s) => s.name), "gateway"]);

  const cleanups: Array<() => Promise<void>> = [];
  const procs: Array<{ spec: SplitProcessSpec; proc: ServiceProcess }> = [];
  let stopping: Promise<void> | undefined;
  // Last resort when the launcher itself dies (an uncaught error, process.exit): leave no service behind.
  const killAll = (): void => {
    for (const { proc } of procs) proc.kill();
  };
  process.on("exit", killAll);

  let gateway: Gateway | undefined;
  async function stopAll(): Promise<void> {
    // New connections are refused at once; streams in flight finish while the services drain theirs.
    const gatewayClosed = gateway?.close();
    const waves = [...new Set(procs.map((p) => p.spec.wave))].sort((a, b) => b - a);
    for (const wave of waves) {
      await Promise.all(procs.filter((p) => p.spec.wave === wave).map((p) => p.proc.stop(config.LUNA_SPLIT_STOP_GRACE)));
    }
    await gatewayClosed;
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    process.off("exit", killAll);
  }
  const stop = (): Promise<void> => (stopping ??= stopAll());

  // A process ending on its own is a failure of the platform: stop the rest and say which one. During start-up the
  // start fails with this message; afterwards onUnexpectedExit gets it.
  let started = false;
  let crash: string | undefined;
  function watch(spec: SplitProcessSpec, proc: ServiceProcess): void {
    void proc.exited.then(({ code, signal }) => {
      if (stopping) return;
      const how = signal ? `killed by ${signal}` : `exit code ${code}`;
      crash = `${spec.name} exited unexpectedly (${how}); stopping the platform. Its last lines:\n` +
        proc.tail().slice(-15).map((l) => `  ${l}`).join("\n");
      progress(crash);
      const message = crash;
      void stop().then(() => {
        if (started) opts.onUnexpectedExit?.(message);
      });
    });
  }

  try {
    const sims = await startSimulators(platformConfig, progress, cleanups);

    // One internal key for the whole platform (each process reads it from the file, as from a mounted Secret).
    const keyFromEnv = Boolean(runtime.LUNA_INTERNAL_KEY || runtime.LUNA_INTERNAL_KEY_FILE);
    if (!keyFromEnv) await ensureInternalKey(opts.dataDir);
    const internalKeyEnv: Record<string, string> = keyFromEnv ? {} : { LUNA_INTERNAL_KEY_FILE: join(opts.dataDir, "internal-key.json") };

    // Ports: API + admin per service, admin only for the worker.
    const ports = await freePorts(specs.reduce((n, s) => n + (s.api ? 2 : 1), 0));
    const assigned = new Map<string, { apiPort?: number; adminPort: number }>();
    for (const s of specs) assigned.set(s.name, s.api ? { apiPort: ports.shift()!, adminPort: ports.shift()! } : { adminPort: ports.shift()! });
    const urls = new Map<string, string>();
    for (const s of specs) if (s.service) urls.set(s.service, `http://${reach.includes(":") ? `[${reach}]` : reach}:${assigned.get(s.name)!.apiPort}`);

    gateway = await startGateway({
      upstream: (service) => urls.get(service),
      host,
      port: runtime.LUNA_PORT,
      idleTimeoutMs: config.LUNA_GATEWAY_IDLE_TIMEOUT,
      shutdownGraceMs: config.LUNA_SPLIT_STOP_GRACE,
      log: { warn: (m) => output("gateway", m, "stderr") },
    });
    progress(`  gateway on ${gateway.url}`);

    const admin = devAdmin(opts.env, opts.dataDir);
    const notes: string[] = [`  first admin                    ${admin.email}` + (admin.file ? ` (password in ${admin.file})` : "")];
    const imageDir = opts.env.IMAGE_LOCAL_DIR ?? join(opts.dataDir, "images");
    const serviceUrls = [...urls].map(([name, url]) => `${name}=${url}`).join(",");

    /** The environment of one process: the caller's, then per-service defaults, then the wiring, which always wins. */
    function envFor(spec: SplitProcessSpec): NodeJS.ProcessEnv {
      const p = assigned.get(spec.name)!;
      const defaults: Record<string, string> = {};
      const forced: Record<string, string> = {};
      switch (spec.name) {
        case "auth":
          // The dev gateway appends the client's address to x-forwarded-for: one trusted hop, as behind Envoy.
          defaults.LUNA_TRUSTED_PROXY_HOPS = "1";
          defaults.AUTH_KEY_ENCRYPTION_KEY = devSecret(opts.dataDir, "auth-key-encryption.key");
          forced.AUTH_ADMIN_EMAIL = admin.email;
          forced.AUTH_ADMIN_PASSWORD = admin.password;
          break;
        case "model-registry":
          defaults.REGISTRY_SEED_VLLM_URL = sims.vllmUrl;
          defaults.REGISTRY_SEED_COMFYUI_URL = sims.comfyUrl;
          break;
        case "image-job":
          // Stable across restarts (URLs handed out stay valid); the worker writes where image-job reads.
          defaults.IMAGE_URL_SECRET = devSecret(opts.dataDir, "image-url.key");
          forced.IMAGE_LOCAL_DIR = imageDir;
          break;
        case "image-worker":
          defaults.COMFYUI_URL = sims.comfyUrl;
          forced.IMAGE_LOCAL_DIR = imageDir;
          break;
      }
      const env: NodeJS.ProcessEnv = {
        ...defaults,
        ...opts.env,
        ...forced,
        ...internalKeyEnv,
        LUNA_HOST: host,
        LUNA_ADMIN_PORT: String(p.adminPort),
        REDIS_URL: opts.stack.redisUrl,
        NATS_URL: opts.stack.natsUrl,
        // Straight to auth, as inside the cluster (without auth in this run, whatever the environment says).
        ...(urls.has("auth") ? { LUNA_JWKS_URL: `${urls.get("auth")}/.well-known/jwks.json` } : {}),
        LUNA_SERVICE_URLS: serviceUrls,
        ...(spec.database ? { DATABASE_URL: opts.stack.databaseUrl(spec.database) } : {}),
      };
      // LUNA_PORT in the launcher's environment is the gateway's; a process without an API port gets none.
      if (p.apiPort !== undefined) env.LUNA_PORT = String(p.apiPort);
      else delete env.LUNA_PORT;
      return env;
    }

    const waves = [...new Set(specs.map((s) => s.wave))].sort((a, b) => a - b);
    for (const wave of waves) {
      const inWave = specs.filter((s) => s.wave === wave);
      progress(`  starting ${inWave.map((s) => s.name).join(", ")}`);
      const started = inWave.map((spec) => {
        const proc = spawnServiceProcess({ name: spec.name, entry: spec.entry, cwd: repoRoot, env: envFor(spec), onLine: output });
        procs.push({ spec, proc });
        watch(spec, proc);
        return { spec, proc };
      });
      await Promise.all(started.map(({ spec, proc }) => {
        const p = assigned.get(spec.name)!;
        return waitUntilReady(proc, { host: reach, adminPort: p.adminPort, apiPort: p.apiPort, timeoutMs: config.LUNA_SPLIT_READY_TIMEOUT })
          .then(() => progress(`    ${spec.name} ready` + (p.apiPort ? ` on ${urls.get(spec.service!)}` : "")));
      }));
    }

    if ((opts.devInvites ?? true) && urls.has("auth")) {
      const invitesFile = join(opts.dataDir, "invites.txt");
      const codes = await bootstrapInvites({ authUrl: urls.get("auth")!, admin, invitesFile });
      notes.push(`  invite codes (${invitesFile})`);
      for (const code of codes) notes.push(`    ${code}`);
    }

    const adminServer = await startLauncherAdmin(host, reach, runtime.LUNA_ADMIN_PORT, () => procs.map(({ spec, proc }) => ({
      name: spec.name, running: proc.running(), adminPort: assigned.get(spec.name)!.adminPort })));
    cleanups.push(() => adminServer.close());

    started = true;
    return {
      url: gateway.url,
      port: gateway.port,
      adminPort: adminServer.port,
      processes: procs.map(({ spec, proc }) => ({ name: spec.name, pid: proc.pid, adminPort: assigned.get(spec.name)!.adminPort,
        ...(spec.service ? { url: urls.get(spec.service)!, apiPort: assigned.get(spec.name)!.apiPort! } : {}) })),
      simulators: sims,
      notes,
      stop,
    };
  } catch (err) {
    await stop();
    throw crash ? new Error(crash) : err;
  }
}

/** The launcher's admin port: `/healthz` while it runs; `/readyz` 200 when every process is running and ready. */
async function startLauncherAdmin(host: string, reach: string, port: number,
  processes: () => Array<{ name: string; running: boolean; adminPort: number }>): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify(body));
    };
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") return send(200, { status: "ok" });
    if (path !== "/readyz") return send(404, { error: "not found" });
    void Promise.all(processes().map(async (p) => {
      if (!p.running) return { name: p.name, ok: false, error: "not running" };
      try {
        const r = await fetch(`http://${reach.includes(":") ? `[${reach}]` : reach}:${p.adminPort}/readyz`, { signal: AbortSignal.timeout(2000) });
        await r.arrayBuffer();
        return r.ok ? { name: p.name, ok: true } : { name: p.name, ok: false, error: `/readyz ${r.status}` };
      } catch (err) {
        return { name: p.name, ok: false, error: (err as Error).message };
      }
    })).then((checks) => {
      const ok = checks.every((c) => c.ok);
      send(ok ? 200 : 503, { status: ok ? "ok" : "unavailable", processes: checks });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
