// Helpers of charts/test/observability*.test.ts: which metric names Luna (and the simulators standing in for vLLM)
// really export, read from the source, and which names of other exporters the rules and dashboards may use.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { repoRoot } from "@luna/kube-check";

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === "node_modules" || e.name === "dist" || e.name === "generated") continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) sourceFiles(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) out.push(p);
  }
  return out;
}

/** `luna_*` metric names registered with prom-client in packages/ and services/ (`name: "luna_..."`). */
export function lunaMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const root of ["packages", "services"]) {
    for (const f of sourceFiles(join(repoRoot, root))) {
      for (const m of readFileSync(f, "utf8").matchAll(/name: "(luna_[a-z0-9_]+)"/g)) names.add(m[1]!);
    }
  }
  return names;
}

/** vLLM's metric names as the project's vLLM simulator exports them (counters get `_total` appended there). */
export function vllmMetricNames(): Set<string> {
  const src = readFileSync(join(repoRoot, "tools/sim-vllm/src/metrics.ts"), "utf8");
  return new Set([...src.matchAll(/"(vllm:[a-z0-9_]+)"/g)].map((m) => m[1]!));
}

/**
 * Metrics of other exporters, by exact name: kube-state-metrics (HPA and Deployment status), KEDA >= 2.14's operator,
 * cert-manager's controller, NVIDIA's dcgm-exporter.
 */
export const EXTERNAL_METRICS: ReadonlySet<string> = new Set([
  "kube_horizontalpodautoscaler_status_current_replicas", "kube_horizontalpodautoscaler_spec_max_replicas",
  "kube_deployment_spec_replicas", "kube_deployment_status_replicas_available",
  "keda_scaled_object_errors_total", "keda_scaler_metrics_value",
  "certmanager_certificate_expiration_timestamp_seconds", "certmanager_certificate_ready_status",
  "DCGM_FI_DEV_GPU_UTIL",
]);

const PROMQL_WORDS = new Set(["sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
  "rate", "increase", "irate", "histogram_quantile", "and", "or", "unless", "time", "label_values", "bool", "offset",
  "topk", "bottomk", "abs", "clamp_min", "clamp_max", "vector", "scalar", "absent", "delta", "deriv", "le", "inf", "nan"]);

/** Metric names a PromQL expression reads (identifiers directly followed by `{`, `[` or standing alone as a selector). */
export function metricNamesIn(expr: string): string[] {
  // Drop label matchers' contents and strings first, so label names and values are not mistaken for metrics.
  const bare = expr.replaceAll(/"(?:[^"\\]|\\.)*"/g, '""').replaceAll(/\{[^}]*\}/g, "{}").replaceAll(/\[[^\]]*\]/g, "[]")
    .replaceAll(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "$1()");
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*(\{|\[|\)|$|\s|[-+*/><=!]))/g)) {
    const w = m[1]!;
    if (PROMQL_WORDS.has(w) || /^[0-9]/.test(w)) continue;
    names.add(w);
  }
  return [...names];
}

/** The exported name a series name belongs to (histogram series → the histogram). */
export function baseMetricName(name: string): string {
  return name.replace(/_(bucket|count|sum)$/, "");
}

/** Names in `exprs` that no known exporter produces; empty = all real. */
export function unknownMetrics(exprs: readonly string[]): string[] {
  const luna = lunaMetricNames();
  const vllm = vllmMetricNames();
  const bad = new Set<string>();
  for (const e of exprs) {
    for (const n of metricNamesIn(e)) {
      const base = baseMetricName(n);
      const ok = EXTERNAL_METRICS.has(n)
        || (n.startsWith("luna_") && (luna.has(base) || luna.has(n)))
        || (n.startsWith("vllm:") && (vllm.has(base) || vllm.has(n) || vllm.has(n.replace(/_total$/, ""))));
      if (!ok) bad.add(n);
    }
  }
  return [...bad].sort();
}
