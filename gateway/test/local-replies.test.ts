// Envoy's own replies (JWT refused, no route, rate limited, no upstream) reach Connect clients as the error the edge
// means: the bodies and statuses of the config's local_reply mappers, served as Envoy would send them, read by the real
// Connect client (unary and server streaming). gRPC and gRPC-Web get Envoy's built-in gRPC local reply instead.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { committedConfig, hcmOf, type Obj } from "./helpers.js";

interface Mapper {
  filter: { and_filter: { filters: Obj[] } };
  status_code?: number;
  body_format_override: { json_format?: Record<string, string>; text_format?: string; content_type: string };
}

const mappers = ((hcmOf(committedConfig()).local_reply_config as Obj).mappers as Mapper[]);

/** The mapper Envoy applies to a local reply of `status` for a request with `contentType` (first match wins). */
function mapperFor(status: number, contentType: string): Mapper | undefined {
  return mappers.find((m) => m.filter.and_filter.filters.every((f) => {
    const sc = f.status_code_filter as { comparison: { op: string; value: { default_value: number } } } | undefined;
    if (sc) return sc.comparison.op === "EQ" && sc.comparison.value.default_value === status;
    const h = (f.header_filter as { header: { name: string; string_match: { exact?: string; prefix?: string }; invert_match?: boolean } }).header;
    const m = h.string_match.exact !== undefined ? contentType === h.string_match.exact : contentType.startsWith(h.string_match.prefix!);
    return h.invert_match ? !m : m;
  }));
}

/** What Envoy sends for a local reply: the mapper's status and formatted body (%LOCAL_REPLY_BODY% → `detail`). */
function reply(status: number, contentType: string, detail: string): { status: number; contentType: string; body: Buffer } {
  const m = mapperFor(status, contentType);
  if (!m) return { status, contentType: "text/plain", body: Buffer.from(detail) };
  const f = m.body_format_override;
  const body = f.json_format
    ? Buffer.from(JSON.stringify(Object.fromEntries(Object.entries(f.json_format).map(([k, v]) => [k, v.replace("%LOCAL_REPLY_BODY%", detail)]))))
    : Buffer.from(f.text_format!, "latin1");
  return { status: m.status_code ?? status, contentType: f.content_type, body };
}

let server: http.Server;
let baseUrl: string;
/** The local reply the fake edge gives next. */
let next = { status: 404, detail: "" };

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const r = reply(next.status, req.headers["content-type"] ?? "", next.detail);
      res.writeHead(r.status, { "content-type": r.contentType });
      res.end(r.body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

const client = (): ReturnType<typeof createClient<typeof ChatService>> =>
  createClient(ChatService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));

async function unaryCode(status: number, detail: string): Promise<ConnectError> {
  next = { status, detail };
  return client().createConversation({ modelId: "m" }).then(() => { throw new Error("no error"); }, (e: unknown) => ConnectError.from(e));
}

async function streamCode(status: number, detail: string): Promise<ConnectError> {
  next = { status, detail };
  try {
    for await (const _ of client().sendMessage({ conversationId: "c", text: "hi" })) void _;
    throw new Error("no error");
  } catch (e) {
    return ConnectError.from(e);
  }
}

describe("Envoy's local replies, as Connect clients read them", () => {
  it.each([
    [401, "Jwt is missing", Code.Unauthenticated],
    [404, "not found", Code.Unimplemented],
    [429, "", Code.ResourceExhausted],
    [503, "no healthy upstream", Code.Unavailable],
  ])("unary: HTTP %i → %s", async (status, detail, code) => {
    const err = await unaryCode(status, detail);
    expect(err.code).toBe(code);
    if (detail) expect(err.rawMessage).toBe(detail);
  });

  it.each([
    [401, Code.Unauthenticated],
    [404, Code.Unimplemented],
    [429, Code.ResourceExhausted],
  ])("server stream: HTTP %i → %s", async (status, code) => {
    expect((await streamCode(status, "x")).code).toBe(code);
  });

  it("without the mappers, a rate-limited Connect call would be UNAVAILABLE (which clients retry)", async () => {
    const saved = mappers.splice(0, mappers.length);
    try {
      expect((await unaryCode(429, "")).code).toBe(Code.Unavailable);
      expect((await streamCode(429, "")).code).toBe(Code.Unavailable);
    } finally {
      mappers.push(...saved);
    }
  });

  it("leaves gRPC and gRPC-Web requests to Envoy's gRPC local reply", () => {
    for (const status of [401, 404, 429, 503]) {
      expect(mapperFor(status, "application/grpc")).toBeUndefined();
      expect(mapperFor(status, "application/grpc+proto")).toBeUndefined();
    }
  });
});
