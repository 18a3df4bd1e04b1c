// Checks of the GitHub Actions workflows that run here: GitHub's own workflow parser and schema
// (@actions/workflow-parser, what the Actions service and its VS Code extension use), the job graph, and every make
// target and script a `run:` step calls. Each returns a list of problems (empty = fine).
import { accessSync, constants, existsSync } from "node:fs";
import { join } from "node:path";
import { NoOperationTraceWriter, convertWorkflowTemplate, parseWorkflow } from "@actions/workflow-parser";
import { parse } from "yaml";

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** GitHub's parser: YAML, the workflow schema (unknown keys, wrong types, missing runs-on), expressions, cron. */
export async function actionsParserErrors(file: string, content: string): Promise<string[]> {
  const result = parseWorkflow({ name: file, content }, new NoOperationTraceWriter());
  if (result.value) await convertWorkflowTemplate(result.context, result.value);
  return [...new Set(result.context.errors.getErrors().map((e) => e.message))];
}

export interface Step {
  job: string;
  index: number;
  name?: string;
  run?: string;
  uses?: string;
  if?: string;
}

export interface Workflow {
  file: string;
  doc: Obj;
  jobs: Record<string, Obj>;
  steps: Step[];
}

export function readWorkflow(file: string, content: string): Workflow {
  const doc = (parse(content) ?? {}) as Obj;
  const jobs = (isObj(doc.jobs) ? doc.jobs : {}) as Record<string, Obj>;
  const steps: Step[] = [];
  for (const [job, def] of Object.entries(jobs)) {
    const list = Array.isArray(def?.steps) ? (def.steps as Obj[]) : [];
    list.forEach((s, index) => steps.push({
      job, index, name: s.name as string | undefined, run: s.run as string | undefined, uses: s.uses as string | undefined,
      if: s.if === undefined ? undefined : String(s.if),
    }));
  }
  return { file, doc, jobs, steps };
}

const needsOf = (job: Obj): string[] => (Array.isArray(job.needs) ? job.needs.map(String) : typeof job.needs === "string" ? [job.needs] : []);

/** Jobs with steps (or a reusable workflow), `needs` naming existing jobs, no cycle, actions pinned to a version. */
export function checkStructure(w: Workflow): string[] {
  const issues: string[] = [];
  if (!Object.keys(w.jobs).length) issues.push(`${w.file}: no jobs`);
  for (const [id, job] of Object.entries(w.jobs)) {
    if (!isObj(job)) {
      issues.push(`${w.file}: job ${id} is not a mapping`);
      continue;
    }
    if (!job.uses && !(Array.isArray(job.steps) && job.steps.length)) issues.push(`${w.file}: job ${id} has no steps`);
    for (const n of needsOf(job)) if (!(n in w.jobs)) issues.push(`${w.file}: job ${id} needs '${n}', which is not a job`);
  }
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = (id: string, path: string[]): void => {
    if (done.has(id) || !w.jobs[id]) return;
    if (visiting.has(id)) {
      issues.push(`${w.file}: needs cycle ${[...path, id].join(" → ")}`);
      return;
    }
    visiting.add(id);
    for (const n of needsOf(w.jobs[id]!)) visit(n, [...path, id]);
    visiting.delete(id);
    done.add(id);
  };
  for (const id of Object.keys(w.jobs)) visit(id, []);
  for (const s of w.steps) {
    if (s.uses && !s.uses.startsWith("./") && !s.uses.startsWith("docker://") && !/@(v\d[\w.-]*|[0-9a-f]{40})$/.test(s.uses)) {
      issues.push(`${w.file}: ${s.job} step ${s.index + 1} uses ${s.uses} without a version`);
    }
    if (!s.run && !s.uses) issues.push(`${w.file}: ${s.job} step ${s.index + 1} has neither run nor uses`);
  }
  return issues;
}

/** The make targets a shell script calls (`make a b`, not variables or options). */
export function makeTargets(script: string): string[] {
  const out: string[] = [];
  for (const m of script.matchAll(/(?:^|[;&|(]\s*|\s)make\s+([^\n;&|)#]*)/gm)) {
    for (const word of m[1]!.trim().split(/\s+/)) if (word && !word.includes("=") && !word.startsWith("-") && !word.startsWith("$")) out.push(word);
  }
  return out;
}

/** The targets a Makefile defines (`name:` at the start of a line). */
export function makefileTargets(makefile: string): Set<string> {
  return new Set([...makefile.matchAll(/^([A-Za-z0-9_.-]+)\s*:(?!=)/gm)].map((m) => m[1]!));
}

/** Repository files a script names: scripts, sources and test paths under the project's top-level directories. */
export function scriptPaths(script: string): string[] {
  const dirs = "k8s|tools|gateway|services|packages|charts|proto|docs";
  return [...new Set([...script.matchAll(new RegExp(`(?<![\\w/.$-])(?:\\./)?((?:${dirs})/[\\w./-]*[\\w])`, "g"))].map((m) => m[1]!))]
    .filter((p) => !p.includes("*"));
}

/** Every `make` target exists in the Makefile; every path exists; every `.sh` is executable. */
export function checkCommands(root: string, w: Workflow, makefile: string): string[] {
  const issues: string[] = [];
  const targets = makefileTargets(makefile);
  for (const s of w.steps) {
    if (!s.run) continue;
    const at = `${w.file}: ${s.job} step ${s.index + 1}${s.name ? ` (${s.name})` : ""}`;
    for (const t of makeTargets(s.run)) if (!targets.has(t)) issues.push(`${at}: make ${t}: no such target in the Makefile`);
    for (const p of scriptPaths(s.run)) {
      const abs = join(root, p);
      if (!existsSync(abs)) issues.push(`${at}: ${p} does not exist`);
      else if (p.endsWith(".sh")) {
        try {
          accessSync(abs, constants.X_OK);
        } catch {
          issues.push(`${at}: ${p} is not executable`);
        }
      }
    }
  }
  return issues;
}
