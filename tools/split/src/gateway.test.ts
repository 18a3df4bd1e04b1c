// The dev gateway against a real kit server (the same server every service runs) with a fake ChatService and an
// internal CreditsService: protocols, streaming without buffering, forwarding headers, cancellation, refusals.
import http2 from "node:http2";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { createLogger, createServer, type LunaServer } from "@luna/kit";
import { freePort } from "@luna/kit/localstack";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type Gateway } from "./gateway.js";

/** A promise with its resolve function: lets a test hold the fake service at a chosen point. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

const state = {
  /** Opened by the test to let SendMessage send its second delta. */
  secondDelta: gate(),
  /** Resolved by the service when a SendMessage call sees its signal abort (the client went away). */
  cancelled: gate(),
  lastForwardedFor: "",
};

let upstream: LunaServer;
let upstreamUrl: string;
let gateway: Gateway;

beforeAll(async () => {
  upstream = createServer({
    log: createLogger({ service: "gateway-test", level: "silent" }),
    cors: { allowedOrigins: ["*"] },
    routes(router) {
      router.service(ChatService, {
        createConversation(req, ctx) {
          state.lastForwardedFor = ctx.requestHeader.get("x-forwarded-for") ?? "";
          if (req.modelId === "missing") throw new ConnectError("model missing is not in the catalog", Code.NotFound);
          return { conversation: { id: "c1", modelId: req.modelId, title: ctx.requestHeader.get("x-request-id") ?? "" } };
        },
        async *sendMessage(req, ctx) {
          yield { event: { event: { case: "started", value: { assistantMessageId: "m1", modelId: "sim" } } } };
          yield { event: { event: { case: "delta", value: { text: "Hello", offset: 5n } } } };
          if (req.text === "hang") {
            await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
            state.cancelled.open();
            return;
          }
          await state.secondDelta.promise;
          yield { event: { event: { case: "delta", value: { text: " world", offset: 11n } } } };
          yield { event: { event: { case: "finished", value: { completionTokens: 2n } } } };
        },
      });
      router.service(CreditsService, {
        reserve() {
          return { holdId: "h1" };
        },
      });
    },
    extraHttp(req, res) {
      if (!req.url?.startsWith("/images/")) return false;
      res.writeHead(200, { "content-type": "image/png", "content-length": "4" });
      if (req.method === "HEAD") res.end();
      else res.end(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
      return true;
    },
  });
  const { port } = await upstream.listen(0, "127.0.0.1");
  upstreamUrl = `http://127.0.0.1:${port}`;
  gateway = await startGateway({
    upstream: (service) => (service === "chat-router" || service === "image-job" || service === "billing" ? upstreamUrl : undefined),
    idleTimeoutMs: 60_000,
    shutdownGraceMs: 1000,
  });
});

afterAll(async () => {
  await gateway?.close();
  await upstream?.close();
});

const transports: Array<[string, () => Transport]> = [
  ["Connect JSON over HTTP/1.1", () => createConnectTransport({ baseUrl: gateway.url, httpVersion: "1.1" })],
  ["Connect binary over HTTP/1.1", () => createConnectTransport({ baseUrl: gateway.url, httpVersion: "1.1", useBinaryFormat: true })],
  ["Connect over HTTP/2", () => createConnectTransport({ baseUrl: gateway.url, httpVersion: "2" })],
  ["gRPC over HTTP/2", () => createGrpcTransport({ baseUrl: gateway.url })],
  ["gRPC-Web over HTTP/1.1", () => createGrpcWebTransport({ baseUrl: gateway.url, httpVersion: "1.1" })],
];

describe.each(transports)("dev gateway: %s", (_name, transport) => {
  it("proxies a unary call, appending the client's address to x-forwarded-for", async () => {
    const chat = createClient(ChatService, transport());
    const res = await chat.createConversation({ modelId: "m" }, { headers: { "x-forwarded-for": "203.0.113.7" } });
    expect(res.conversation?.modelId).toBe("m");
    expect(state.lastForwardedFor).toBe("203.0.113.7, 127.0.0.1");
    // A request id is added when the client sent none (as Envoy does).
    expect(res.conversation?.title).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("passes errors through with their code and message (trailers, or headers for trailers-only responses)", async () => {
    const chat = createClient(ChatService, transport());
    const err = await chat.createConversation({ modelId: "missing" }).catch((e: unknown) => ConnectError.from(e));
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
    expect((err as ConnectError).rawMessage).toBe("model missing is not in the catalog");
  });

  it("streams a server stream message by message, without buffering", async () => {
    state.secondDelta = gate();
    const chat = createClient(ChatService, transport());
    const stream = chat.sendMessage({ conversationId: "c1", text: "hi" })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.event?.event.case).toBe("started");
    // The service holds its second delta until the first one reached the client through the gateway.
    const first = await stream.next();
    expect(first.value?.event?.event.value).toMatchObject({ text: "Hello" });
    state.secondDelta.open();
    const rest: string[] = [];
    for (let r = await stream.next(); !r.done; r = await stream.next()) rest.push(r.value.event?.event.case ?? "");
    expect(rest).toEqual(["delta", "finished"]);
  });

  it("cancels the service's stream when the client goes away", async () => {
    state.cancelled = gate();
    const chat = createClient(ChatService, transport());
    const abort = new AbortController();
    const stream = chat.sendMessage({ conversationId: "c1", text: "hang" }, { signal: abort.signal })[Symbol.asyncIterator]();
    await stream.next();
    await stream.next();
    abort.abort();
    await expect(stream.next()).rejects.toThrow();
    await state.cancelled.promise; // the handler saw its signal abort: the cancel crossed the gateway
  });

  it("never routes an internal service (UNIMPLEMENTED, as for an unknown path)", async () => {
    const credits = createClient(CreditsService, transport());
    const err = await credits.reserve({}).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.Unimplemented);
    // The same call straight to the service works: the gateway, not the service, refused it.
    const direct = createClient(CreditsService, createGrpcTransport({ baseUrl: upstreamUrl }));
    expect((await direct.reserve({})).holdId).toBe("h1");
  });
});

describe("dev gateway: plain HTTP", () => {
  it("answers 404 for unrouted and internal paths, 503 when the service is not running", async () => {
    expect((await fetch(`${gateway.url}/nothing/here`)).status).toBe(404);
    const internal = await fetch(`${gateway.url}/luna.billing.v1.CreditsService/Reserve`, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(internal.status).toBe(404);
    const notRunning = await fetch(`${gateway.url}/luna.models.v1.ModelService/ListModels`, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(notRunning.status).toBe(503);
    expect(await notRunning.text()).toContain("model-registry");
  });

  it("forwards GET and HEAD of plain routes (signed image URLs) with the service's headers and body", async () => {
    const res = await fetch(`${gateway.url}/images/u/j/0.png?exp=1&sig=x`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect([...new Uint8Array(await res.arrayBuffer())]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    const head = await fetch(`${gateway.url}/images/u/j/0.png?exp=1&sig=x`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("4");
  });

  it("forwards CORS preflights to the service, which answers them", async () => {
    const res = await fetch(`${gateway.url}/luna.chat.v1.ChatService/SendMessage`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
  });

  it("refuses a path that walks out of a routed prefix", async () => {
    const res = await fetch(`${gateway.url}/luna.chat.v1.ChatService/%2e%2e/luna.billing.v1.CreditsService/Reserve`, { method: "POST" });
    expect(res.status).toBe(404);
  });

  it("answers 503 (UNAVAILABLE to clients) when the service does not accept connections", async () => {
    const deadPort = await freePort();
    const gw = await startGateway({ upstream: () => `http://127.0.0.1:${deadPort}`, shutdownGraceMs: 100 });
    try {
      const chat = createClient(ChatService, createGrpcTransport({ baseUrl: gw.url }));
      const err = await chat.createConversation({ modelId: "m" }).catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.Unavailable);
    } finally {
      await gw.close();
    }
  });

  it("resets a stream that stays idle longer than the idle timeout", async () => {
    const gw = await startGateway({ upstream: () => upstreamUrl, idleTimeoutMs: 300, shutdownGraceMs: 100 });
    state.cancelled = gate();
    try {
      const chat = createClient(ChatService, createConnectTransport({ baseUrl: gw.url, httpVersion: "1.1" }));
      const stream = chat.sendMessage({ conversationId: "c1", text: "hang" })[Symbol.asyncIterator]();
      await stream.next();
      await stream.next();
      // Nothing flows after the first delta: the gateway cuts the stream and cancels the service's side.
      await expect(stream.next()).rejects.toThrow();
      await state.cancelled.promise;
    } finally {
      await gw.close();
    }
  });

  it("keeps HTTP/2 trailers (grpc-status) on a raw gRPC stream", async () => {
    const session = http2.connect(gateway.url);
    try {
      const req = session.request({ ":method": "POST", ":path": "/luna.chat.v1.ChatService/CreateConversation",
        "content-type": "application/grpc", te: "trailers" });
      // An empty CreateConversationRequest: 5-byte frame header, no payload.
      req.end(Buffer.from([0, 0, 0, 0, 0]));
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        req.on("trailers", resolve);
        req.on("error", reject);
        req.resume();
      });
      expect(trailers["grpc-status"]).toBe("0");
    } finally {
      session.close();
    }
  });

  it("drains in-flight streams on close, then refuses new connections", async () => {
    const gw = await startGateway({ upstream: () => upstreamUrl, shutdownGraceMs: 5000 });
    state.secondDelta = gate();
    const chat = createClient(ChatService, createConnectTransport({ baseUrl: gw.url, httpVersion: "1.1" }));
    const stream = chat.sendMessage({ conversationId: "c1", text: "hi" })[Symbol.asyncIterator]();
    await stream.next();
    await stream.next();
    const closed = gw.close();
    expect(gw.inFlight()).toBe(1);
    state.secondDelta.open();
    const rest: string[] = [];
    for (let r = await stream.next(); !r.done; r = await stream.next()) rest.push(r.value.event?.event.case ?? "");
    expect(rest).toEqual(["delta", "finished"]);
    await closed;
    await expect(fetch(`${gw.url}/luna.chat.v1.ChatService/CreateConversation`, { method: "POST" })).rejects.toThrow();
  });
});
