// Runs the real Envoy, in a container on the host network, in front of services running on this machine: the
// generated configuration with each cluster pointed at a service's local address (`--upstream` in generate.ts). Used
// by the end-to-end suite's `envoy` topology (tools/e2e, LUNA_E2E_ENVOY=1) in .github/workflows/gateway.yml; it
// needs a container engine and the Envoy image, which this repository's own machines do not have.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "@luna/kit/localstack";
import { buildEnvoyConfig, toYaml, type EdgeSettings } from "./envoy.js";
import { loadRpcs } from "./sources.js";

/** The Envoy image the workflow validates and runs with: the gateway chart's (a test keeps them equal; override: LUNA_ENVOY_IMAGE). */
export const ENVOY_IMAGE = "docker.io/envoyproxy/envoy:v1.35.0";

export interface EnvoyContainerOptions {
  /** Service name → its API base URL on this machine (`http://127.0.0.1:41234`). */
  upstreams: Record<string, string>;
  /** `docker` (default) or `podman --runtime runc`; LUNA_ENVOY_ENGINE. */
  engine?: string;
  image?: string;
  /** How long Envoy may take to report ready; default 60 s. */
  readyTimeoutMs?: number;
  settings?: Partial<EdgeSettings>;
}

export interface EnvoyContainer {
  url: string;
  adminUrl: string;
  /** The stats listener (only /stats/prometheus). */
  statsUrl: string;
  /** Envoy's output so far (its JSON access log among it). */
  output(): string;
  stop(): Promise<void>;
}

/** `http://host:port` → `host:port`. */
function hostPort(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port}`;
}

/** Starts Envoy and resolves once its admin `/ready` answers LIVE and every service cluster has a healthy host. */
export async function startEnvoyContainer(opts: EnvoyContainerOptions): Promise<EnvoyContainer> {
  const engine = (opts.engine ?? process.env.LUNA_ENVOY_ENGINE ?? "docker").split(/\s+/).filter(Boolean);
  const image = opts.image ?? process.env.LUNA_ENVOY_IMAGE ?? ENVOY_IMAGE;
  const [port, adminPort, statsPort] = (await freePorts(3)) as [number, number, number];
  const upstreamOverrides = Object.fromEntries(Object.entries(opts.upstreams).map(([name, url]) => [name, hostPort(url)]));
  const config = buildEnvoyConfig(await loadRpcs(), { port, adminPort, statsPort, upstreamOverrides: { "otel-collector": "127.0.0.1:4317", ...upstreamOverrides },
    ...opts.settings });
  const dir = mkdtempSync(join(tmpdir(), "luna-envoy-"));
  chmodSync(dir, 0o755); // the image runs Envoy as an unprivileged user
  writeFileSync(join(dir, "envoy.yaml"), toYaml(config), { mode: 0o644 });
  const name = `luna-envoy-${process.pid}-${port}`;
  const lines: string[] = [];
  const proc: ChildProcess = spawn(engine[0]!, [...engine.slice(1), "run", "--rm", "--name", name, "--network", "host",
    "-v", `${dir}:/etc/envoy:ro`, image, "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"], { stdio: ["ignore", "pipe", "pipe"] });
  const collect = (b: Buffer): void => {
    lines.push(...b.toString("utf8").split("\n").filter(Boolean));
    if (lines.length > 5000) lines.splice(0, lines.length - 5000);
  };
  proc.stdout!.on("data", collect);
  proc.stderr!.on("data", collect);
  let exited = false;
  proc.once("exit", () => (exited = true));

  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const stop = async (): Promise<void> => {
    if (!exited) {
      spawnSync(engine[0]!, [...engine.slice(1), "stop", "-t", "5", name], { stdio: "ignore" });
      await new Promise<void>((r) => (exited ? r() : proc.once("exit", () => r())));
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  try {
    for (;;) {
      if (exited) throw new Error(`envoy exited:\n${lines.slice(-40).join("\n")}`);
      if (Date.now() > deadline) throw new Error(`envoy not ready in time:\n${lines.slice(-40).join("\n")}`);
      const ready = await fetch(`${adminUrl}/ready`).then((r) => r.ok, () => false);
      const clusters = ready ? await fetch(`${adminUrl}/clusters`).then((r) => r.text(), () => "") : "";
      // Every service cluster has a host that passed its gRPC health check.
      const healthy = Object.keys(opts.upstreams).every((c) => new RegExp(`^${c}::[^:]+:\\d+::health_flags::healthy$`, "m").test(clusters));
      if (ready && healthy) break;
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `http://127.0.0.1:${port}`, adminUrl, statsUrl: `http://127.0.0.1:${statsPort}`, output: () => lines.join("\n"), stop };
}
