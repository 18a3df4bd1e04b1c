// Which container engine builds and runs Luna's images: `docker` where its daemon answers (`docker info`), else
// podman (Debian's podman + runc; crun does not work in every sandbox, so the OCI runtime is configurable).
// Installing podman is part of the set-up on Debian/Ubuntu, as `make dev` installs Postgres.
import { spawnSync, type SpawnSyncOptions } from "node:child_process";

export interface Engine {
  /** The CLI: "docker" or "podman". */
  cmd: string;
  /** Arguments that go before every sub-command (podman: `--runtime runc`). */
  global: string[];
  /** True for docker: it pulls `node:24-slim` itself; podman here gets a base built locally (no registry). */
  pullsBase: boolean;
}

function ok(cmd: string, args: string[]): boolean {
  return spawnSync(cmd, args, { stdio: "ignore", timeout: 20_000 }).status === 0;
}

function has(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Installs podman, buildah and runc with apt-get where that is possible; explains what to do elsewhere. */
export function installPodman(log: (m: string) => void = console.log): void {
  if (process.platform === "darwin") {
    throw new Error("no container engine: install Docker Desktop (or `brew install podman && podman machine start`) and rerun");
  }
  if (process.platform !== "linux" || !has("apt-get")) {
    throw new Error("no container engine: install docker, or podman + buildah + runc, with your package manager and rerun");
  }
  if (process.getuid?.() !== 0) throw new Error("podman is missing: run `sudo apt-get install -y podman buildah runc`, then rerun");
  log("==> installing podman, buildah and runc (apt-get)");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const opts: SpawnSyncOptions = { stdio: "inherit", env };
  if (spawnSync("apt-get", ["update", "-qq"], opts).status !== 0) throw new Error("apt-get update failed");
  if (spawnSync("apt-get", ["install", "-y", "-qq", "podman", "buildah", "runc"], opts).status !== 0) {
    throw new Error("apt-get install podman buildah runc failed");
  }
}

/**
 * Picks the engine: $LUNA_CONTAINER_ENGINE (docker|podman) when set, docker when `docker info` succeeds (a CLI
 * without a daemon does not count), else podman, installing it when missing.
 */
export function detectEngine(env: NodeJS.ProcessEnv = process.env, log: (m: string) => void = console.log): Engine {
  const runtime = env.LUNA_PODMAN_RUNTIME ?? "runc";
  const podman = (): Engine => ({ cmd: "podman", global: runtime ? ["--runtime", runtime] : [], pullsBase: false });
  const forced = env.LUNA_CONTAINER_ENGINE;
  if (forced === "docker") return { cmd: "docker", global: [], pullsBase: true };
  if (forced === "podman") {
    if (!has("podman")) installPodman(log);
    return podman();
  }
  if (forced) throw new Error(`LUNA_CONTAINER_ENGINE must be docker or podman, not ${JSON.stringify(forced)}`);
  if (has("docker") && ok("docker", ["info"])) return { cmd: "docker", global: [], pullsBase: true };
  if (!has("podman") || !has("runc")) installPodman(log);
  return podman();
}

/** Runs the engine; throws with its output when it fails. */
export function run(engine: Engine, args: string[], opts: { input?: string; quiet?: boolean; cwd?: string } = {}): string {
  const r = spawnSync(engine.cmd, [...engine.global, ...args], {
    cwd: opts.cwd,
    input: opts.input,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
  });
  if (r.status !== 0) {
    throw new Error(`${engine.cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stdout ?? ""}${r.stderr ?? ""}`);
  }
  return r.stdout;
}

/** Runs the engine with its output on this terminal (long builds). */
export function runLoud(engine: Engine, args: string[], cwd?: string): void {
  const r = spawnSync(engine.cmd, [...engine.global, ...args], { cwd, stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${engine.cmd} ${args.slice(0, 2).join(" ")} ... failed (${r.status ?? r.signal})`);
}

export function imageExists(engine: Engine, ref: string): boolean {
  return spawnSync(engine.cmd, [...engine.global, "image", "inspect", ref], { stdio: "ignore" }).status === 0;
}
