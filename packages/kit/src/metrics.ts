// prom-client RED metrics per RPC, plus default process metrics, in a registry the admin server exposes at /metrics.
// Services register their domain metrics (tokens/s, credits reserved, ...) in the same `registry`.
import type { Code, Interceptor } from "@connectrpc/connect";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { codeName, codeOf, interceptCall } from "./errors.js";

/** Default histogram buckets in seconds: sub-10 ms unary calls up to 10-minute streamed replies. */
export const DEFAULT_RPC_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** Options for {@link createMetrics}. */
export type MetricsOptions = {
  /** The Luna service ("billing"); every series gets it as the `luna_service` label. */
  service: string;
  /** Collect prom-client's default process metrics (CPU, memory, event loop lag, GC); default true. */
  defaultMetrics?: boolean;
  /** Buckets of `luna_rpc_duration_seconds`; default {@link DEFAULT_RPC_BUCKETS}. */
  buckets?: number[];
};

/** A service's metrics: its registry and the server interceptor that records RED metrics per RPC method. */
export type Metrics = {
  service: string;
  registry: Registry;
  interceptor: Interceptor;
  /**
   * Counts a call that ended before the interceptors ran (the server rejected its request body, see
   * malformed-body.ts), so `luna_rpc_requests_total` still shows it.
   */
  countRejected(service: string, method: string, code: Code): void;
};

/**
 * Creates a registry and an interceptor recording, per RPC (labels: `service` = proto service such as
 * "luna.chat.v1.ChatService", `method` = "SendMessage", `code` = "ok" / "not_found" / ...):
 * `luna_rpc_requests_total{service,method,code}`, `luna_rpc_duration_seconds{service,method}` and
 * `luna_rpc_in_flight{service,method}`. A stream counts once, when it ends, with its final code.
 */
export function createMetrics(opts: MetricsOptions): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ luna_service: opts.service });
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });

  const requests = new Counter({
    name: "luna_rpc_requests_total",
    help: "RPCs completed, by final status code (streams count when they end).",
    labelNames: ["service", "method", "code"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "luna_rpc_duration_seconds",
    help: "RPC duration from first byte handled to final status (whole stream for streaming RPCs).",
    labelNames: ["service", "method"] as const,
    buckets: opts.buckets ?? DEFAULT_RPC_BUCKETS,
    registers: [registry],
  });
  const inFlight = new Gauge({
    name: "luna_rpc_in_flight",
    help: "RPCs (including open streams) currently being served.",
    labelNames: ["service", "method"] as const,
    registers: [registry],
  });

  const interceptor: Interceptor = (next) => (req) => {
    const labels = { service: req.service.typeName, method: req.method.name };
    inFlight.inc(labels);
    const stopTimer = duration.startTimer(labels);
    return interceptCall(next, req, {
      end: (err) => {
        inFlight.dec(labels);
        stopTimer();
        requests.inc({ ...labels, code: err === undefined ? "ok" : codeName(codeOf(err)) });
      },
    });
  };
  const countRejected = (service: string, method: string, code: Code): void => {
    requests.inc({ service, method, code: codeName(code) });
  };
  return { service: opts.service, registry, interceptor, countRejected };
}
