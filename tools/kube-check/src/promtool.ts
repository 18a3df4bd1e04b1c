// promtool (Prometheus' rule checker and rule unit-test runner), the real binary from Debian's `prometheus` package:
// no Prometheus release is downloadable here (no GitHub), but apt is, and `apt-get download` verifies the package
// against the signed archive index. Only `usr/bin/promtool` is kept, cached under
// node_modules/.cache/luna/promtool/<package version>/. `check rules` and `test rules` need no server.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { repoRoot } from "./helm.js";

/** Result of one promtool run; a non-zero `code` is a result, not an exception (failing checks are expected). */
export interface PromtoolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface PromtoolOptions {
  /** Working directory (rule test files name rule files relative to their own directory, not to this). */
  cwd?: string;
  /** Kills promtool after this long; default 60 000 ms. */
  timeoutMs?: number;
}

/** Debian package holding promtool. */
const PACKAGE = "prometheus";

function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<PromtoolResult> {
  return new Promise((resolveRun, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === "string") {
        reject(new Error(`${cmd} could not run: ${err.message}`));
        return;
      }
      if (err && err.killed) {
        reject(new Error(`${cmd} ${args.join(" ")} timed out`));
        return;
      }
      resolveRun({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** The candidate version apt would download (e.g. "2.42.0+ds-5+deb12u1"), or undefined when apt knows none. */
async function candidateVersion(): Promise<string | undefined> {
  const out = await run("apt-cache", ["policy", PACKAGE]);
  const m = /Candidate:\s*(\S+)/.exec(out.stdout);
  return m && m[1] !== "(none)" ? m[1] : undefined;
}

let ensuring: Promise<string> | undefined;

/**
 * Returns the path of a working promtool, downloading and unpacking Debian's `prometheus` package the first time.
 * `LUNA_PROMTOOL` may name a promtool binary to use instead (e.g. on a machine without apt).
 */
export function ensurePromtool(): Promise<string> {
  ensuring ??= locate().catch((err: unknown) => {
    ensuring = undefined;
    throw err;
  });
  return ensuring;
}

async function locate(): Promise<string> {
  const override = process.env.LUNA_PROMTOOL;
  if (override) {
    if (!existsSync(override)) throw new Error(`LUNA_PROMTOOL=${override} does not exist`);
    return override;
  }
  const cache = join(repoRoot, "node_modules", ".cache", "luna", "promtool");
  // A previous download of any version is good enough: the rules and tests use nothing newer than 2.42.
  if (existsSync(cache)) {
    for (const v of (await readdir(cache)).sort().reverse()) {
      const bin = join(cache, v, "promtool");
      if (existsSync(bin)) return bin;
    }
  }
  let version = await candidateVersion();
  if (version === undefined) {
    // No package lists yet (a fresh container): fetch them once.
    const upd = await run("apt-get", ["update", "-qq"], { timeoutMs: 300_000 });
    if (upd.code !== 0) throw new Error(`apt-get update failed (promtool comes from Debian's ${PACKAGE} package): ${upd.stderr}`);
    version = await candidateVersion();
    if (version === undefined) throw new Error(`apt knows no ${PACKAGE} package; install promtool and set LUNA_PROMTOOL`);
  }
  const work = await mkdtemp(join(tmpdir(), "luna-promtool-"));
  try {
    const dl = await run("apt-get", ["download", `${PACKAGE}=${version}`], { cwd: work, timeoutMs: 300_000 });
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (dl.code !== 0 || !deb) throw new Error(`apt-get download ${PACKAGE}=${version} failed: ${dl.stderr}`);
    const x = await run("dpkg", ["-x", join(work, deb), join(work, "x")]);
    if (x.code !== 0) throw new Error(`dpkg -x ${deb} failed: ${x.stderr}`);
    const dir = join(cache, version.replaceAll(/[^A-Za-z0-9.+-]/g, "_"));
    await mkdir(dir, { recursive: true });
    // Copy then rename, so a concurrent test run never executes a half-written binary.
    const tmp = join(dir, `promtool.${process.pid}.tmp`);
    await copyFile(join(work, "x", "usr", "bin", "promtool"), tmp);
    await chmod(tmp, 0o755);
    const bin = join(dir, "promtool");
    await rename(tmp, bin);
    const check = await run(bin, ["--version"]);
    if (check.code !== 0) throw new Error(`the unpacked promtool does not run: ${check.stderr}`);
    return bin;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Runs promtool with `args` (e.g. ["check", "rules", file]); resolves with its exit code and output. */
export async function promtool(args: string[], opts: PromtoolOptions = {}): Promise<PromtoolResult> {
  const bin = await ensurePromtool();
  return run(bin, args, { cwd: opts.cwd ? resolve(opts.cwd) : undefined, timeoutMs: opts.timeoutMs });
}
