/**
 * The Prometheus metrics a vLLM server exports, written in the text exposition format by hand (no registry: the
 * set is fixed, and observing is on the per-token hot path, so it is a bucket increment and nothing else).
 * Names, types and bucket boundaries follow vLLM's `vllm/v1/metrics/loggers.py`.
 */

export const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
  640.0, 2560.0,
];
export const ITL_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
export const REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
  1920.0, 7680.0,
];

/** A Prometheus histogram with fixed upper bounds (seconds). */
export class Histogram {
  /** counts[i] = observations in (bounds[i-1], bounds[i]]; the last slot is +Inf. Not cumulative. */
  private readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }

  /** Cumulative counts per bound, then +Inf. */
  cumulative(): number[] {
    const out: number[] = [];
    let acc = 0;
    for (const c of this.counts) out.push((acc += c));
    return out;
  }
}

/** Per-model metric state; gauges are read from the scheduler at scrape time. */
export class ModelMetrics {
  promptTokens = 0;
  generationTokens = 0;
  prefixCacheQueries = 0;
  prefixCacheHits = 0;
  /** Finished requests by finish reason ("stop", "length", "abort", "error"). */
  readonly finished = new Map<string, number>();
  readonly ttft = new Histogram(TTFT_BUCKETS);
  readonly itl = new Histogram(ITL_BUCKETS);
  readonly e2e = new Histogram(REQUEST_LATENCY_BUCKETS);
  readonly queueTime = new Histogram(REQUEST_LATENCY_BUCKETS);

  countFinished(reason: string): void {
    this.finished.set(reason, (this.finished.get(reason) ?? 0) + 1);
  }

  reset(): void {
    this.promptTokens = this.generationTokens = this.prefixCacheQueries = this.prefixCacheHits = 0;
    this.finished.clear();
    for (const h of [this.ttft, this.itl, this.e2e, this.queueTime]) h.reset();
  }
}

/** The gauges and counters of one served model at scrape time. */
export interface ModelSnapshot {
  model: string;
  running: number;
  waiting: number;
  kvCacheUsage: number;
  metrics: ModelMetrics;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** Python's prometheus_client writes floats ("3.0"); scrapers accept either, we match it for familiarity. */
function num(v: number): string {
  return Number.isInteger(v) ? `${v}.0` : String(v);
}

/** Renders all metrics of all models in Prometheus text format 0.0.4. */
export function renderMetrics(models: readonly ModelSnapshot[]): string {
  const lines: string[] = [];
  const labels = models.map((m) => `model_name="${escapeLabel(m.model)}",engine="0"`);

  const gauge = (name: string, help: string, value: (m: ModelSnapshot) => number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    models.forEach((m, i) => lines.push(`${name}{${labels[i]}} ${num(value(m))}`));
  };
  const counter = (name: string, help: string, value: (m: ModelSnapshot) => number) => {
    lines.push(`# HELP ${name}_total ${help}`, `# TYPE ${name}_total counter`);
    models.forEach((m, i) => lines.push(`${name}_total{${labels[i]}} ${num(value(m))}`));
  };
  const histogram = (name: string, help: string, h: (m: ModelSnapshot) => Histogram) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    models.forEach((m, i) => {
      const hist = h(m);
      const cum = hist.cumulative();
      hist.bounds.forEach((b, j) => lines.push(`${name}_bucket{${labels[i]},le="${num(b)}"} ${num(cum[j]!)}`));
      lines.push(`${name}_bucket{${labels[i]},le="+Inf"} ${num(cum[cum.length - 1]!)}`);
      lines.push(`${name}_count{${labels[i]}} ${num(hist.count)}`);
      lines.push(`${name}_sum{${labels[i]}} ${num(hist.sum)}`);
    });
  };

  gauge("vllm:num_requests_running", "Number of requests in model execution batches.", (m) => m.running);
  gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", (m) => m.waiting);
  gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", (m) => m.kvCacheUsage);
  counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
    (m) => m.metrics.prefixCacheQueries);
  counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
    (m) => m.metrics.prefixCacheHits);
  counter("vllm:prompt_tokens", "Number of prefill tokens processed.", (m) => m.metrics.promptTokens);
  counter("vllm:generation_tokens", "Number of generation tokens processed.", (m) => m.metrics.generationTokens);

  lines.push("# HELP vllm:request_success_total Count of successfully processed requests.",
    "# TYPE vllm:request_success_total counter");
  models.forEach((m, i) => {
    for (const reason of ["stop", "length", "abort", "error"]) {
      lines.push(`vllm:request_success_total{${labels[i]},finished_reason="${reason}"} ${
        num(m.metrics.finished.get(reason) ?? 0)}`);
    }
  });

  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", (m) => m.metrics.ttft);
  histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", (m) => m.metrics.itl);
  histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", (m) => m.metrics.e2e);
  histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
    (m) => m.metrics.queueTime);
  return lines.join("\n") + "\n";
}
