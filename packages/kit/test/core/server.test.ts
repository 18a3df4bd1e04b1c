// createServer on a real port: one socket serving gRPC (HTTP/2 cleartext), Connect and gRPC-Web (HTTP/1.1), CORS,
// plain HTTP routes, and graceful shutdown.
import http from "node:http";
import net from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus as Status,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "@luna/contracts/grpc/health/v1/health_pb.js";
import { afterEach, describe, expect, it } from "vitest";
import { createHealth } from "../../src/health.js";
import { grpcHealthClient, sleep, startTestServer, until } from "./helpers.js";
import type { TestServer } from "./helpers.js";

let current: TestServer | undefined;
afterEach(async () => {
  await current?.server.close();
  current = undefined;
});

async function start(opts: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
  current = await startTestServer(opts);
  return current;
}

function healthRoutes() {
  const health = createHealth({ services: ["luna.test.v1.TestService"] });
  return { health, routes: (router: ConnectRouter) => health.routes(router) };
}

/** gRPC-Web frame: 1 flag byte (0 = data, 0x80 = trailers), 4-byte big-endian length, payload. */
function grpcWebFrame(payload: Uint8Array, flag = 0): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flag, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

function parseGrpcWebFrames(body: Buffer): { data: Buffer[]; trailer: string } {
  const data: Buffer[] = [];
  let trailer = "";
  for (let off = 0; off < body.length;) {
    const flag = body.readUInt8(off);
    const len = body.readUInt32BE(off + 1);
    const payload = body.subarray(off + 5, off + 5 + len);
    if (flag & 0x80) trailer += payload.toString("utf8");
    else data.push(payload);
    off += 5 + len;
  }
  return { data, trailer };
}

describe("one port, every protocol", () => {
  it("serves gRPC over HTTP/2 cleartext to an independent gRPC client (@grpc/grpc-js)", async () => {
    const { routes } = healthRoutes();
    const { port } = await start({ routes });
    const client = grpcHealthClient(port);
    try {
      expect((await client.check("luna.test.v1.TestService")).status).toBe(Status.SERVING);
      await expect(client.check("unknown")).rejects.toMatchObject({ code: GrpcStatus.NOT_FOUND });
    } finally {
      client.close();
    }
  });

  it("serves Connect JSON over HTTP/1.1 to plain fetch", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({ routes });
    const res = await fetch(`${baseUrl}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: JSON.stringify({ service: "" }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "SERVING" });
    const missing = await fetch(`${baseUrl}/grpc.health.v1.Health/Check`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ service: "nope" }),
    });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ code: "not_found" });
  });

  it("serves gRPC-Web over HTTP/1.1 (hand-built frames through fetch, and connect-node's client)", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({ routes });
    const res = await fetch(`${baseUrl}/grpc.health.v1.Health/Check`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: grpcWebFrame(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service: "" }))),
    });
    expect(res.status).toBe(200);
    const { data, trailer } = parseGrpcWebFrames(Buffer.from(await res.arrayBuffer()));
    expect(fromBinary(HealthCheckResponseSchema, data[0]!).status).toBe(Status.SERVING);
    expect(trailer).toMatch(/grpc-status: ?0/);

    const client = createClient(Health, createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }));
    const seen: Status[] = [];
    const abort = new AbortController();
    await (async () => {
      for await (const m of client.watch({ service: "" }, { signal: abort.signal })) {
        seen.push(m.status);
        abort.abort();
      }
    })().catch(() => undefined);
    expect(seen).toEqual([Status.SERVING]);
  });

  it("serves Connect over HTTP/2 too", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({ routes });
    const client = createClient(Health, createConnectTransport({ baseUrl, httpVersion: "2" }));
    expect((await client.check({ service: "" })).status).toBe(Status.SERVING);
  });

  it("rejects oversized requests before handling them", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({ routes, readMaxBytes: 1024 });
    const client = createClient(Health, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
    await expect(client.check({ service: "x".repeat(4096) })).rejects.toMatchObject({ code: Code.ResourceExhausted });
  });

  it("never leaks an unexpected error's message over the wire", async () => {
    const { port, lines } = await start({
      routes: (router) => router.service(Health, {
        check() {
          throw new Error("password=hunter2");
        },
        list: () => create(HealthListResponseSchema, {}),
        async *watch() { /* empty */ },
      }),
    });
    const client = grpcHealthClient(port);
    try {
      const err = await client.check("").catch((e: { code: number; details: string }) => e);
      expect(err).toMatchObject({ code: GrpcStatus.INTERNAL });
      expect((err as { details: string }).details).toMatch(/^internal error \(request id [0-9a-f-]+\)$/);
      expect(lines.some((l) => JSON.stringify(l).includes("hunter2"))).toBe(true);
    } finally {
      client.close();
    }
  });
});

describe("CORS and plain HTTP routes", () => {
  const preflight = (baseUrl: string, origin: string) => fetch(`${baseUrl}/grpc.health.v1.Health/Check`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type,connect-protocol-version,authorization" },
  });

  it("answers a preflight from an allowed origin with the Connect and gRPC-Web headers", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({ routes, cors: { allowedOrigins: ["https://app.luna.test"] } });
    const res = await preflight(baseUrl, "https://app.luna.test");
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.luna.test");
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
    expect(res.headers.get("access-control-max-age")).toBe("7200");
    const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase().split(/, */);
    for (const h of ["content-type", "connect-protocol-version", "connect-timeout-ms", "grpc-timeout", "x-grpc-web", "x-user-agent", "authorization"]) {
      expect(allowed).toContain(h);
    }
    expect(res.headers.get("vary")).toBe("Origin");

    const actual = await fetch(`${baseUrl}/grpc.health.v1.Health/Check`, {
      method: "POST", headers: { origin: "https://app.luna.test", "content-type": "application/json" }, body: "{}",
    });
    expect(actual.status).toBe(200);
    expect(actual.headers.get("access-control-allow-origin")).toBe("https://app.luna.test");
    const exposed = actual.headers.get("access-control-expose-headers")!.toLowerCase();
    for (const h of ["grpc-status", "grpc-message", "grpc-status-details-bin"]) expect(exposed).toContain(h);
  });

  it("refuses other origins and allows any with *", async () => {
    const { routes } = healthRoutes();
    const strict = await start({ routes, cors: { allowedOrigins: ["https://app.luna.test"] } });
    expect((await preflight(strict.baseUrl, "https://evil.test")).status).toBe(403);
    const actual = await fetch(`${strict.baseUrl}/grpc.health.v1.Health/Check`, {
      method: "POST", headers: { origin: "https://evil.test", "content-type": "application/json" }, body: "{}",
    });
    expect(actual.headers.get("access-control-allow-origin")).toBeNull();
    await strict.server.close();

    const open = await start({ routes, cors: { allowedOrigins: ["*"] } });
    const res = await preflight(open.baseUrl, "http://localhost:5173");
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
  });

  it("routes non-RPC paths to extraHttp and answers 404 when it declines", async () => {
    const { routes } = healthRoutes();
    const { baseUrl } = await start({
      routes,
      extraHttp(req, res) {
        if (req.url === "/.well-known/jwks.json") {
          res.writeHead(200, { "content-type": "application/json" });
          res.end('{"keys":[]}');
          return true;
        }
        if (req.url === "/broken") throw new Error("bug in a plain route");
        return false;
      },
    });
    const jwks = await fetch(`${baseUrl}/.well-known/jwks.json`);
    expect(jwks.status).toBe(200);
    expect(await jwks.json()).toEqual({ keys: [] });
    expect((await fetch(`${baseUrl}/nothing-here`)).status).toBe(404);
    expect((await fetch(`${baseUrl}/broken`)).status).toBe(500);
    // RPC paths still win over extraHttp
    expect((await fetch(`${baseUrl}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).status).toBe(200);
  });
});

describe("graceful shutdown", () => {
  /** Watch yields SERVING, waits `holdMs` (or, with honourSignal, until cancelled), then yields NOT_SERVING. */
  function slowStream(holdMs: number, honourSignal: boolean) {
    return (router: ConnectRouter) => router.service(Health, {
      check: () => create(HealthCheckResponseSchema, { status: Status.SERVING }),
      list: () => create(HealthListResponseSchema, {}),
      async *watch(_req, ctx) {
        yield create(HealthCheckResponseSchema, { status: Status.SERVING });
        await new Promise<void>((resolve, reject) => {
          setTimeout(resolve, holdMs);
          if (honourSignal) ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        });
        yield create(HealthCheckResponseSchema, { status: Status.NOT_SERVING });
      },
    });
  }

  it("lets an in-flight stream finish within the grace period and refuses new connections", async () => {
    const { server, port } = await start({ routes: slowStream(300, true), shutdownGraceMs: 5000 });
    const client = grpcHealthClient(port);
    const watch = client.watch("");
    await until(() => watch.messages.length === 1);
    const closed = server.close();
    await sleep(50);
    // the listening socket is closed at once
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => { socket.destroy(); resolve(false); });
      socket.once("error", () => resolve(true));
    });
    expect(refused).toBe(true);
    expect(server.inFlight()).toBe(1);
    const status = await watch.done;
    expect(status.code).toBe(GrpcStatus.OK);
    expect(watch.messages.map((m) => m.status)).toEqual([Status.SERVING, Status.NOT_SERVING]);
    await closed;
    expect(server.inFlight()).toBe(0);
    client.close();
  });

  it("cancels a stream that outlives the grace period with UNAVAILABLE", async () => {
    const { server, port, lines } = await start({ routes: slowStream(60_000, true), shutdownGraceMs: 200, shutdownAbortMs: 2000 });
    const client = grpcHealthClient(port);
    const watch = client.watch("");
    await until(() => watch.messages.length === 1);
    const started = Date.now();
    await server.close();
    const status = await watch.done;
    expect(status.code).toBe(GrpcStatus.UNAVAILABLE);
    expect(status.details).toBe("server is shutting down");
    expect(Date.now() - started).toBeLessThan(2000);
    expect(lines.some((l) => l.msg === "shutdown grace period over, cancelling in-flight calls")).toBe(true);
    client.close();
  });

  it("destroys the connection of a handler that ignores cancellation", async () => {
    const { server, port } = await start({ routes: slowStream(60_000, false), shutdownGraceMs: 100, shutdownAbortMs: 100 });
    const client = grpcHealthClient(port);
    const watch = client.watch("");
    await until(() => watch.messages.length === 1);
    const started = Date.now();
    await server.close();
    expect(Date.now() - started).toBeLessThan(1500);
    const status = await watch.done;
    expect(status.code).not.toBe(GrpcStatus.OK);
    expect(watch.messages).toHaveLength(1);
    client.close();
  });

  it("closes idle HTTP/1.1 keep-alive connections and resolves at once when nothing is in flight", async () => {
    const { routes } = healthRoutes();
    const { server, port } = await start({ routes });
    const agent = new http.Agent({ keepAlive: true });
    const socketClosed = new Promise<void>((resolve) => {
      const req = http.request({ host: "127.0.0.1", port, path: "/nothing", agent }, (res) => {
        res.resume();
        res.on("end", () => req.socket?.once("close", () => resolve()));
      });
      req.end();
    });
    await sleep(50);
    const started = Date.now();
    await server.close();
    await socketClosed;
    expect(Date.now() - started).toBeLessThan(1000);
    agent.destroy();
  });

  it("close() is idempotent", async () => {
    const { routes } = healthRoutes();
    const { server } = await start({ routes });
    await Promise.all([server.close(), server.close()]);
    await server.close();
  });
});
