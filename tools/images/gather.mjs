#!/usr/bin/env node
// Build-stage helper of the root Dockerfile: `node tools/images/gather.mjs OUT WORKSPACE...` copies into OUT what the
// program runs: each workspace's package.json and dist/, and only the npm packages its production dependencies reach
// (dependencies, optionalDependencies where installed, peerDependencies not marked optional; resolved as Node does). This is the
// "prune dev dependencies" step: `npm ci` installs the whole lock (every workspace's and the root's dev tools), and
// `npm prune --omit=dev` keeps other workspaces' dependencies, so reachability decides instead.
import { cpSync, existsSync, mkdirSync, readFileSync, realpathSync, symlinkSync } from "node:fs";
import { basename, dirname, join, relative, sep } from "node:path";

const [out, ...workspaces] = process.argv.slice(2);
if (!out || workspaces.length === 0) {
  console.error("usage: gather.mjs OUT WORKSPACE...");
  process.exit(2);
}
const root = process.cwd();
const shipped = new Set(workspaces.map((w) => join(root, w)));
const packages = new Set(); // real directories of npm packages to copy
const links = new Map(); // node_modules/@scope/name -> workspace dir
const missing = [];

const manifest = (dir) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));

/** Node's lookup: <dir>/node_modules/<name> from the package's directory up to the root. */
function resolveFrom(dir, name) {
  for (let d = dir; ; d = dirname(d)) {
    if (basename(d) !== "node_modules") {
      const candidate = join(d, "node_modules", name);
      if (existsSync(join(candidate, "package.json"))) return candidate;
    }
    if (d === root || d === dirname(d)) return undefined;
  }
}

function visit(dir) {
  const pkg = manifest(dir);
  // Peers the package marks optional (e.g. @prisma/client's peer `prisma`, the CLI) stay out even when installed.
  const optionalPeers = Object.keys(pkg.peerDependencies ?? {}).filter((n) => pkg.peerDependenciesMeta?.[n]?.optional);
  const needed = Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies }).filter((n) => !optionalPeers.includes(n));
  const optional = Object.keys({ ...pkg.optionalDependencies });
  for (const [name, required] of [...needed.map((n) => [n, true]), ...optional.map((n) => [n, false])]) {
    const at = resolveFrom(dir, name);
    if (!at) {
      if (required) missing.push(`${relative(root, dir) || "."} -> ${name}`);
      continue;
    }
    const real = realpathSync(at);
    if (!real.split(sep).includes("node_modules")) {
      // a workspace link: it must be one the program ships
      if (!shipped.has(real)) throw new Error(`${relative(root, dir)} needs workspace ${relative(root, real)}, which is not built for this program`);
      links.set(relative(root, at), real);
      continue;
    }
    if (packages.has(real)) continue;
    packages.add(real);
    visit(real);
  }
}

for (const w of shipped) visit(w);
if (missing.length > 0) {
  console.error(`gather: dependencies not installed:\n  ${missing.join("\n  ")}`);
  process.exit(1);
}

mkdirSync(out, { recursive: true });
cpSync(join(root, "package.json"), join(out, "package.json"));
for (const w of shipped) {
  const rel = relative(root, w);
  mkdirSync(join(out, rel), { recursive: true });
  cpSync(join(w, "package.json"), join(out, rel, "package.json"));
  cpSync(join(w, "dist"), join(out, rel, "dist"), { recursive: true });
  // tsc emits only code; data files kept beside the sources (auth's common-passwords.txt.gz, loaded relative to its
  // module) ship at the same place under dist/. Code files (.ts, .mjs, ...) never ship from src/.
  const src = join(w, "src");
  if (existsSync(src)) {
    cpSync(src, join(out, rel, "dist"), { recursive: true, filter: (f) => !/\.[cm]?[jt]s$/.test(f) });
  }
}
// Size: no source maps, and of @prisma/client's query compilers (one per database, ~10 MB each) only those for the
// datasource providers of the shipped schemas.
const providers = new Set();
for (const w of shipped) {
  const schema = join(w, "prisma", "schema.prisma");
  if (!existsSync(schema)) continue;
  for (const m of readFileSync(schema, "utf8").matchAll(/datasource\s+\w+\s*\{[^}]*?provider\s*=\s*"(\w+)"/g)) providers.add(m[1]);
}
const unused = (src) => {
  if (src.endsWith(".map")) return true;
  const m = /^query_compiler_\w+?_bg\.(\w+)\./.exec(basename(src));
  return Boolean(m && src.includes(`${sep}@prisma${sep}client${sep}runtime${sep}`) && !providers.has(m[1]));
};
for (const p of packages) {
  const rel = relative(root, p);
  const nested = join(p, "node_modules");
  cpSync(p, join(out, rel), { recursive: true, verbatimSymlinks: true, filter: (src) => src !== nested && !unused(src) });
}
for (const [link, target] of links) {
  mkdirSync(dirname(join(out, link)), { recursive: true });
  symlinkSync(relative(dirname(join(root, link)), target), join(out, link));
}
console.log(`gather: ${shipped.size} workspace(s), ${packages.size} npm package(s), Prisma providers [${[...providers].join(", ")}] -> ${out}`);
