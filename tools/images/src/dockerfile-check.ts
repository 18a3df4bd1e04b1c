// Checks that the root Dockerfile still matches the workspace layout (run by tools/images/test/dockerfile.test.ts, no
// container engine needed): for every program, the workspaces its build copies, installs, compiles and gathers are
// exactly its transitive workspace dependencies (package.json). A build stage may be shared and parametrised: its FROM
// may name `<alias>-${PROGRAM}`, an alias stage whose ENV (e.g. SERVICE=auth) the stage's COPY/RUN lines expand, as
// BuildKit and buildah do; the check expands it per program the same way. No two build stages may be copies differing
// only in a name. Also: the image runs an entrypoint that exists and exposes its ports; the runtime rules hold
// (NODE_IMAGE argument, uid 10001, OCI labels, every service's migrations in the migrate image).
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

/** `${NAME}` and `$NAME` replaced from vars; names vars lacks are left as they are. */
function expand(line: string, vars: ReadonlyMap<string, string>): string {
  return line.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a?: string, b?: string) => vars.get((a ?? b)!) ?? whole);
}

/**
 * The lines of build stage `name` as the engine runs them for one PROGRAM: FROM `${PROGRAM}` resolved, the ENV and
 * ARG values of the stage and its parent stages (parents first) expanded into its lines. Problems when a parent is no
 * stage of the file (e.g. no alias stage for this program) or a variable stays undefined.
 */
export function resolveStage(stages: Stage[], name: string, program: string): { lines: string[]; problems: string[] } {
  const problems: string[] = [];
  const chain: Stage[] = [];
  for (let s = stages.find((x) => x.name === name); s; ) {
    chain.unshift(s);
    const from = s.from.replace(/\$\{PROGRAM\}|\$PROGRAM\b/g, program);
    const parent = stages.find((x) => x.name === from);
    if (!parent && from !== s.from) problems.push(`${s.name} [PROGRAM=${program}] starts FROM ${from}, which is not a stage of the Dockerfile`);
    s = parent;
  }
  const vars = new Map<string, string>([["PROGRAM", program]]);
  for (const s of chain) {
    for (const line of s.lines) {
      const env = /^ENV\s+(.*)$/.exec(line)?.[1];
      const arg = /^ARG\s+(\w+)=(\S*)$/.exec(line);
      if (env && /^\w+\s+[^=]*$/.test(env)) vars.set(env.split(/\s+/)[0]!, expand(env.replace(/^\w+\s+/, ""), vars));
      else if (env) for (const m of env.matchAll(/(\w+)=(\S*)/g)) vars.set(m[1]!, expand(m[2]!, vars));
      if (arg) vars.set(arg[1]!, expand(arg[2]!, vars));
    }
  }
  const own = chain.at(-1)?.lines ?? [];
  const lines = own.map((l) => expand(l, vars));
  for (const l of lines) {
    const undef = /\$\{?\w+\}?/.exec(l);
    if (undef) problems.push(`${name} [PROGRAM=${program}] uses ${undef[0]}, which no ENV/ARG of the stage or its parents defines: ${l}`);
  }
  return { lines, problems };
}

/** Build stages that are copies of one another differing only in their own name (`build-auth` vs `build-billing`). */
export function duplicateStages(stages: Stage[]): string[][] {
  const groups = new Map<string, string[]>();
  for (const s of stages.filter((x) => x.name.startsWith("build-") && x.lines.length > 0)) {
    const own = s.name.slice("build-".length);
    const key = [s.from, ...s.lines].map((l) => l.split(own).join("\u0000")).join("\n");
    groups.set(key, [...(groups.get(key) ?? []), s.name]);
  }
  return [...groups.values()].filter((g) => g.length > 1);
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

    const bsName = `build-${p.stage}`;
    if (!stage(bsName)) {
      problems.push(`no stage ${bsName}`);
      continue;
    }
    const resolved = resolveStage(stages, bsName, p.name);
    problems.push(...resolved.problems);
    const bs = { lines: resolved.lines };
    const at = `${bsName} [PROGRAM=${p.name}]`;
    const want = workspaceClosure(p.workspace, workspaces);
    const manifests = bs.lines.map((l) => /^COPY (\S+)\/package\.json \S+$/.exec(l)?.[1]).filter((x): x is string => Boolean(x));
    const sources = bs.lines.map((l) => /^COPY (\S+) (\S+)$/.exec(l)).filter((m) => m && m[1] === m[2]).map((m) => m![1]!);
    const ci = bs.lines.find((l) => /\bnpm ci\b/.test(l)) ?? "";
    const installed = [...ci.matchAll(/-w (\S+)/g)].map((m) => m[1]!);
    const gathered = (bs.lines.find((l) => l.includes("gather.mjs /out")) ?? "").split("gather.mjs /out")[1]?.split("&&")[0]?.trim().split(/\s+/) ?? [];
    for (const [what, got] of [["copies the manifests of", manifests], ["copies the sources of", sources], ["npm ci -w installs", installed],
      ["gathers", gathered]] as const) {
      if (!same(got, want)) problems.push(`${at} ${what} [${sorted(got).join(", ")}], but ${p.workspace} needs [${want.join(", ")}]`);
    }
    if (!bs.lines.some((l) => l.includes(`tsc -b ${p.workspace}`))) problems.push(`${at} does not compile ${p.workspace} (tsc -b)`);
    if (existsSync(join(root, p.workspace, "prisma", "schema.prisma")) && !bs.lines.some((l) => l.includes(`prisma-generate.mjs ${p.workspace.split("/")[1]}`))) {
      problems.push(`${at} does not generate the Prisma client of ${p.workspace}`);
    }
  }

  for (const group of duplicateStages(stages)) {
    problems.push(`build stages [${group.join(", ")}] are copies differing only in a name: make them one stage parametrised by it`);
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
