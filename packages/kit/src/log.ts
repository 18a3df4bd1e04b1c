// pino JSON logs. Inside an RPC every line (from any logger made by createLogger) carries request_id and the active
// OpenTelemetry span's trace_id/span_id, so one request can be followed across log lines, services and traces.
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";
import { context, isSpanContextValid, trace } from "@opentelemetry/api";
import { pino } from "pino";
import type { DestinationStream, Level, Logger as PinoLogger } from "pino";
import { codeName, codeOf, interceptCall, isServerFault } from "./errors.js";
import { ensureContextManager } from "./tracing.js";

export type Logger = PinoLogger;

type RequestScope = { requestId: string; logger: Logger };
const requestScope = new AsyncLocalStorage<RequestScope>();
let fallbackLogger: Logger | undefined;

/** Options for {@link createLogger}. */
export type LoggerOptions = {
  service: string;
  /** pino level name; default "info". */
  level?: string;
  /** Where lines go; default stdout. Tests pass a stream to capture lines. */
  destination?: DestinationStream;
};

/** A pino JSON logger whose lines carry `service`, and inside an RPC `request_id`, `trace_id` and `span_id`. */
export function createLogger(opts: LoggerOptions): Logger {
  ensureContextManager();
  const logger = pino(
    {
      level: opts.level ?? "info",
      base: { service: opts.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Level names ("info") read better in log search than pino's numbers.
      formatters: { level: (label) => ({ level: label }) },
      mixin: requestFields,
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
  fallbackLogger ??= logger;
  return logger;
}

function requestFields(): Record<string, string> {
  const fields: Record<string, string> = {};
  const scope = requestScope.getStore();
  if (scope) fields.request_id = scope.requestId;
  const spanContext = trace.getSpan(context.active())?.spanContext();
  if (spanContext && isSpanContextValid(spanContext)) {
    fields.trace_id = spanContext.traceId;
    fields.span_id = spanContext.spanId;
  }
  return fields;
}

/** The id of the RPC being served (from `x-request-id` or generated), or undefined outside an RPC. */
export function currentRequestId(): string | undefined {
  return requestScope.getStore()?.requestId;
}

/** The logger of the RPC being served, else the first logger created in this process (else a stdout default). */
export function currentLogger(): Logger {
  const scoped = requestScope.getStore()?.logger;
  if (scoped) return scoped;
  fallbackLogger ??= createLogger({ service: "luna" });
  return fallbackLogger;
}

// Accept a caller's request id only if it is short and printable, so it cannot forge or bloat log lines.
const REQUEST_ID_PATTERN = /^[\x21-\x7e]{1,128}$/;

/** Options for {@link requestLogInterceptor}. */
export type RequestLogOptions = {
  /** Level for calls that ended OK; default "info" (use "debug" on very chatty services). */
  okLevel?: Level;
};

/**
 * Gives each RPC a request id (the `x-request-id` header when valid, else a UUID, echoed back in the response
 * header) that every log line inside the call carries, and logs one line per call when it ends: `rpc`, `code`,
 * `duration_ms`. OK at `okLevel`, caller errors at warn, server faults at error. Streams are logged when they end.
 */
export function requestLogInterceptor(log: Logger, opts: RequestLogOptions = {}): Interceptor {
  const okLevel = opts.okLevel ?? "info";
  return (next) => async (req) => {
    const incoming = req.header.get("x-request-id");
    const requestId = incoming !== null && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
    const scope: RequestScope = { requestId, logger: log };
    const rpc = `${req.service.typeName}/${req.method.name}`;
    const started = performance.now();
    const res = await interceptCall(next, req, {
      run: (fn) => requestScope.run(scope, fn),
      end: (err) => requestScope.run(scope, () => {
        const fields = { rpc, protocol: req.header.get("content-type") ?? undefined,
          duration_ms: Math.round((performance.now() - started) * 10) / 10 };
        if (err === undefined) {
          log[okLevel]({ ...fields, code: "ok" }, "rpc done");
          return;
        }
        const code = codeOf(err);
        const message = err instanceof Error ? err.message : String(err);
        const level = isServerFault(code) ? "error" : "warn";
        log[level]({ ...fields, code: codeName(code), error: message }, "rpc failed");
      }),
    });
    res.header.set("x-request-id", requestId);
    return res;
  };
}
