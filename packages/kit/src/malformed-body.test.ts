// Malformed binary request bodies over real HTTP, in each protocol the API port speaks: the answer is
// INVALID_ARGUMENT (not INTERNAL / HTTP 500) and the call is counted in luna_rpc_requests_total.
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "./log.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { createServer, type LunaServer } from "./server.js";

const GARBAGE = Buffer.from([0xff, 0xfe, 0x01, 0x02]); // field 0 / bad wire type: "illegal tag"
const TRUNCATED = Buffer.from([0x0a, 0x0a, 0x61, 0x62]); // field 1, length 10, only 2 bytes: "premature EOF"
const VALID = Buffer.from([0x0a, 0x02, 0x6f, 0x6b]); // service: "ok"

function envelope(msg: Buffer, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(msg.byteLength, 1);
  return Buffer.concat([head, msg]);
}

function frames(body: Buffer): Array<{ flags: number; data: Buffer }> {
  const out: Array<{ flags: number; data: Buffer }> = [];
  for (let i = 0; i + 5 <= body.byteLength;) {
    const len = body.readUInt32BE(i + 1);
    out.push({ flags: body[i]!, data: body.subarray(i + 5, i + 5 + len) });
    i += 5 + len;
  }
  return out;
}

let server: LunaServer;
let base: string;
let metrics: Metrics;

beforeAll(async () => {
  metrics = createMetrics({ service: "test", defaultMetrics: false });
  const routes = (router: ConnectRouter) => router.service(Health, {
    check(req) {
      if (req.service === "boom") throw new Error("a real server fault");
      return create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
    list: () => create(HealthListResponseSchema, {}),
    async *watch() {
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
  });
  server = createServer({ routes, interceptors: [metrics.interceptor], metrics, log: createLogger({ service: "test", level: "silent" }), shutdownGraceMs: 100 });
  const { port } = await server.listen(0, "127.0.0.1");
  base = `http://127.0.0.1:${port}`;
});
afterAll(() => server.close());

async function count(method: string, code: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric("luna_rpc_requests_total")!.get();
  return m.values.find((v) => v.labels.method === method && v.labels.code === code)?.value ?? 0;
}

/** A gRPC call over HTTP/2 with prior knowledge: status and message from the trailers. */
function grpcCall(path: string, body: Buffer): Promise<{ status: string | undefined; message: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(base);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers" });
    let headers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => { headers = h; });
    stream.on("trailers", (t) => { headers = { ...headers, ...t }; });
    stream.on("data", () => undefined);
    stream.on("end", () => {
      session.close();
      resolve({ status: headers["grpc-status"] as string | undefined, message: decodeURIComponent(String(headers["grpc-message"] ?? "")) });
    });
    stream.on("error", reject);
    stream.end(body);
  });
}

describe("malformed binary request bodies", () => {
  it("Connect unary: 400 invalid_argument, counted", async () => {
    const before = await count("Check", "invalid_argument");
    for (const body of [GARBAGE, TRUNCATED]) {
      const res = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/proto" }, body });
      expect(res.status).toBe(400);
      const json = await res.json() as { code: string; message: string };
      expect(json.code).toBe("invalid_argument");
      expect(json.message).toMatch(/malformed request message \(parse binary: (illegal tag|premature EOF)/);
    }
    expect(await count("Check", "invalid_argument")).toBe(before + 2);
  });

  it("gRPC (HTTP/2): status 3, counted", async () => {
    const before = await count("Check", "invalid_argument");
    const truncated = await grpcCall("/grpc.health.v1.Health/Check", envelope(TRUNCATED));
    expect(truncated.status).toBe("3");
    expect(truncated.message).toContain("premature EOF");
    expect((await grpcCall("/grpc.health.v1.Health/Check", envelope(GARBAGE))).status).toBe("3");
    // server streaming parses its one request before the handler too
    expect((await grpcCall("/grpc.health.v1.Health/Watch", envelope(GARBAGE))).status).toBe("3");
    expect(await count("Check", "invalid_argument")).toBe(before + 2);
    expect(await count("Watch", "invalid_argument")).toBeGreaterThanOrEqual(1);
  });

  it("gRPC-Web and Connect streaming: invalid_argument in the end frame, counted", async () => {
    const before = await count("Check", "invalid_argument");
    const web = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: envelope(GARBAGE) });
    const trailer = frames(Buffer.from(await web.arrayBuffer())).find((f) => f.flags & 0x80)!;
    expect(trailer.data.toString()).toMatch(/grpc-status: 3\r\n/);
    expect(await count("Check", "invalid_argument")).toBe(before + 1);

    const watchBefore = await count("Watch", "invalid_argument");
    const stream = await fetch(`${base}/grpc.health.v1.Health/Watch`, { method: "POST", headers: { "content-type": "application/connect+proto" }, body: envelope(GARBAGE) });
    const end = frames(Buffer.from(await stream.arrayBuffer())).find((f) => f.flags & 0x02)!;
    expect(JSON.parse(end.data.toString()).error.code).toBe("invalid_argument");
    expect(await count("Watch", "invalid_argument")).toBe(watchBefore + 1);
  });

  it("counts other requests refused before the handler too (malformed JSON), once", async () => {
    const before = await count("Check", "invalid_argument");
    const json = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: "{nope" });
    expect(json.status).toBe(400);
    const web = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/grpc-web+json" }, body: envelope(Buffer.from("[1,")) });
    expect(frames(Buffer.from(await web.arrayBuffer())).find((f) => f.flags & 0x80)!.data.toString()).toMatch(/grpc-status: 3\r\n/);
    expect(await count("Check", "invalid_argument")).toBe(before + 2);
    // not an RPC at all (unsupported content type): nothing to count
    const other = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "text/plain" }, body: "x" });
    expect(other.status).toBe(415);
    expect(await count("Check", "invalid_argument")).toBe(before + 2);
  });

  it("leaves good requests and real server faults alone (no double counting, no internal)", async () => {
    const okBefore = await count("Check", "ok");
    const ok = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/proto" }, body: VALID });
    expect(ok.status).toBe(200);
    expect((await grpcCall("/grpc.health.v1.Health/Check", envelope(VALID))).status).toBe("0");
    expect(await count("Check", "ok")).toBe(okBefore + 2);
    // a handler's own failure stays internal (the rewrite matches the parser's error only)
    const boom = await fetch(`${base}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ service: "boom" }) });
    expect(boom.status).toBe(500);
    expect(await count("Check", "internal")).toBe(1);
  });
});

describe("inside the interceptors (client and bidi streams parse there)", () => {
  it("maps the parser's error to invalid_argument for clients and metrics alike", async () => {
    const { ConnectError, Code } = await import("@connectrpc/connect");
    const { codeOf, toConnectError } = await import("./errors.js");
    const parse = new ConnectError("parse binary: premature EOF", Code.Internal);
    expect(codeOf(parse)).toBe(Code.InvalidArgument);
    expect(toConnectError(parse).code).toBe(Code.InvalidArgument);
    // any other internal error stays what it is
    expect(codeOf(new ConnectError("serialize binary: x", Code.Internal))).toBe(Code.Internal);
  });
});
