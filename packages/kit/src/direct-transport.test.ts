import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as Status,
  HealthCheckResponseSchema,
  type HealthCheckRequest,
} from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { principalKey, type MethodRules, type Principal } from "./auth.js";
import { createDirectTransport } from "./direct-transport.js";

const caller: Principal = { userId: "chat-router", role: "internal", tokenId: "in-process" };

type Impl = Parameters<ConnectRouter["service"]>[1] & object;

function client(impl: Partial<Record<"check" | "watch" | "list", unknown>>, rules: MethodRules = { "grpc.health.v1.Health": "internal" }, timeoutMs?: number) {
  const fallbackCalls: string[] = [];
  const transport = createDirectTransport({
    routes: (router) => router.service(Health, impl as Impl),
    rules,
    principal: caller,
    defaultTimeoutMs: timeoutMs,
    fallback: () => {
      fallbackCalls.push("fallback");
      return createRouterTransport((r) => r.service(Health, impl as Impl));
    },
  });
  return { health: createClient(Health, transport), fallbackCalls };
}

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    expect(err).toBeInstanceOf(ConnectError);
    return (err as ConnectError).code;
  }
}

describe("createDirectTransport", () => {
  it("calls the implementation with a complete request and the caller's internal principal", async () => {
    let seen: { req: HealthCheckRequest; principal: Principal | undefined; protocol: string } | undefined;
    const { health } = client({
      check(req: HealthCheckRequest, ctx: HandlerContext) {
        seen = { req, principal: ctx.values.get(principalKey), protocol: ctx.protocolName };
        return { status: Status.SERVING };
      },
    });
    const res = await health.check({});
    expect(res.$typeName).toBe("grpc.health.v1.HealthCheckResponse");
    expect(res.status).toBe(Status.SERVING);
    expect(seen?.req.$typeName).toBe("grpc.health.v1.HealthCheckRequest");
    expect(seen?.req.service).toBe(""); // defaults filled, as after decoding
    expect(seen?.principal).toEqual(caller);
    expect(seen?.protocol).toBe("in-process");
  });

  it("gives each side its own copy of the messages", async () => {
    const kept = create(HealthCheckResponseSchema, { status: Status.SERVING });
    let received: HealthCheckRequest | undefined;
    const { health } = client({
      check(req: HealthCheckRequest) {
        received = req;
        return kept;
      },
    });
    const request = { service: "billing" };
    const res = await health.check(request);
    res.status = Status.NOT_SERVING;
    expect(kept.status).toBe(Status.SERVING);
    received!.service = "changed by the handler";
    expect(request.service).toBe("billing");
  });

  it("applies the module's access rules to the in-process caller", async () => {
    const impl = { check: () => ({ status: Status.SERVING }) };
    expect(await codeOf(client(impl, { "grpc.health.v1.Health": "admin" }).health.check({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(client(impl, {}).health.check({}))).toBe(Code.PermissionDenied);
    expect(await codeOf(client(impl, { "grpc.health.v1.Health/Check": "internal", "grpc.health.v1.Health": "admin" }).health.check({}))).toBe("ok");
    expect(await codeOf(client(impl, { "grpc.health.v1.Health": "public" }).health.check({}))).toBe("ok");
  });

  it("passes the handler's ConnectErrors through and turns anything else into Unknown", async () => {
    const notFound = client({ check: () => { throw new ConnectError("no such service", Code.NotFound); } }).health;
    await expect(notFound.check({})).rejects.toMatchObject({ code: Code.NotFound, rawMessage: "no such service" });
    const boom = client({ check: async () => { throw new Error("boom"); } }).health;
    await expect(boom.check({})).rejects.toMatchObject({ code: Code.Unknown, rawMessage: "boom" });
  });

  it("says Unimplemented for a method the module does not implement", async () => {
    const { health } = client({ check: () => ({}) });
    expect(await codeOf(health.list({}))).toBe(Code.Unimplemented);
  });

  it("ends a call at its deadline with DeadlineExceeded and aborts the handler's signal", async () => {
    let signal: AbortSignal | undefined;
    const { health } = client({
      check: (_req: HealthCheckRequest, ctx: HandlerContext) => {
        signal = ctx.signal;
        return new Promise(() => undefined); // never answers
      },
    }, undefined, 10_000);
    const t0 = Date.now();
    expect(await codeOf(health.check({}, { timeoutMs: 50 }))).toBe(Code.DeadlineExceeded);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(signal?.aborted).toBe(true);
    expect(ConnectError.from(signal?.reason).code).toBe(Code.DeadlineExceeded);
  });

  it("ends a call when the caller aborts, with Canceled", async () => {
    let signal: AbortSignal | undefined;
    const { health } = client({
      check: (_req: HealthCheckRequest, ctx: HandlerContext) => {
        signal = ctx.signal;
        return new Promise(() => undefined);
      },
    });
    const ac = new AbortController();
    const call = health.check({}, { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    expect(await codeOf(call)).toBe(Code.Canceled);
    expect(signal?.aborted).toBe(true);
  });

  it("aborts the handler's signal once a call has ended normally (cleanup hooks run)", async () => {
    let signal: AbortSignal | undefined;
    const { health } = client({
      check: (_req: HealthCheckRequest, ctx: HandlerContext) => {
        signal = ctx.signal;
        return { status: Status.SERVING };
      },
    });
    await health.check({});
    expect(signal?.aborted).toBe(true);
  });

  it("hands response headers and trailers to the caller", async () => {
    const { health } = client({
      check: (_req: HealthCheckRequest, ctx: HandlerContext) => {
        ctx.responseHeader.set("idempotent-replayed", "true");
        ctx.responseTrailer.set("x-trailer", "t");
        return {};
      },
    });
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    await health.check({}, { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
    expect(header?.get("idempotent-replayed")).toBe("true");
    expect(trailer?.get("x-trailer")).toBe("t");
  });

  it("streams server-streaming replies, and a caller that cancels ends the handler's iteration", async () => {
    let finished = false;
    let signal: AbortSignal | undefined;
    const { health, fallbackCalls } = client({
      async *watch(req: HealthCheckRequest, ctx: HandlerContext) {
        signal = ctx.signal;
        try {
          for (let i = 0; ; i++) {
            yield { status: i % 2 === 0 ? Status.SERVING : Status.NOT_SERVING };
            if (req.service === "three" && i === 2) return;
          }
        } finally {
          finished = true;
        }
      },
    });
    const all: Status[] = [];
    for await (const m of health.watch({ service: "three" })) all.push(m.status);
    expect(all).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]);
    expect(finished).toBe(true);

    // A Connect client stops a stream by aborting its signal (breaking out of the loop alone sends nothing).
    finished = false;
    let n = 0;
    const ac = new AbortController();
    for await (const m of health.watch({ service: "endless" }, { signal: ac.signal })) {
      expect(m.$typeName).toBe("grpc.health.v1.HealthCheckResponse");
      if (++n === 2) break;
    }
    ac.abort();
    await new Promise((r) => setTimeout(r, 10));
    expect(finished).toBe(true);
    expect(signal?.aborted).toBe(true);
    expect(fallbackCalls).toEqual([]);
  });

  it("passes a streaming handler's error to the reader as a ConnectError", async () => {
    const { health } = client({
      async *watch() {
        yield { status: Status.SERVING };
        throw new ConnectError("gone", Code.Unavailable);
      },
    });
    const got: Status[] = [];
    const err = await (async () => {
      try {
        for await (const m of health.watch({})) got.push(m.status);
      } catch (e) {
        return e;
      }
    })();
    expect(got).toEqual([Status.SERVING]);
    expect(err).toMatchObject({ code: Code.Unavailable, rawMessage: "gone" });
  });
});
