// The dev gateway: the local stand-in for the cluster's Envoy in front of the split platform. One cleartext port takes
// Connect and gRPC-Web over HTTP/1.1 and gRPC (or anything else) over HTTP/2 with prior knowledge — each connection
// is sniffed for the HTTP/2 preface, as the kit's server does — routes by path (routes.ts) and forwards to the
// service over HTTP/2 cleartext, like Envoy's gRPC clusters. Bodies stream through in both directions without
// buffering (a server stream arrives delta by delta), trailers pass through, and `x-forwarded-for` gets the client's
// address appended. There is no overall timeout on a stream; only an idle timeout (no bytes either way) ends one.
// CORS preflights are forwarded to the service, whose server answers them.
import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { dualProtocolListener } from "@luna/kit";
import { DENIED_PREFIXES, PUBLIC_ROUTES, matchRoute, type GatewayRoute } from "./routes.js";

/** A request or response on either protocol (the compatibility API of node:http2 mirrors node:http). */
type Req = http.IncomingMessage | http2.Http2ServerRequest;
type Res = http.ServerResponse | http2.Http2ServerResponse;

export interface GatewayOptions {
  /** Where each service listens (`http://127.0.0.1:port`); a service without an entry answers 503. */
  upstream(service: string): string | undefined;
  routes?: readonly GatewayRoute[];
  denied?: readonly string[];
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** A stream with no bytes in either direction for this long is reset (Envoy's stream_idle_timeout); default 5 min. */
  idleTimeoutMs?: number;
  /** A new connection must send its first bytes within this time; default 10 s. */
  handshakeTimeoutMs?: number;
  /** close(): how long in-flight streams may run on before they are cut; default 10 s. */
  shutdownGraceMs?: number;
  log?: { warn(msg: string): void };
}

export interface Gateway {
  port: number;
  url: string;
  /** Requests being proxied right now. */
  inFlight(): number;
  /** Stops accepting, lets in-flight streams finish (up to the grace), then cuts what is left. Idempotent. */
  close(): Promise<void>;
}


// Connection-specific headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2): meaningful for one hop only, forbidden in HTTP/2.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host",
  "http2-settings", "expect", "trailer"]);

const { NGHTTP2_CANCEL } = http2.constants;

/** "::ffff:127.0.0.1" → "127.0.0.1": the form a client would write itself. */
function clientAddress(req: Req): string | undefined {
  const addr = req.socket?.remoteAddress;
  return addr?.startsWith("::ffff:") ? addr.slice(7) : addr;
}

/** The request headers for the service: hop-by-hop ones dropped, pseudo-headers rebuilt, forwarding headers added. */
export function upstreamRequestHeaders(req: { method?: string | undefined; url?: string | undefined; headers: http.IncomingHttpHeaders },
  client: string | undefined): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {
    ":method": req.method ?? "GET",
    ":path": req.url ?? "/",
    ":scheme": "http",
    ":authority": (req.headers[":authority"] as string | undefined) ?? req.headers.host ?? "localhost",
  };
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  // gRPC needs `te: trailers` (the only value HTTP/2 allows).
  if (req.headers.te === "trailers") out.te = "trailers";
  // Envoy (use_remote_address) appends the peer; every service trusts exactly one hop (LUNA_TRUSTED_PROXY_HOPS=1).
  const xff = req.headers["x-forwarded-for"];
  const prior = Array.isArray(xff) ? xff.join(", ") : xff;
  if (client) out["x-forwarded-for"] = prior ? `${prior}, ${client}` : client;
  out["x-forwarded-proto"] = "http";
  if (!req.headers["x-request-id"]) out["x-request-id"] = randomUUID();
  return out;
}

/** Response headers or trailers from the service, minus pseudo and hop-by-hop headers. */
function downstreamHeaders(headers: http2.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(":") || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}

function plain(res: Res, status: number, text: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
  res.end(`${text}\n`);
}

/** Starts the gateway; resolves once it listens. */
export async function startGateway(opts: GatewayOptions): Promise<Gateway> {
  const routes = opts.routes ?? PUBLIC_ROUTES;
  const denied = opts.denied ?? DENIED_PREFIXES;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 300_000;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const graceMs = opts.shutdownGraceMs ?? 10_000;
  const warn = (msg: string): void => opts.log?.warn(msg);

  // One HTTP/2 connection per service, shared by every request (as Envoy keeps its upstream connections).
  const upstreams = new Map<string, http2.ClientHttp2Session>();
  function session(base: string): http2.ClientHttp2Session {
    const existing = upstreams.get(base);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const s = http2.connect(base);
    // A failed connection fails its streams (each answers 503); the session's own error needs no more handling.
    s.on("error", () => {});
    const forget = (): void => {
      if (upstreams.get(base) === s) upstreams.delete(base);
    };
    s.once("close", forget);
    s.once("goaway", forget); // the service is shutting down: new requests get a new connection
    upstreams.set(base, s);
    return s;
  }

  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  let closing: Promise<void> | undefined;

  function handle(req: Req, res: Res): void {
    inFlight++;
    res.once("close", () => {
      if (--inFlight === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const wake of waiters) wake();
      }
    });
    if (closing) {
      res.writeHead(503, { "content-type": "text/plain", connection: "close" });
      res.end("gateway is shutting down\n");
      return;
    }
    const match = matchRoute(req.url ?? "/", routes, denied);
    if (match.kind === "none") {
      // Envoy answers an unrouted path with 404; Connect and gRPC clients read it as UNIMPLEMENTED.
      plain(res, 404, "not found");
      return;
    }
    const base = opts.upstream(match.service);
    if (!base) {
      plain(res, 503, `no healthy upstream (${match.service} is not running)`);
      return;
    }
    forward(req, res, base, match.service);
  }

  function forward(req: Req, res: Res, base: string, service: string): void {
    let up: http2.ClientHttp2Stream;
    try {
      up = session(base).request(upstreamRequestHeaders(req, clientAddress(req)));
    } catch (err) {
      warn(`${service}: ${(err as Error).message}`);
      plain(res, 503, `upstream connect error (${service})`);
      return;
    }
    let done = false;
    let trailers: http2.IncomingHttpHeaders | undefined;

    let idle: NodeJS.Timeout | undefined;
    const touch = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        if (done) return;
        done = true;
        up.close(NGHTTP2_CANCEL);
        // Envoy: 408 before the response started, a reset after.
        plain(res, 408, "stream idle timeout");
      }, idleTimeoutMs);
      idle.unref();
    };
    touch();
    const finish = (): void => {
      done = true;
      clearTimeout(idle);
    };

    // Client → service. pipe() keeps backpressure; the request's end ends the upstream stream's writable side.
    req.on("data", touch);
    req.pipe(up);
    req.on("error", () => up.close(NGHTTP2_CANCEL));

    up.on("response", (headers) => {
      touch();
      res.writeHead(Number(headers[":status"] ?? 502), downstreamHeaders(headers));
      // Headers go out now, not with the first body bytes: a stream's client learns at once that it is open.
      // (HTTP/2's writeHead sends them by itself.)
      if (res instanceof http.ServerResponse) res.flushHeaders();
    });
    up.on("trailers", (t) => (trailers = t));
    // Service → client, chunk by chunk as it arrives.
    up.on("data", (chunk: Buffer) => {
      touch();
      // A slow client: pause the service's stream until the client drains (backpressure end to end).
      if (!(res as http.ServerResponse).write(chunk)) up.pause();
    });
    res.on("drain", () => up.resume());
    up.on("end", () => {
      if (done) return;
      finish();
      if (!res.headersSent) {
        plain(res, 502, `upstream ended without a response (${service})`);
        return;
      }
      if (trailers) res.addTrailers(downstreamHeaders(trailers));
      res.end();
    });
    up.on("error", (err) => {
      if (done) return;
      finish();
      if (!res.headersSent) {
        warn(`${service}: ${err.message}`);
        plain(res, 503, `upstream connect error or disconnect/reset before headers (${service})`);
      } else {
        res.destroy(); // the stream broke mid-way: the client must see a broken stream, not a clean end
      }
    });
    up.on("close", () => {
      if (done) return;
      // Reset by the service without an error event (e.g. RST_STREAM with NO_ERROR before the end).
      finish();
      if (!res.headersSent) plain(res, 502, `upstream reset before headers (${service})`);
      else res.destroy();
    });
    // The client went away (cancelled the call, closed the tab): cancel the service's stream so it stops working.
    res.once("close", () => {
      if (!done) {
        finish();
        up.close(NGHTTP2_CANCEL);
      }
    });
  }

  const h2 = http2.createServer({}, handle);
  // requestTimeout 0: a client stream may take as long as it likes; the idle timeout guards against dead ones.
  const h1 = http.createServer({ requestTimeout: 0 }, handle);
  const { server: tcp, sockets, sessions } = dualProtocolListener({ h1, h2, handshakeTimeoutMs, isClosing: () => closing !== undefined });

  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => {
      tcp.off("error", reject);
      resolve();
    });
  });
  const port = (tcp.address() as AddressInfo).port;
  const host = opts.host && opts.host !== "0.0.0.0" && opts.host !== "::" ? opts.host : "localhost";

  function waitIdle(ms: number): Promise<void> {
    if (inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      timer.unref();
      idleWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  return {
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    inFlight: () => inFlight,
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => tcp.close(() => resolve()));
        for (const s of sessions) s.close(); // GOAWAY: running streams go on, no new ones
        h1.closeIdleConnections();
        await waitIdle(graceMs);
        for (const s of sessions) s.destroy();
        for (const socket of sockets) socket.destroy();
        h1.close();
        for (const s of upstreams.values()) s.destroy();
        upstreams.clear();
        await stopped;
      })();
      return closing;
    },
  };
}
