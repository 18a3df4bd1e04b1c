// Checks that the root Dockerfile still matches the workspace layout (run by tools/images/test/dockerfile.test.ts, no
// container engine needed): for every program, the workspaces its build stage copies, installs, compiles and gathers
// are exactly its transitive workspace dependencies (package.json), its image runs an entrypoint that exists, exposes
// its ports; and the runtime rules hold (NODE_IMAGE argument, uid 10001, OCI labels, every service's migrations in
// the migrate image).
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PROGRAMS, type Program } from "./programs.js";

export interface Workspace {
  name: string;
  dir: string;
  deps: string[];
}

/** Every workspace of the repository (package.json "workspaces"), by package name. */
export function readWorkspaces(root: string): Map<string, Workspace> {
  const patterns = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { workspaces: string[] }).workspaces;
  const dirs = patterns.flatMap((p) => (p.endsWith("/*") ? readdirSync(join(root, p.slice(0, -2))).map((d) => `${p.slice(0, -2)}/${d}`) : [p]))
    .filter((d) => existsSync(join(root, d, "package.json")));
  const map = new Map<string, Workspace>();
  for (const dir of dirs) {
    const pkg = JSON.parse(readFileSync(join(root, dir, "package.json"), "utf8")) as { name: string; dependencies?: Record<string, string> };
    map.set(pkg.name, { name: pkg.name, dir, deps: Object.keys(pkg.dependencies ?? {}) });
  }
  return map;
}

/** The workspace directories `dir` needs at run time: itself and its workspace dependencies, transitively. */
export function workspaceClosure(dir: string, workspaces: Map<string, Workspace>): string[] {
  const byDir = new Map([...workspaces.values()].map((w) => [w.dir, w]));
  const seen = new Set<string>();
  const visit = (d: string): void => {
    if (seen.has(d)) return;
    seen.add(d);
    for (const dep of byDir.get(d)?.deps ?? []) {
      const w = workspaces.get(dep);
      if (w) visit(w.dir);
    }
  };
  visit(dir);
  return [...seen].sort();
}

interface Stage {
  name: string;
  from: string;
  lines: string[];
}

/** The Dockerfile's stages, continuation lines joined, comments dropped. */
export function parseStages(text: string): Stage[] {
  const logical = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) stages.push({ name: from[2] ?? "", from: from[1]!, lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  return stages;
}

const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort();
const same = (a: string[], b: string[]): boolean => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));

/** Problems found (empty when the Dockerfile fits the layout). */
export function checkDockerfile(text: string, root: string, workspaces = readWorkspaces(root), programs: readonly Program[] = PROGRAMS): string[] {
  const problems: string[] = [];
  const stages = parseStages(text);
  const stage = (name: string): Stage | undefined => stages.find((s) => s.name === name);
  const args = text.split("\n").filter((l) => /^ARG\s/.test(l));
  if (!args.some((l) => /^ARG NODE_IMAGE=\S+/.test(l))) problems.push("no `ARG NODE_IMAGE=<default>` before the first stage");
  const final = stages.at(-1);
  if (final?.from !== "program-${PROGRAM}") problems.push("the last stage must be `FROM program-${PROGRAM}`");
  for (const label of ["source", "revision", "version"]) {
    if (!final?.lines.some((l) => l.includes(`org.opencontainers.image.${label}=`))) problems.push(`final stage lacks label org.opencontainers.image.${label}`);
  }
  const runtime = stage("runtime");
  if (runtime?.from !== "${NODE_IMAGE}") problems.push("the runtime stage must be `FROM ${NODE_IMAGE} AS runtime`");
  if (!runtime?.lines.includes("USER 10001:10001")) problems.push("the runtime stage must run as USER 10001:10001");

  const programStages = stages.filter((s) => s.name.startsWith("program-")).map((s) => s.name.slice("program-".length));
  if (!same(programStages, programs.map((p) => p.name))) {
    problems.push(`program stages [${sorted(programStages).join(", ")}] differ from the programs [${sorted(programs.map((p) => p.name)).join(", ")}]`);
  }

  for (const p of programs) {
    const ps = stage(`program-${p.name}`);
    if (!ps) continue;
    if (ps.from !== "runtime") problems.push(`program-${p.name} must build FROM runtime`);
    const copyFrom = ps.lines.map((l) => /^COPY --from=(\S+)/.exec(l)?.[1]).filter(Boolean);
    if (!same(copyFrom as string[], [`build-${p.stage}`])) problems.push(`program-${p.name} copies from [${copyFrom.join(", ")}], not build-${p.stage}`);
    const run = ps.lines.filter((l) => /^(CMD|ENTRYPOINT)\s/.test(l)).join(" ");
    if (!run.includes(`"${p.entrypoint}"`)) problems.push(`program-${p.name} does not run ${p.entrypoint}`);
    const src = p.entrypoint.replace("/dist/", "/src/").replace(/\.js$/, ".ts");
    if (!existsSync(join(root, src))) problems.push(`program-${p.name}: entrypoint ${p.entrypoint} has no source ${src}`);
    const exposed = ps.lines.filter((l) => l.startsWith("EXPOSE")).flatMap((l) => l.split(/\s+/).slice(1));
    if (!same(exposed, p.ports.map(String))) problems.push(`program-${p.name} exposes [${exposed.join(", ")}], not [${p.ports.join(", ")}]`);

    const bs = stage(`build-${p.stage}`);
    if (!bs) {
      problems.push(`no stage build-${p.stage}`);
      continue;
    }
    const want = workspaceClosure(p.workspace, workspaces);
    const manifests = bs.lines.map((l) => /^COPY (\S+)\/package\.json \S+$/.exec(l)?.[1]).filter((x): x is string => Boolean(x));
    const sources = bs.lines.map((l) => /^COPY (\S+) (\S+)$/.exec(l)).filter((m) => m && m[1] === m[2]).map((m) => m![1]!);
    const ci = bs.lines.find((l) => /\bnpm ci\b/.test(l)) ?? "";
    const installed = [...ci.matchAll(/-w (\S+)/g)].map((m) => m[1]!);
    const gathered = (bs.lines.find((l) => l.includes("gather.mjs /out")) ?? "").split("gather.mjs /out")[1]?.split("&&")[0]?.trim().split(/\s+/) ?? [];
    for (const [what, got] of [["copies the manifests of", manifests], ["copies the sources of", sources], ["npm ci -w installs", installed],
      ["gathers", gathered]] as const) {
      if (!same(got, want)) problems.push(`build-${p.stage} ${what} [${sorted(got).join(", ")}], but ${p.workspace} needs [${want.join(", ")}]`);
    }
    if (!bs.lines.some((l) => l.includes(`tsc -b ${p.workspace}`))) problems.push(`build-${p.stage} does not compile ${p.workspace} (tsc -b)`);
    if (existsSync(join(root, p.workspace, "prisma", "schema.prisma")) && !bs.lines.some((l) => l.includes(`prisma-generate.mjs ${p.workspace.split("/")[1]}`))) {
      problems.push(`build-${p.stage} does not generate the Prisma client of ${p.workspace}`);
    }
  }

  const migrate = stage("build-migrate");
  if (migrate) {
    const services = readdirSync(join(root, "services")).filter((s) => existsSync(join(root, "services", s, "prisma", "migrations")));
    const shipped = migrate.lines.map((l) => /^COPY services\/([^/\s]+)\/prisma\/migrations \/out\/services\/\1\/prisma\/migrations$/.exec(l)?.[1])
      .filter((x): x is string => Boolean(x));
    if (!same(shipped, services)) problems.push(`the migrate image ships migrations of [${sorted(shipped).join(", ")}], services with migrations are [${services.sort().join(", ")}]`);
  }
  return problems;
}
