// Offline checks of the skaffold modules (skaffold itself is not installable here: its binary is on no reachable
// registry). Each check returns a list of problems (empty = fine) so the tests can show it failing on a broken copy.
// Files are read through a Tree, so a test can replace or delete a file in memory without touching the work tree.
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ValidateFunction } from "ajv";
import { parseAllDocuments } from "yaml";
import { dependencyBuild, renderChart, type K8sObject } from "@luna/kube-check";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SKAFFOLD_API_VERSION = "skaffold/v4beta14";
/** Every module defines these, so `-p kind` / `-p gpu` mean the same everywhere (profiles propagate to required configs). */
export const PROFILES = ["kind", "gpu"] as const;
export type ProfileName = (typeof PROFILES)[number];

/** The repository's files, with in-memory replacements (`null` = deleted) for broken-input tests. */
export class Tree {
  constructor(readonly root = repoRoot, private readonly overrides: Record<string, string | null> = {}) {}
  with(overrides: Record<string, string | null>): Tree {
    return new Tree(this.root, { ...this.overrides, ...overrides });
  }
  rel(abs: string): string {
    return relative(this.root, abs) || ".";
  }
  private override(abs: string): string | null | undefined {
    const r = this.rel(abs);
    return Object.hasOwn(this.overrides, r) ? this.overrides[r] : undefined;
  }
  exists(abs: string): boolean {
    const o = this.override(abs);
    if (o !== undefined) return o !== null;
    return existsSync(abs);
  }
  isDir(abs: string): boolean {
    if (this.override(abs) !== undefined) return false;
    return existsSync(abs) && statSync(abs).isDirectory();
  }
  read(abs: string): string {
    const o = this.override(abs);
    if (o === null) throw new Error(`${this.rel(abs)}: no such file`);
    return o ?? readFileSync(abs, "utf8");
  }
}

// ---------- parsing ----------

export type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});

/** One `---` document of a skaffold file. */
export interface SkaffoldDoc {
  file: string; // absolute
  index: number;
  config: Obj;
}

export function readSkaffoldFile(tree: Tree, file: string): { docs: SkaffoldDoc[]; issues: string[] } {
  const issues: string[] = [];
  const docs: SkaffoldDoc[] = [];
  parseAllDocuments(tree.read(file)).forEach((d, index) => {
    for (const e of d.errors) issues.push(`${tree.rel(file)}#${index}: YAML: ${e.message}`);
    const config = d.toJS() as unknown;
    if (config === null || config === undefined) return;
    if (!isObj(config)) issues.push(`${tree.rel(file)}#${index}: not a mapping`);
    else docs.push({ file, index, config });
  });
  return { docs, issues };
}

// ---------- JSON Schema ----------

let schemaValidator: ValidateFunction | undefined;

/** The skaffold v4beta14 JSON Schema (draft-07, additionalProperties: false), copied into k8s/schemas/. */
export function skaffoldSchemaValidator(): ValidateFunction {
  if (!schemaValidator) {
    const schema = JSON.parse(readFileSync(join(repoRoot, "k8s/schemas/v4beta14.json"), "utf8")) as Obj;
    // strict: false — the schema carries skaffold's own annotation keywords (preferredOrder, x-intellij-html-description).
    const ajv = new Ajv({ allErrors: true, strict: false });
    schemaValidator = ajv.compile(schema);
  }
  return schemaValidator;
}

export function checkSchema(tree: Tree, doc: SkaffoldDoc): string[] {
  const where = `${tree.rel(doc.file)}#${doc.index}`;
  const issues: string[] = [];
  if (doc.config.apiVersion !== SKAFFOLD_API_VERSION) issues.push(`${where}: apiVersion must be ${SKAFFOLD_API_VERSION}, got ${String(doc.config.apiVersion)}`);
  if (doc.config.kind !== "Config") issues.push(`${where}: kind must be Config`);
  const validate = skaffoldSchemaValidator();
  if (!validate(doc.config)) {
    // The schema's anyOf branches (one per builder / build type) repeat each error; keep the distinct ones.
    const seen = new Set<string>();
    for (const e of validate.errors ?? []) {
      const extra = e.keyword === "additionalProperties" ? ` '${String((e.params as Obj).additionalProperty)}'` : "";
      const line = `${where}: ${e.instancePath || "/"} ${e.message ?? e.keyword}${extra}`;
      if (!seen.has(line)) {
        issues.push(line);
        seen.add(line);
      }
    }
  }
  return issues;
}

// ---------- profiles (skaffold's overlay rules) ----------

// In BuildConfig, `local`, `googleCloudBuild` and `cluster` are one-of: a profile setting one replaces the build type.
const BUILD_TYPES = ["local", "googleCloudBuild", "cluster"];

function overlay(base: unknown, over: unknown, path: string): unknown {
  if (over === undefined) return base;
  // Lists (artifacts, releases, valuesFiles, …) are replaced whole, as skaffold does.
  if (!isObj(over) || !isObj(base)) return structuredClone(over);
  const out: Obj = { ...base };
  if (path === "build" && BUILD_TYPES.some((t) => t in over)) for (const t of BUILD_TYPES) delete out[t];
  for (const [k, v] of Object.entries(over)) out[k] = overlay(out[k], v, path ? `${path}.${k}` : k);
  return out;
}

/** The config as skaffold sees it with `profile` active (the profile's fields overlaid; `undefined` = no profile). */
export function effectiveConfig(config: Obj, profile?: string): Obj {
  const { profiles, ...base } = config;
  if (!profile) return base;
  const p = arr(profiles).find((x) => obj(x).name === profile);
  if (!p) return base;
  const { name: _n, activation: _a, requiresAllActivations: _r, patches: _p, ...fields } = obj(p);
  let out: Obj = base;
  for (const [k, v] of Object.entries(fields)) out = { ...out, [k]: overlay(out[k], v, k) };
  return out;
}

// ---------- the module graph ----------

export interface Module {
  name: string;
  file: string;
  dir: string;
  config: Obj;
  requires: Module[];
}

export interface Graph {
  root: Module;
  modules: Map<string, Module>;
  files: Set<string>;
  issues: string[];
}

/** Resolves a `requires` path like skaffold: relative to the requiring file's directory; a directory means its skaffold.yaml. */
export function requiredFile(tree: Tree, fromDir: string, path: string): string {
  const abs = resolve(fromDir, path);
  return tree.isDir(abs) ? join(abs, "skaffold.yaml") : abs;
}

/** Loads the root skaffold.yaml and every config it requires, transitively. */
export function loadGraph(tree: Tree, rootFile = join(tree.root, "skaffold.yaml")): Graph {
  const issues: string[] = [];
  const modules = new Map<string, Module>();
  const files = new Set<string>();
  const byFile = new Map<string, Module[]>();

  const loadFile = (file: string, stack: string[]): Module[] => {
    if (stack.includes(file)) {
      issues.push(`requires cycle: ${[...stack, file].map((f) => tree.rel(f)).join(" → ")}`);
      return [];
    }
    const cached = byFile.get(file);
    if (cached) return cached;
    files.add(file);
    const { docs, issues: parseIssues } = readSkaffoldFile(tree, file);
    issues.push(...parseIssues);
    const mods: Module[] = [];
    byFile.set(file, mods);
    for (const doc of docs) {
      const name = obj(doc.config.metadata).name;
      if (typeof name !== "string" || !name) {
        issues.push(`${tree.rel(file)}#${doc.index}: metadata.name is required (it names the module for -m)`);
        continue;
      }
      const prev = modules.get(name);
      if (prev) issues.push(`module name '${name}' is used by ${tree.rel(prev.file)} and ${tree.rel(file)}`);
      const mod: Module = { name, file, dir: dirname(file), config: doc.config, requires: [] };
      modules.set(name, mod);
      mods.push(mod);
    }
    for (const mod of mods) {
      for (const dep of arr(mod.config.requires)) {
        const d = obj(dep);
        if (typeof d.path !== "string") {
          issues.push(`${mod.name}: a requires entry without a local path (${JSON.stringify(d)})`);
          continue;
        }
        const target = requiredFile(tree, mod.dir, d.path);
        if (!tree.exists(target)) {
          issues.push(`${mod.name}: requires ${d.path}, but ${tree.rel(target)} does not exist`);
          continue;
        }
        let deps = loadFile(target, [...stack, file]);
        const only = arr(d.configs).map(String);
        if (only.length) {
          for (const c of only) if (!deps.some((m) => m.name === c)) issues.push(`${mod.name}: requires config '${c}' not found in ${tree.rel(target)}`);
          deps = deps.filter((m) => only.includes(m.name));
        }
        mod.requires.push(...deps);
      }
    }
    return mods;
  };

  const roots = tree.exists(rootFile) ? loadFile(rootFile, []) : (issues.push(`${tree.rel(rootFile)} does not exist`), []);
  const root = roots[0] ?? { name: "?", file: rootFile, dir: dirname(rootFile), config: {}, requires: [] };
  return { root, modules, files, issues };
}

/** A module and everything it requires, transitively (what `skaffold -m <name>` activates). */
export function closure(mod: Module): Module[] {
  const out: Module[] = [];
  const visit = (m: Module): void => {
    if (out.includes(m)) return;
    out.push(m);
    m.requires.forEach(visit);
  };
  visit(mod);
  return out;
}

// ---------- artifacts and releases ----------

/** Skaffold's name for an artifact in template variables: `/ - . :` become `_` (IMAGE_REPO_luna_chat_router). */
export function templateName(image: string): string {
  return image.replace(/[/\-.:]/g, "_");
}

export interface Artifact {
  image: string;
  context: string; // absolute
  dockerfile: string; // absolute
  buildArgs: Record<string, string>;
}

export function artifactsOf(mod: Module, profile?: string): Artifact[] {
  const build = obj(effectiveConfig(mod.config, profile).build);
  return arr(build.artifacts).map((a) => {
    const o = obj(a);
    const context = resolve(mod.dir, typeof o.context === "string" ? o.context : ".");
    const docker = obj(o.docker);
    return {
      image: String(o.image),
      context,
      dockerfile: resolve(context, typeof docker.dockerfile === "string" ? docker.dockerfile : "Dockerfile"),
      buildArgs: Object.fromEntries(Object.entries(obj(docker.buildArgs)).map(([k, v]) => [k, String(v)])),
    };
  });
}

export interface Release {
  module: string;
  name: string;
  namespace?: string;
  chartPath?: string; // absolute
  valuesFiles: string[]; // absolute
  setValues: Record<string, string>;
  setValueTemplates: Record<string, string>;
}

export function releasesOf(mod: Module, profile?: string): Release[] {
  const helm = obj(obj(effectiveConfig(mod.config, profile).deploy).helm);
  return arr(helm.releases).map((r) => {
    const o = obj(r);
    const strMap = (v: unknown): Record<string, string> => Object.fromEntries(Object.entries(obj(v)).map(([k, x]) => [k, String(x)]));
    return {
      module: mod.name,
      name: String(o.name),
      namespace: typeof o.namespace === "string" ? o.namespace : undefined,
      chartPath: typeof o.chartPath === "string" ? resolve(mod.dir, o.chartPath) : undefined,
      valuesFiles: arr(o.valuesFiles).map((f) => resolve(mod.dir, String(f))),
      setValues: strMap(o.setValues),
      setValueTemplates: strMap(o.setValueTemplates),
    };
  });
}

/** The artifact names a template string refers to: {{.IMAGE_REPO_x}}, {{.IMAGE_TAG_x}}, {{.IMAGE_FULLY_QUALIFIED_x}}, … */
export function templateArtifactRefs(template: string): string[] {
  const refs: string[] = [];
  for (const m of template.matchAll(/\{\{\s*\.(IMAGE_(?:REPO_NO_DOMAIN|FULLY_QUALIFIED|REPO|TAG|DIGEST|DOMAIN|NAME))_([A-Za-z0-9_]+)\s*\}\}/g)) refs.push(m[2]!);
  return refs;
}

/** Every artifact named in a release's setValueTemplates is built by the module or a module it requires (same profile). */
export function checkTemplateRefs(graph: Graph, profile?: string): string[] {
  const issues: string[] = [];
  for (const mod of graph.modules.values()) {
    const built = new Set(closure(mod).flatMap((m) => artifactsOf(m, profile)).map((a) => templateName(a.image)));
    for (const rel of releasesOf(mod, profile)) {
      for (const [key, tpl] of Object.entries(rel.setValueTemplates)) {
        for (const ref of templateArtifactRefs(tpl)) {
          if (!built.has(ref)) {
            issues.push(`${mod.name}${profile ? ` (-p ${profile})` : ""}: release ${rel.name} sets ${key} from artifact '${ref}', which neither ${mod.name} nor a module it requires builds (built: ${[...built].join(", ") || "none"})`);
          }
        }
        if (/\{\{/.test(tpl) && templateArtifactRefs(tpl).length === 0 && /IMAGE_/.test(tpl)) {
          issues.push(`${mod.name}: release ${rel.name} ${key}: '${tpl}' names no artifact (write {{.IMAGE_REPO_<artifact>}} with / - . : as _)`);
        }
      }
    }
  }
  return issues;
}

/** Every artifact a module builds is deployed by some release (skaffold warns "image is not used" otherwise). */
export function checkArtifactsUsed(graph: Graph, profile?: string): string[] {
  const used = new Set<string>();
  for (const mod of graph.modules.values()) {
    for (const rel of releasesOf(mod, profile)) for (const tpl of Object.values(rel.setValueTemplates)) templateArtifactRefs(tpl).forEach((r) => used.add(r));
  }
  const issues: string[] = [];
  for (const mod of graph.modules.values()) {
    for (const a of artifactsOf(mod, profile)) {
      if (!used.has(templateName(a.image))) issues.push(`${mod.name}${profile ? ` (-p ${profile})` : ""}: builds ${a.image}, but no release sets it (setValueTemplates {{.IMAGE_REPO_${templateName(a.image)}}})`);
    }
  }
  return issues;
}

/** Chart paths, values files, build contexts and Dockerfiles exist; a Dockerfile stage exists for each PROGRAM. */
export function checkPaths(tree: Tree, graph: Graph, profile?: string): string[] {
  const issues: string[] = [];
  const at = (m: string): string => `${m}${profile ? ` (-p ${profile})` : ""}`;
  for (const mod of graph.modules.values()) {
    for (const rel of releasesOf(mod, profile)) {
      if (!rel.chartPath) issues.push(`${at(mod.name)}: release ${rel.name} has no chartPath (remote charts belong in k8s/bootstrap.sh)`);
      else if (!tree.exists(join(rel.chartPath, "Chart.yaml"))) issues.push(`${at(mod.name)}: release ${rel.name}: chart ${tree.rel(rel.chartPath)}/Chart.yaml does not exist`);
      for (const f of rel.valuesFiles) if (!tree.exists(f)) issues.push(`${at(mod.name)}: release ${rel.name}: values file ${tree.rel(f)} does not exist`);
    }
    for (const a of artifactsOf(mod, profile)) {
      if (!tree.isDir(a.context)) issues.push(`${at(mod.name)}: ${a.image}: context ${tree.rel(a.context)} is not a directory`);
      if (!tree.exists(a.dockerfile)) {
        issues.push(`${at(mod.name)}: ${a.image}: Dockerfile ${tree.rel(a.dockerfile)} does not exist`);
        continue;
      }
      const program = a.buildArgs.PROGRAM;
      if (!program) issues.push(`${at(mod.name)}: ${a.image}: no PROGRAM build argument (one Dockerfile builds every program)`);
      else if (!dockerfilePrograms(tree.read(a.dockerfile)).includes(program)) {
        issues.push(`${at(mod.name)}: ${a.image}: PROGRAM=${program} is not a program of ${tree.rel(a.dockerfile)} (${dockerfilePrograms(tree.read(a.dockerfile)).join(", ")})`);
      }
    }
  }
  return issues;
}

/** The programs the root Dockerfile builds: one `program-<name>` stage each, chosen by `FROM program-${PROGRAM}`. */
export function dockerfilePrograms(dockerfile: string): string[] {
  if (!/^FROM\s+program-\$\{PROGRAM\}\s*$/m.test(dockerfile)) return [];
  return [...dockerfile.matchAll(/^FROM\s+\S+\s+AS\s+program-([a-z0-9-]+)\s*$/gim)].map((m) => m[1]!);
}

/**
 * Each service module (services/<svc>/skaffold.yaml) builds exactly one image, luna/<svc> with PROGRAM=<svc> from the
 * root Dockerfile and context, deploys release <svc> from charts/<svc>, and sets that image into the chart.
 */
export function checkServiceModule(tree: Tree, graph: Graph, service: string): string[] {
  const issues: string[] = [];
  const file = join(tree.root, "services", service, "skaffold.yaml");
  const mod = [...graph.modules.values()].find((m) => m.file === file);
  if (!mod) return [`services/${service}/skaffold.yaml is not part of the root skaffold.yaml (requires)`];
  if (mod.name !== service) issues.push(`services/${service}/skaffold.yaml: metadata.name is '${mod.name}', expected '${service}' (skaffold dev -m ${service})`);
  for (const profile of [undefined, ...PROFILES]) {
    const at = `${service}${profile ? ` (-p ${profile})` : ""}`;
    const arts = artifactsOf(mod, profile);
    if (arts.length !== 1) issues.push(`${at}: builds ${arts.length} images (${arts.map((a) => a.image).join(", ")}), expected only luna/${service}`);
    for (const a of arts) {
      if (a.image !== `luna/${service}`) issues.push(`${at}: builds ${a.image}, expected luna/${service}`);
      if (a.buildArgs.PROGRAM !== service) issues.push(`${at}: ${a.image} has PROGRAM=${a.buildArgs.PROGRAM ?? "(unset)"}, expected ${service}`);
      if (a.context !== tree.root) issues.push(`${at}: ${a.image} context is ${tree.rel(a.context)}, expected the repository root`);
      if (a.dockerfile !== join(tree.root, "Dockerfile")) issues.push(`${at}: ${a.image} uses ${tree.rel(a.dockerfile)}, expected the root Dockerfile`);
    }
    const rels = releasesOf(mod, profile);
    if (rels.length !== 1) issues.push(`${at}: deploys ${rels.length} releases, expected one (${service})`);
    for (const r of rels) {
      if (r.name !== service) issues.push(`${at}: release is '${r.name}', expected '${service}'`);
      if (r.chartPath !== join(tree.root, "charts", service)) issues.push(`${at}: chartPath is ${r.chartPath ? tree.rel(r.chartPath) : "(none)"}, expected charts/${service}`);
      const own = templateName(`luna/${service}`);
      if (r.setValueTemplates["image.repository"] !== `{{.IMAGE_REPO_${own}}}`) issues.push(`${at}: image.repository must be {{.IMAGE_REPO_${own}}}, got ${r.setValueTemplates["image.repository"] ?? "(unset)"}`);
      if (r.setValueTemplates["image.tag"] !== `{{.IMAGE_TAG_${own}}}`) issues.push(`${at}: image.tag must be {{.IMAGE_TAG_${own}}}, got ${r.setValueTemplates["image.tag"] ?? "(unset)"}`);
    }
  }
  return issues;
}

/**
 * Profiles: every module defines exactly `kind` and `gpu` (and nothing uses JSON patches by list index); with `kind`
 * nothing is pushed and no real GPU image is built; with `gpu` no simulator is built or deployed.
 */
export function checkProfiles(graph: Graph): string[] {
  const issues: string[] = [];
  for (const mod of graph.modules.values()) {
    const names = arr(mod.config.profiles).map((p) => String(obj(p).name));
    for (const p of PROFILES) if (!names.includes(p)) issues.push(`${mod.name}: no '${p}' profile (every module defines ${PROFILES.join(" and ")})`);
    for (const n of names) if (!(PROFILES as readonly string[]).includes(n)) issues.push(`${mod.name}: profile '${n}' is not one of ${PROFILES.join(", ")}`);
    if (new Set(names).size !== names.length) issues.push(`${mod.name}: a profile is defined twice`);
    for (const p of arr(mod.config.profiles)) {
      if (arr(obj(p).patches).length) issues.push(`${mod.name}: profile ${String(obj(p).name)} uses JSON patches (list indexes break silently); give the whole list instead`);
      if (obj(p).activation) issues.push(`${mod.name}: profile ${String(obj(p).name)} has an activation; profiles are chosen with -p only`);
    }
    for (const dep of arr(mod.config.requires)) {
      if (obj(dep).activeProfiles) issues.push(`${mod.name}: requires with activeProfiles stops -p from propagating to ${String(obj(dep).path)}`);
    }
    const kindArts = artifactsOf(mod, "kind");
    const kindBuild = obj(effectiveConfig(mod.config, "kind").build);
    if (kindArts.length && obj(kindBuild.local).push !== false) issues.push(`${mod.name} (-p kind): build.local.push must be false (images are loaded into kind, not pushed)`);
    const gpuBuild = obj(effectiveConfig(mod.config, "gpu").build);
    if (artifactsOf(mod, "gpu").length && obj(gpuBuild.local).push === false) issues.push(`${mod.name} (-p gpu): images must be pushed to the cluster's registry`);
    for (const a of artifactsOf(mod, "gpu")) if (/\/sim-/.test(a.image)) issues.push(`${mod.name} (-p gpu): builds the simulator ${a.image}`);
    for (const r of releasesOf(mod, "gpu")) {
      for (const [k, v] of Object.entries({ ...r.setValues, ...r.setValueTemplates })) {
        if (/sim[_-]/.test(v) || (k.startsWith("simulator.") && k.endsWith(".enabled") && v === "true")) issues.push(`${mod.name} (-p gpu): release ${r.name} sets ${k}=${v} (a simulator)`);
      }
    }
  }
  return issues;
}

/** What skaffold would put in place of {{.IMAGE_REPO_x}} / {{.IMAGE_TAG_x}}: recognisable fakes. */
export function fillTemplate(tpl: string): string {
  return tpl
    .replace(/\{\{\s*\.IMAGE_REPO_([A-Za-z0-9_]+)\s*\}\}/g, (_m, a: string) => `registry.test/${a}`)
    .replace(/\{\{\s*\.IMAGE_TAG_([A-Za-z0-9_]+)\s*\}\}/g, (_m, a: string) => `t-${a}`);
}

/** A release rendered with the real helm as skaffold would deploy it (templates filled with {@link fillTemplate}). */
export async function renderRelease(rel: Release): Promise<K8sObject[]> {
  const set: Record<string, string> = { ...rel.setValues };
  for (const [k, v] of Object.entries(rel.setValueTemplates)) set[k] = fillTemplate(v);
  await dependencyBuild(rel.chartPath!);
  const { objects } = await renderChart(rel.chartPath!, { release: rel.name, namespace: rel.namespace ?? "luna", valuesFiles: rel.valuesFiles, set });
  return objects;
}
