// charts/luna-observability: rendered with the real helm and validated (Prometheus-operator and Kubernetes schemas,
// unknown fields); the alert rules checked and unit-tested with the real promtool; every alert's runbook exists in
// docs/RUNBOOKS.md; every metric the rules and dashboards read is one the services (or a named exporter) export;
// every dashboard query parses. Each check is also shown failing on a broken input.
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import {
  dependencyBuild, formatIssues, helmResult, promtool, renderChart, repoRoot, templateArgs, validateObjects, type K8sObject,
} from "@luna/kube-check";
import { metricNamesIn, unknownMetrics } from "./observability-metrics.js";

const CHART = "charts/luna-observability";
const chartDir = join(repoRoot, CHART);
const fixtures = join(repoRoot, "charts/test/observability");
let work: string;

type Rule = { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
type Group = { name: string; rules: Rule[] };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "luna-observability-"));
  await dependencyBuild(CHART);
}, 600_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function render(opts: { valuesFiles?: string[]; set?: Record<string, string>; extraArgs?: string[] } = {}): Promise<K8sObject[]> {
  return (await renderChart(CHART, { release: "luna-observability", namespace: "luna", ...opts })).objects;
}

function groupsOf(objects: K8sObject[]): Group[] {
  const rule = objects.find((o) => o.kind === "PrometheusRule");
  if (!rule) throw new Error("no PrometheusRule rendered");
  return (rule.spec as { groups: Group[] }).groups;
}

/** Writes a Prometheus rule file; `annotations: false` strips them (the unit tests of labels ignore texts). */
function writeRules(dir: string, file: string, groups: Group[], annotations = true): string {
  const g = annotations ? groups : groups.map((x) => ({ ...x, rules: x.rules.map(({ annotations: _a, ...r }) => r) }));
  writeFileSync(join(dir, file), stringify({ groups: g }));
  return join(dir, file);
}

/** Runs the promtool unit tests in charts/test/observability against `groups`; returns promtool's result. */
async function unitTests(groups: Group[]) {
  const dir = mkdtempSync(join(work, "unit-"));
  writeRules(dir, "rules.yaml", groups, false);
  writeRules(dir, "rules-full.yaml", groups, true);
  const tests = readdirSync(fixtures).filter((f) => f.endsWith(".promtool.yaml"));
  for (const t of tests) cpSync(join(fixtures, t), join(dir, t));
  return { tests, result: await promtool(["test", "rules", ...tests], { cwd: dir }) };
}

describe("luna-observability chart", () => {
  const ciFiles = readdirSync(join(chartDir, "ci")).filter((f) => f.endsWith("-values.yaml"));
  const invalidFiles = readdirSync(join(chartDir, "ci/invalid")).filter((f) => f.endsWith(".yaml"));

  it("has the required ci variants and invalid inputs", () => {
    expect(ciFiles).toEqual(expect.arrayContaining(["default-values.yaml", "simulator-values.yaml", "production-values.yaml", "scale-to-zero-values.yaml"]));
    expect(invalidFiles.length).toBeGreaterThanOrEqual(3);
  });

  it.each(ciFiles)("ci/%s: lint --strict, template, every object valid", async (file) => {
    const values = join(CHART, "ci", file);
    const lint = await helmResult(["lint", "--strict", chartDir, "-f", join(repoRoot, values), "--namespace", "luna"]);
    expect(lint.code, lint.stdout + lint.stderr).toBe(0);
    const objects = await render({ valuesFiles: [values] });
    expect(formatIssues(await validateObjects(objects))).toBe("");
  });

  it.each(invalidFiles)("ci/invalid/%s is refused by the schema", async (file) => {
    const values = join(repoRoot, CHART, "ci/invalid", file);
    const lint = await helmResult(["lint", "--strict", chartDir, "-f", values]);
    expect(lint.code).not.toBe(0);
    const tpl = await helmResult(templateArgs(CHART, { valuesFiles: [values] }));
    expect(tpl.code).not.toBe(0);
    expect(tpl.stderr).toMatch(/values don't meet the specifications of the schema/);
  });

  it("the validator catches a misspelled field in a rendered PrometheusRule", async () => {
    const objects = await render();
    const rule = structuredClone(objects.find((o) => o.kind === "PrometheusRule")!);
    (rule.spec as { groups: Record<string, unknown>[] }).groups[0]!.rule = [];
    expect(formatIssues(await validateObjects([rule]))).toMatch(/unknown field "rule"/);
  });

  it("renders one ConfigMap per dashboard file, labelled for Grafana's sidecar, with the file's JSON", async () => {
    const objects = await render();
    const files = readdirSync(join(chartDir, "dashboards")).filter((f) => f.endsWith(".json")).sort();
    const maps = objects.filter((o) => o.kind === "ConfigMap" && o.metadata?.labels?.grafana_dashboard === "1");
    expect(maps.map((m) => Object.keys(m.data as object)[0]).sort()).toEqual(files);
    for (const m of maps) {
      const [file, text] = Object.entries(m.data as Record<string, string>)[0]!;
      expect(JSON.parse(text)).toEqual(JSON.parse(readFileSync(join(chartDir, "dashboards", file), "utf8")));
      expect(m.metadata?.annotations?.grafana_folder).toBe("Luna");
    }
    const off = await render({ set: { "dashboards.enabled": "false", "rules.enabled": "false" } });
    expect(off.filter((o) => o.kind === "ConfigMap" || o.kind === "PrometheusRule")).toEqual([]);
  });
});

describe("alert rules", () => {
  it("pass promtool check rules; a broken expression fails it", async () => {
    const groups = groupsOf(await render());
    const ok = await promtool(["check", "rules", writeRules(work, "rules-ok.yaml", groups)]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const broken = structuredClone(groups);
    broken[0]!.rules[0]!.expr = broken[0]!.rules[0]!.expr.replace(") > ", " > ");
    const bad = await promtool(["check", "rules", writeRules(work, "rules-bad.yaml", broken)]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/parse error|unclosed/);
  });

  it("pass their promtool unit tests (charts/test/observability/*.promtool.yaml)", async () => {
    const { tests, result } = await unitTests(groupsOf(await render()));
    expect(tests).toEqual(expect.arrayContaining(["alerts.promtool.yaml", "annotations.promtool.yaml"]));
    expect(result.code, result.stdout + result.stderr).toBe(0);
  });

  it("the unit tests catch a wrong threshold, a lost namespace scope and a wrong runbook link", async () => {
    const loose = await unitTests(groupsOf(await render({
      extraArgs: ["--set-json", "rules.errorRate.ratio=0.5", "--set", "rules.ttft.p99Seconds=15", "--set", "rules.outboxLag.oldestSeconds=900"],
    })));
    expect(loose.result.code).not.toBe(0);
    expect(loose.result.stdout + loose.result.stderr).toMatch(/error rate per service[\s\S]*TTFT p99 per model/);
    expect(loose.result.stdout + loose.result.stderr).toMatch(/name: outbox lag per outbox/);
    const unscoped = await unitTests(groupsOf(await render({ set: { "rules.scopeToReleaseNamespace": "false" } })));
    expect(unscoped.result.stdout + unscoped.result.stderr).toMatch(/name: error rate per service/);
    expect(unscoped.result.stdout + unscoped.result.stderr).toMatch(/name: outbox lag per outbox/);
    const link = await unitTests(groupsOf(await render({ set: { "rules.runbookBaseUrl": "https://example.com/RUNBOOKS.md" } })));
    expect(link.result.stdout + link.result.stderr).toMatch(/ledger invariant annotations/);
    expect(link.result.stdout + link.result.stderr).toMatch(/outbox lag annotations/);
  });

  it("every alert has a severity, a summary and a runbook_url whose section exists in docs/RUNBOOKS.md", async () => {
    const groups = groupsOf(await render());
    const alerts = groups.flatMap((g) => g.rules).filter((r) => r.alert);
    expect(alerts.length).toBeGreaterThanOrEqual(12);
    const book = readFileSync(join(repoRoot, "docs/RUNBOOKS.md"), "utf8");
    expect(runbookProblems(alerts, book)).toEqual([]);
    // Broken inputs: a section renamed away, and an alert without a runbook.
    expect(runbookProblems(alerts, book.replace("## LunaHoldsExpiring", "## Holds expiring"))).toEqual([
      "LunaHoldsExpiring: no section \"## LunaHoldsExpiring\" in docs/RUNBOOKS.md",
    ]);
    const noLink = alerts.map((a) => (a.alert === "LunaModelOffline" ? { ...a, annotations: { summary: "x" } } : a));
    expect(runbookProblems(noLink, book)).toContain("LunaModelOffline: runbook_url missing or not #lunamodeloffline");
  });

  it("read only metrics that Luna or a named exporter exports; an invented name is reported", async () => {
    const exprs = groupsOf(await render()).flatMap((g) => g.rules.map((r) => r.expr));
    expect(unknownMetrics(exprs)).toEqual([]);
    expect(metricNamesIn(exprs[0]!)).toEqual(["luna_rpc_requests_total"]);
    expect(unknownMetrics(["sum(rate(luna_outbox_lag_seconds[5m])) > 60", "vllm:num_requests_waitng > 1"]))
      .toEqual(["luna_outbox_lag_seconds", "vllm:num_requests_waitng"]);
  });
});

/** Problems with the alerts' runbook links against RUNBOOKS.md's `## <Alert>` sections; empty = fine. */
function runbookProblems(alerts: Rule[], book: string): string[] {
  const sections = new Set([...book.matchAll(/^## (Luna\w+)\s*$/gm)].map((m) => m[1]!));
  const problems: string[] = [];
  for (const a of alerts) {
    const name = a.alert!;
    if (!a.labels?.severity) problems.push(`${name}: no severity label`);
    if (!a.annotations?.summary) problems.push(`${name}: no summary`);
    const url = a.annotations?.runbook_url ?? "";
    if (!/^https?:\/\/\S+\/RUNBOOKS\.md#/.test(url) || !url.endsWith(`#${name.toLowerCase()}`)) {
      problems.push(`${name}: runbook_url missing or not #${name.toLowerCase()}`);
    }
    if (!sections.has(name)) problems.push(`${name}: no section "## ${name}" in docs/RUNBOOKS.md`);
  }
  const alertNames = new Set(alerts.map((a) => a.alert));
  for (const s of sections) if (!alertNames.has(s)) problems.push(`docs/RUNBOOKS.md: section ${s} has no alert`);
  return problems;
}

// ---- dashboards ----

type Target = { expr?: string; refId?: string };
type Panel = { id: number; title: string; type: string; targets?: Target[]; panels?: Panel[] };
type Dashboard = { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; type: string; query: unknown }[] } };

/** Grafana variables → values PromQL accepts, so a query can be parsed offline. */
function concrete(expr: string): string {
  return expr.replaceAll(/\$__(rate_interval|interval|range)|\$\{__(rate_interval|interval|range)\}/g, "5m")
    .replaceAll(/\$\{(\w+)(:\w+)?\}|\$(\w+)/g, "x");
}

/** Every query of a dashboard (panel targets, and the selectors of `label_values(...)` variables) as PromQL. */
function dashboardQueries(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr !== undefined) out.push({ where: `${d.uid} panel ${p.id} "${p.title}" ${t.refId}`, expr: t.expr });
      if (p.panels) walk(p.panels);
    }
  };
  walk(d.panels);
  for (const v of d.templating.list) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : (v.query as { query: string }).query;
    const m = /^label_values\((.+),\s*\w+\)$/.exec(q);
    out.push({ where: `${d.uid} variable ${v.name}`, expr: m ? m[1]! : q });
  }
  return out;
}

/** A rule file holding each query as a recording rule, so `promtool check rules` parses them all. */
function queriesAsRules(queries: { where: string; expr: string }[]): Group[] {
  return [{ name: "dashboard-queries", rules: queries.map((q, i) => ({ record: `dashboard_query_${i}`, expr: concrete(q.expr) })) }];
}

describe("dashboards", () => {
  const files = readdirSync(join(chartDir, "dashboards")).filter((f) => f.endsWith(".json"));
  const dashboards = files.map((f) => JSON.parse(readFileSync(join(chartDir, "dashboards", f), "utf8")) as Dashboard);

  it("are an overview and one per GPU pool kind, each templated by its pool/model", () => {
    expect(files.sort()).toEqual(["gpu-comfyui.json", "gpu-vllm.json", "overview.json"]);
    expect(new Set(dashboards.map((d) => d.uid)).size).toBe(dashboards.length);
    const vars = (uid: string) => dashboards.find((d) => d.uid === uid)!.templating.list.map((v) => v.name);
    expect(vars("luna-gpu-vllm")).toEqual(expect.arrayContaining(["datasource", "namespace", "model"]));
    expect(vars("luna-gpu-comfyui")).toEqual(expect.arrayContaining(["datasource", "namespace", "pool"]));
    const overview = dashboardQueries(dashboards.find((d) => d.uid === "luna-overview")!).map((q) => q.expr).join("\n");
    for (const m of ["luna_rpc_requests_total", "luna_rpc_duration_seconds_bucket", "luna_chat_completion_tokens_total",
      "luna_chat_time_to_first_token_seconds_bucket", "luna_image_queue_depth", "luna_billing_credits_charged_total"]) {
      expect(overview).toContain(m);
    }
  });

  it("every query parses (promtool check rules on them as recording rules); a broken query fails", async () => {
    const queries = dashboards.flatMap(dashboardQueries);
    expect(queries.length).toBeGreaterThan(40);
    const ok = await promtool(["check", "rules", writeRules(work, "dash-ok.yaml", queriesAsRules(queries))]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const broken = queries.map((q, i) => (i === 3 ? { ...q, expr: q.expr.replace("[$__rate_interval]", "[$__rate_interval") } : q));
    const bad = await promtool(["check", "rules", writeRules(work, "dash-bad.yaml", queriesAsRules(broken))]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/dashboard_query_3|parse error/);
  });

  it("read only metrics that Luna or a named exporter exports", () => {
    expect(unknownMetrics(dashboards.flatMap(dashboardQueries).map((q) => concrete(q.expr)))).toEqual([]);
  });
});
