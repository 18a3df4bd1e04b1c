// Shared pieces of the kit's core integration tests: a real server on port 0, a capturing logger, and an independent
// gRPC client (@grpc/grpc-js) that speaks HTTP/2 cleartext with prior knowledge.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthListRequestSchema,
  HealthListResponseSchema,
} from "@luna/contracts/grpc/health/v1/health_pb.js";
import type { HealthCheckResponse, HealthListResponse } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { createLogger } from "../../src/log.js";
import type { Logger } from "../../src/log.js";
import { createServer } from "../../src/server.js";
import type { LunaServer, ServerOptions } from "../../src/server.js";

export type Line = Record<string, unknown>;

export function captureLogger(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const log = createLogger({ service: "kit-test", level: "debug", destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  return { log, lines };
}

export type TestServer = { server: LunaServer; port: number; baseUrl: string; lines: Line[]; log: Logger };

/** Starts createServer() on 127.0.0.1 port 0. */
export async function startTestServer(opts: {
  routes: (router: ConnectRouter) => void;
  interceptors?: Interceptor[];
} & Partial<Omit<ServerOptions, "routes" | "interceptors">>): Promise<TestServer> {
  const { log, lines } = captureLogger();
  const server = createServer({ log, ...opts });
  const { port } = await server.listen(0, "127.0.0.1");
  return { server, port, baseUrl: `http://127.0.0.1:${port}`, lines, log };
}

/** grpc.health.v1 over @grpc/grpc-js, without loading a .proto: messages are (de)serialized with protobuf-es. */
export function grpcHealthClient(port: number) {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const serializeCheck = (service: string) => Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service })));
  const metadata = (headers: Record<string, string> = {}) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    return md;
  };
  return {
    check(service: string, headers?: Record<string, string>): Promise<HealthCheckResponse> {
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest("/grpc.health.v1.Health/Check", (s: string) => serializeCheck(s),
          (b: Buffer) => fromBinary(HealthCheckResponseSchema, b), service, metadata(headers),
          (err, res) => (err ? reject(err) : resolve(res!)));
      });
    },
    list(headers?: Record<string, string>): Promise<HealthListResponse> {
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest("/grpc.health.v1.Health/List",
          () => Buffer.from(toBinary(HealthListRequestSchema, create(HealthListRequestSchema, {}))),
          (b: Buffer) => fromBinary(HealthListResponseSchema, b), null, metadata(headers),
          (err, res) => (err ? reject(err) : resolve(res!)));
      });
    },
    /** Opens a Watch stream; messages and the final status are collected as they arrive. */
    watch(service: string, headers?: Record<string, string>) {
      const call = client.makeServerStreamRequest("/grpc.health.v1.Health/Watch", (s: string) => serializeCheck(s),
        (b: Buffer) => fromBinary(HealthCheckResponseSchema, b), service, metadata(headers));
      const messages: HealthCheckResponse[] = [];
      call.on("data", (m: HealthCheckResponse) => messages.push(m));
      const done = new Promise<grpc.StatusObject>((resolve) => {
        call.on("status", resolve);
        call.on("error", () => { /* surfaced through "status" */ });
      });
      return { call, messages, done };
    },
    close: () => client.close(),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every 5 ms until it holds or `timeoutMs` passes. */
export async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(5);
  }
}
