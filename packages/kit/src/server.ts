// The API server of a service: one cleartext port that serves gRPC, gRPC-Web and Connect, over HTTP/2 (prior
// knowledge, as Envoy and other services speak it) and HTTP/1.1 (browsers, curl) on the same socket, plus CORS and a
// hook for plain HTTP routes. Node 20's http2.createServer ignores `allowHTTP1` on cleartext sockets, so each new
// connection is sniffed: the HTTP/2 connection preface goes to an http2 server, anything else to an http server.
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, cors as connectCors } from "@connectrpc/connect";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createContextKey, createContextValues } from "@connectrpc/connect";
import { setMaxListeners } from "node:events";
import { clientAddressKey, clientAddressResolver, DEFAULT_TRUSTED_PROXIES, type TrustedProxies } from "./client-address.js";
import { dualProtocolListener } from "./dual-protocol.js";
import { codeName, errorInterceptor } from "./errors.js";
import { strictJsonEnums } from "./json-enums.js";
import { mapMalformedBodies } from "./malformed-body.js";
import type { Metrics } from "./metrics.js";
import type { Logger, RequestLogOptions } from "./log.js";
import { requestLogInterceptor } from "./log.js";
import { tracingInterceptor } from "./tracing.js";

type NodeHandler = ReturnType<typeof connectNodeAdapter>;
/** A request on the API port: HTTP/1.1 (`http.IncomingMessage`) or HTTP/2 (`http2.Http2ServerRequest`). */
export type NodeServerRequest = Parameters<NodeHandler>[0];
/** The matching response (`http.ServerResponse` or `http2.Http2ServerResponse`). */
export type NodeServerResponse = Parameters<NodeHandler>[1];

/** CORS for browser clients (Connect and gRPC-Web). */
export type CorsOptions = {
  /** Exact origins ("https://app.example.com"); "*" allows any origin (development only). */
  allowedOrigins: string[];
  /** How long browsers may cache a preflight; default 7200 s. */
  maxAgeSeconds?: number;
};

/** Options for {@link createServer}. */
export type ServerOptions = {
  /** Registers the Connect services. */
  routes: (router: ConnectRouter) => void;
  /**
   * Interceptors after the built-in ones (tracing → request log → error mapping), outermost first. Typical:
   * `[metrics.interceptor, authInterceptor(...)]`, so rejected calls are counted too.
   */
  interceptors?: Interceptor[];
  cors?: CorsOptions;
  /**
   * Plain HTTP routes on the same port (JWKS, signed downloads, a static web page), tried when no RPC path matches.
   * Return true when the request was handled; otherwise the server answers 404.
   */
  extraHttp?: (req: NodeServerRequest, res: NodeServerResponse) => boolean;
  log: Logger;
  requestLog?: RequestLogOptions;
  /** close(): how long in-flight calls (streams included) may run on before they are cancelled; default 10 000 ms. */
  shutdownGraceMs?: number;
  /** close(): after the grace, cancelled handlers get this long to end before connections are destroyed; default 1000 ms. */
  shutdownAbortMs?: number;
  /** A new connection must send its first bytes within this time; default 10 000 ms. */
  handshakeTimeoutMs?: number;
  /** Largest accepted request message; default 4 MiB (as gRPC), bigger ones fail with RESOURCE_EXHAUSTED. */
  readMaxBytes?: number;
  /**
   * Counts calls rejected before the interceptors run (malformed binary or JSON bodies, bad timeout headers) in
   * `luna_rpc_requests_total`; pass the same metrics whose interceptor is in `interceptors`.
   */
  metrics?: Pick<Metrics, "countRejected">;
  /**
   * Proxies trusted to append the client to `x-forwarded-for`; the resolved address is `clientAddressKey` in every
   * call's context values. Default {@link DEFAULT_TRUSTED_PROXIES} (one hop: the gateway).
   */
  trustedProxies?: TrustedProxies;
};

/**
 * The TCP peer address of the call (`ctx.values.get(peerAddressKey)`): the gateway's or a direct client's address.
 * Behind a proxy the client's own address is `clientAddressKey` (resolved from `x-forwarded-for` by the server).
 */
export const peerAddressKey = createContextKey<string | undefined>(undefined, { description: "luna peer address" });

/**
 * Set once a call gets to the interceptors (which then count it in the RPC metrics); a call that ends before, because
 * its request could not be read, is counted by the handler wrapper instead (malformed-body.ts).
 */
const reachedKey = createContextKey<{ value: boolean } | undefined>(undefined, { description: "luna call reached interceptors" });
const markReached: Interceptor = (next) => (req) => {
  const reached = req.contextValues.get(reachedKey);
  if (reached) reached.value = true;
  return next(req);
};

/** A created (not yet listening) API server. */
export type LunaServer = {
  /** Starts listening; port 0 picks a free port. Host defaults to all interfaces. */
  listen(port: number, host?: string): Promise<{ port: number }>;
  /**
   * Graceful stop: stops accepting connections and new calls (HTTP/2 GOAWAY; HTTP/1.1 gets 503), lets in-flight
   * calls finish for up to `shutdownGraceMs`, then cancels them (handlers see `ctx.signal` abort with UNAVAILABLE)
   * and destroys the remaining connections. Idempotent.
   */
  close(): Promise<void>;
  /** Calls being served right now (each HTTP request or HTTP/2 stream). */
  inFlight(): number;
};


function corsHandler(opts: CorsOptions): (req: NodeServerRequest, res: NodeServerResponse) => boolean {
  const anyOrigin = opts.allowedOrigins.includes("*");
  const origins = new Set(opts.allowedOrigins);
  const allowHeaders = [...new Set([...connectCors.allowedHeaders, "Authorization", "X-Request-Id"])].join(", ");
  const exposeHeaders = [...new Set([...connectCors.exposedHeaders, "X-Request-Id"])].join(", ");
  const allowMethods = connectCors.allowedMethods.join(", ");
  const maxAge = String(opts.maxAgeSeconds ?? 7200);
  /** Returns true when it answered the request (a preflight). */
  return (req, res) => {
    const origin = req.headers.origin;
    if (typeof origin !== "string") return false;
    const allowed = anyOrigin || origins.has(origin);
    if (!anyOrigin) res.setHeader("vary", "Origin");
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      if (!allowed) {
        res.writeHead(403, { "content-type": "text/plain" });
        res.end("origin not allowed\n");
        return true;
      }
      res.writeHead(204, {
        "access-control-allow-origin": anyOrigin ? "*" : origin,
        "access-control-allow-methods": allowMethods,
        "access-control-allow-headers": allowHeaders,
        "access-control-max-age": maxAge,
      });
      res.end();
      return true;
    }
    if (allowed) {
      res.setHeader("access-control-allow-origin", anyOrigin ? "*" : origin);
      res.setHeader("access-control-expose-headers", exposeHeaders);
    }
    return false;
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Creates the API server (see {@link ServerOptions}); call `listen` to start it. */
export function createServer(opts: ServerOptions): LunaServer {
  const log = opts.log;
  const graceMs = opts.shutdownGraceMs ?? 10_000;
  const abortMs = opts.shutdownAbortMs ?? 1000;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const shutdown = new AbortController();
  // Every in-flight call listens on the shutdown signal; the default limit of 10 listeners would warn at 11 calls.
  setMaxListeners(0, shutdown.signal);
  const cors = opts.cors ? corsHandler(opts.cors) : undefined;
  const clientAddress = clientAddressResolver(opts.trustedProxies ?? DEFAULT_TRUSTED_PROXIES);

  const connect = connectNodeAdapter({
    routes(router) {
      opts.routes(strictJsonEnums(router));
      // The adapter reads router.handlers after this returns: wrap each one (see malformed-body.ts).
      router.handlers.forEach((h, i) => {
        router.handlers[i] = mapMalformedBodies(h, (req) => req.contextValues?.get(reachedKey)?.value === true, (handler, code) => {
          const labels = { service: handler.service.typeName, method: handler.method.name };
          log.info({ rpc: labels, code: codeName(code) }, "rpc rejected before it reached the handler (request unreadable)");
          opts.metrics?.countRejected(labels.service, labels.method, code);
        });
      });
    },
    interceptors: [markReached, tracingInterceptor(), requestLogInterceptor(log, opts.requestLog), errorInterceptor(log),
      ...(opts.interceptors ?? [])],
    shutdownSignal: shutdown.signal,
    contextValues: (req) => createContextValues().set(peerAddressKey, req.socket?.remoteAddress).set(reachedKey, { value: false })
      .set(clientAddressKey, clientAddress(req.socket?.remoteAddress, req.headers["x-forwarded-for"])),
    readMaxBytes: opts.readMaxBytes ?? 4 * 1024 * 1024,
    fallback(req, res) {
      try {
        if (opts.extraHttp?.(req, res)) return;
      } catch (err) {
        log.error({ err, path: req.url }, "extraHttp handler failed");
        if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
        res.end("internal error\n");
        return;
      }
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found\n");
    },
  });

  let closing: Promise<void> | undefined;
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];

  function handle(req: NodeServerRequest, res: NodeServerResponse): void {
    inFlight++;
    res.once("close", () => {
      inFlight--;
      if (inFlight === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const wake of waiters) wake();
      }
    });
    if (closing) {
      // Only reachable over HTTP/1.1 keep-alive (HTTP/2 clients got GOAWAY): send the client elsewhere.
      res.writeHead(503, { "content-type": "text/plain", connection: "close" });
      res.end("server is shutting down\n");
      return;
    }
    if (cors?.(req, res)) return;
    connect(req, res);
  }

  const h2 = http2.createServer({}, handle);
  const h1 = http.createServer(handle);
  const { server: tcp, sockets, sessions } = dualProtocolListener({ h1, h2, handshakeTimeoutMs, isClosing: () => closing !== undefined,
    onSessionError: (err) => log.debug({ err }, "http2 session error") });

  function waitIdle(ms: number): Promise<boolean> {
    if (inFlight === 0) return Promise.resolve(true);
    return Promise.race([
      new Promise<boolean>((resolve) => idleWaiters.push(() => resolve(true))),
      sleep(ms).then(() => inFlight === 0),
    ]);
  }

  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(port, host, () => {
          tcp.off("error", reject);
          resolve({ port: (tcp.address() as AddressInfo).port });
        });
      });
    },
    inFlight: () => inFlight,
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => tcp.close(() => resolve()));
        for (const session of sessions) session.close(); // GOAWAY: no new streams, running ones continue
        h1.closeIdleConnections();
        if (!(await waitIdle(graceMs))) {
          log.warn({ in_flight: inFlight, grace_ms: graceMs }, "shutdown grace period over, cancelling in-flight calls");
          shutdown.abort(new ConnectError("server is shutting down", Code.Unavailable));
          await waitIdle(abortMs);
        }
        for (const session of sessions) session.destroy();
        for (const socket of sockets) socket.destroy();
        h1.close();
        await stopped;
      })();
      return closing;
    },
  };
}

/** Waits (at most 1 s) until buffered log lines are written, so the last lines before exit are not lost. */
function flushLog(log: Logger): Promise<void> {
  return Promise.race([new Promise<void>((resolve) => log.flush(() => resolve())), sleep(1000)]);
}

/** A shutdown step: a named async function. Plain functions are named after `fn.name`. */
/** `timeoutMs` overrides the run's step timeout for a step that drains work on purpose (e.g. a running job). */
export type ShutdownStep = { name: string; run: () => Promise<void> | void; timeoutMs?: number };

const registeredSteps: ShutdownStep[] = [];

/** Registers a step that {@link runUntilSignal} runs after its own `shutdown` steps (e.g. from a library). */
export function onShutdown(fn: () => Promise<void> | void, name = fn.name || "onShutdown hook"): void {
  registeredSteps.push({ name, run: fn });
}

/** Options for {@link runUntilSignal}. */
export type RunUntilSignalOptions = {
  /** Run in order, once: typically stop readiness, close the server, stop workers, drain NATS, close Prisma and
   * Redis, flush telemetry. A failing or hanging step is logged and the next one runs. */
  shutdown: Array<ShutdownStep | (() => Promise<void> | void)>;
  log: Logger;
  /** Default ["SIGTERM", "SIGINT"]. */
  signals?: NodeJS.Signals[];
  /** A step still running after this long is abandoned; default 15 000 ms. */
  stepTimeoutMs?: number;
  /** Default process.exit; tests inject their own. */
  exit?: (code: number) => void;
};

/**
 * On the first SIGTERM/SIGINT runs the shutdown steps in order, then exits (0, or 1 if a step failed); a second
 * signal exits at once with 1. `shutdown(reason)` starts the same sequence from code (e.g. after a fatal error).
 */
export function runUntilSignal(opts: RunUntilSignalOptions): { shutdown(reason: string): Promise<void> } {
  const signals = opts.signals ?? ["SIGTERM", "SIGINT"];
  const stepTimeoutMs = opts.stepTimeoutMs ?? 15_000;
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const log = opts.log;
  let running: Promise<void> | undefined;

  async function runSteps(reason: string): Promise<void> {
    log.info({ reason }, "shutting down");
    const steps = [...opts.shutdown, ...registeredSteps].map((s, i): ShutdownStep =>
      typeof s === "function" ? { name: s.name || `step ${i + 1}`, run: s } : s);
    let failed = false;
    for (const step of steps) {
      const started = performance.now();
      const timeoutMs = step.timeoutMs ?? stepTimeoutMs;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(() => step.run()),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
          }),
        ]);
        log.info({ step: step.name, duration_ms: Math.round(performance.now() - started) }, "shutdown step done");
      } catch (err) {
        failed = true;
        log.error({ err, step: step.name }, "shutdown step failed");
      } finally {
        clearTimeout(timer);
      }
    }
    for (const signal of signals) process.off(signal, onSignal);
    log.info({ ok: !failed }, "shutdown complete");
    await flushLog(log);
    exit(failed ? 1 : 0);
  }

  function onSignal(signal: NodeJS.Signals): void {
    if (running) {
      log.warn({ signal }, "second signal during shutdown, exiting now");
      log.flush();
      exit(1);
      return;
    }
    running = runSteps(signal);
  }
  for (const signal of signals) process.on(signal, onSignal);

  return {
    shutdown(reason) {
      running ??= runSteps(reason);
      return running;
    },
  };
}
