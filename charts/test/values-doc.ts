// Values documentation of the luna-lib charts: each values.yaml documents its keys with `## @param <path> <text>`
// lines (bitnami style). This module lists undocumented keys (charts.test.ts fails on any) and renders the tables of
// charts/README.md between `<!-- values:<chart> -->` markers. Write: `node --conditions=luna-source --import tsx
// charts/test/values-doc.ts` (make charts-docs).
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

export const DOCUMENTED_CHARTS = ["auth", "billing", "model-registry", "chat-router", "image-job", "gateway", "luna"];
const chartsDir = join(dirname(fileURLToPath(import.meta.url)), "..");

export interface Param { path: string; description: string }

export function paramsOf(valuesYaml: string): Param[] {
  return [...valuesYaml.matchAll(/^\s*## @param (\S+) ?(.*)$/gm)].map((m) => ({ path: m[1]!, description: m[2]!.trim() }));
}

/** Leaf paths of the values (maps descended into, except empty ones; lists and scalars are leaves). */
function leaves(v: unknown, path: string, out: string[]): string[] {
  if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length > 0) {
    for (const [k, x] of Object.entries(v)) leaves(x, path ? `${path}.${k}` : k, out);
  } else if (path) out.push(path);
  return out;
}

/** Value paths no @param documents (a @param documents its path and everything under it). */
export function undocumented(valuesYaml: string): string[] {
  const params = paramsOf(valuesYaml).map((p) => p.path);
  return leaves(parseYaml(valuesYaml), "", []).filter((l) => !params.some((p) => l === p || l.startsWith(`${p}.`)));
}

/** @params that name no value (stale documentation). */
export function unknownParams(valuesYaml: string): string[] {
  const values = parseYaml(valuesYaml) as Record<string, unknown>;
  return paramsOf(valuesYaml).map((p) => p.path).filter((p) => {
    let v: unknown = values;
    for (const k of p.split(".")) {
      if (!v || typeof v !== "object" || !(k in v)) return true;
      v = (v as Record<string, unknown>)[k];
    }
    return false;
  });
}

function defaultOf(values: unknown, path: string): string {
  let v = values;
  for (const k of path.split(".")) v = (v as Record<string, unknown> | undefined)?.[k];
  const s = JSON.stringify(v) ?? "";
  return s.length > 60 ? `${s.slice(0, 57)}…` : s;
}

export function valuesTable(chart: string): string {
  const text = readFileSync(join(chartsDir, chart, "values.yaml"), "utf8");
  const values = parseYaml(text);
  const esc = (s: string) => s.replaceAll("|", "\\|");
  return ["| value | description | default |", "| --- | --- | --- |",
    ...paramsOf(text).map((p) => `| \`${p.path}\` | ${esc(p.description)} | \`${esc(defaultOf(values, p.path))}\` |`)].join("\n");
}

/** charts/README.md with every `<!-- values:<chart> -->…<!-- /values:<chart> -->` block regenerated. */
export function renderReadme(readme: string): string {
  return readme.replace(/<!-- values:([a-z-]+) -->[\s\S]*?<!-- \/values:\1 -->/g,
    (_m, chart: string) => `<!-- values:${chart} -->\n${valuesTable(chart)}\n<!-- /values:${chart} -->`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = join(chartsDir, "README.md");
  writeFileSync(file, renderReadme(readFileSync(file, "utf8")));
  console.log("wrote charts/README.md values tables");
}
