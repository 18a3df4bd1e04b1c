// `make images`: builds every program of the root Dockerfile as luna/<program>:<tag> with docker (where `docker info`
// answers) or podman, after building the local Node base where the engine cannot pull one. Prints image sizes.
//   LUNA_IMAGE_TAG (dev)  ONLY=auth,billing  NODE_IMAGE / BUILD_IMAGE (override the bases)  LUNA_REBUILD_BASE=1
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureBaseImages, NODE_BASE, NODE_BUILD, ROOT } from "./base-image.js";
import { detectEngine, run, runLoud, type Engine } from "./engine.js";
import { imageName, PROGRAMS } from "./programs.js";

/** Extra `podman build/run` flags: this sandbox refuses podman's default RLIMIT_NOFILE/NPROC, so set modest ones. */
export function podmanLimits(env: NodeJS.ProcessEnv = process.env): string[] {
  const spec = env.LUNA_PODMAN_ULIMITS ?? "nofile=1024:1024,nproc=1024:1024";
  return spec.split(",").filter(Boolean).flatMap((u) => ["--ulimit", u]);
}

function git(args: string[]): string | undefined {
  const r = spawnSync("git", args, { cwd: ROOT, encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

export function imageSize(engine: Engine, ref: string): number {
  return Number(run(engine, ["image", "inspect", "--format", "{{.Size}}", ref]).trim());
}

export function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(0)} MB`;
}

function main(): void {
  const engine = detectEngine();
  const tag = process.env.LUNA_IMAGE_TAG ?? "dev";
  const only = (process.env.ONLY ?? "").split(",").filter(Boolean);
  const unknown = only.filter((o) => !PROGRAMS.some((p) => p.name === o));
  if (unknown.length > 0) throw new Error(`ONLY: unknown program(s) ${unknown.join(", ")}; known: ${PROGRAMS.map((p) => p.name).join(", ")}`);
  const programs = PROGRAMS.filter((p) => only.length === 0 || only.includes(p.name));

  const bases: Record<string, string> = {};
  if (!engine.pullsBase) {
    if (process.env.LUNA_REBUILD_BASE) spawnSync(engine.cmd, [...engine.global, "rmi", NODE_BUILD, NODE_BASE], { stdio: "ignore" });
    Object.assign(bases, ensureBaseImages(engine));
  }
  if (process.env.NODE_IMAGE) bases.NODE_IMAGE = process.env.NODE_IMAGE;
  if (process.env.BUILD_IMAGE) bases.BUILD_IMAGE = process.env.BUILD_IMAGE;
  const revision = git(["rev-parse", "HEAD"]) ?? "unknown";
  const dirty = git(["status", "--porcelain", "--untracked-files=no"]) ? "-dirty" : "";
  const source = process.env.LUNA_IMAGE_SOURCE ?? git(["remote", "get-url", "origin"]) ?? "https://example.invalid/luna";
  const version = process.env.LUNA_IMAGE_VERSION ?? (JSON.parse(readFileSync(join(ROOT, "services/auth/package.json"), "utf8")) as { version: string }).version;

  const times: Record<string, number> = {};
  for (const p of programs) {
    const ref = imageName(p.name, tag);
    console.log(`\n==> ${engine.cmd} build ${ref} (PROGRAM=${p.name})`);
    const args = ["build", "-f", join(ROOT, "Dockerfile"), "-t", ref,
      "--build-arg", `PROGRAM=${p.name}`, "--build-arg", `REVISION=${revision}${dirty}`,
      "--build-arg", `VERSION=${version}`, "--build-arg", `SOURCE=${source}`,
      ...Object.entries(bases).flatMap(([k, v]) => ["--build-arg", `${k}=${v}`])];
    if (engine.cmd === "podman") args.push("--network=host", "--layers", ...podmanLimits());
    const t0 = Date.now();
    runLoud(engine, [...args, ROOT]);
    times[p.name] = Date.now() - t0;
  }
  console.log(`\n==> images (${engine.cmd}${bases.NODE_IMAGE ? `, NODE_IMAGE=${bases.NODE_IMAGE}` : ""})`);
  for (const p of programs) {
    const ref = imageName(p.name, tag);
    console.log(`  ${ref.padEnd(28)} ${mb(imageSize(engine, ref)).padStart(8)}   built in ${(times[p.name]! / 1000).toFixed(0)} s`);
  }
}

if (import.meta.filename === process.argv[1]) {
  try {
    main();
  } catch (err) {
    console.error(`make images: ${(err as Error).message}`);
    process.exit(1);
  }
}
