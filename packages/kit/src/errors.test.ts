import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import {
  aborted, alreadyExists, availableCreditsOf, codeOf, errorInterceptor, failedPrecondition, formatCredits, interceptCall, invalidArgument,
  invalidPageSize, invalidPageToken, notEnoughCredits, notFound, permissionDenied, resourceExhausted, toConnectError,
  unauthenticated, unavailable,
} from "./errors.js";
import { createLogger } from "./log.js";

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ service: "test", level: "debug", destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  return { log, lines };
}

function failure(p: Promise<unknown>): Promise<ConnectError> {
  return p.then(() => { throw new Error("expected the call to fail"); }, (e: unknown) => ConnectError.from(e));
}

describe("error helpers", () => {
  it("carry the right codes and messages", () => {
    expect(invalidArgument("prompt", "must not be empty")).toMatchObject({ code: Code.InvalidArgument, rawMessage: "prompt: must not be empty" });
    expect(notFound("conversation c1")).toMatchObject({ code: Code.NotFound, rawMessage: "conversation c1 not found" });
    expect(alreadyExists("x").code).toBe(Code.AlreadyExists);
    expect(permissionDenied("x").code).toBe(Code.PermissionDenied);
    expect(unauthenticated("x").code).toBe(Code.Unauthenticated);
    expect(resourceExhausted("x").code).toBe(Code.ResourceExhausted);
    expect(failedPrecondition("x").code).toBe(Code.FailedPrecondition);
    expect(unavailable("x").code).toBe(Code.Unavailable);
    expect(aborted("x").code).toBe(Code.Aborted);
  });
});

describe("toConnectError", () => {
  it("passes ConnectErrors through unchanged", () => {
    const err = notFound("image i1");
    expect(toConnectError(err)).toBe(err);
  });

  it("maps an AbortError to Canceled", () => {
    const err = new Error("aborted");
    err.name = "AbortError";
    expect(toConnectError(err).code).toBe(Code.Canceled);
    expect(codeOf(err)).toBe(Code.Canceled);
  });

  it("hides unknown errors behind a generic Internal error and logs the real one", () => {
    const { log, lines } = capture();
    const err = toConnectError(new Error("relation \"ledger\" does not exist"), log);
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
    expect(lines).toHaveLength(1);
    expect(lines[0]!.level).toBe("error");
    expect(JSON.stringify(lines[0]!.err)).toContain("relation \\\"ledger\\\" does not exist");
    expect((lines[0]!.err as { stack: string }).stack).toContain("errors.test.ts");
    expect(codeOf("a string")).toBe(Code.Internal);
  });
});

describe("errorInterceptor", () => {
  const routes = (router: Parameters<Parameters<typeof createRouterTransport>[0]>[0]) => router.service(Health, {
    check() {
      throw new Error("secret connection string postgres://admin:hunter2@db");
    },
    list() {
      throw notFound("thing");
    },
    async *watch() {
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
      throw new TypeError("cannot read properties of undefined (reading 'hunter2')");
    },
  });

  it("turns a unary handler's unknown error into Internal without leaking its message", async () => {
    const { log, lines } = capture();
    const client = createClient(Health, createRouterTransport(routes, { router: { interceptors: [errorInterceptor(log)] } }));
    const err = await failure(client.check({}));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
    expect(lines.some((l) => JSON.stringify(l).includes("hunter2"))).toBe(true);
  });

  it("keeps deliberate ConnectErrors as they are", async () => {
    const { log } = capture();
    const client = createClient(Health, createRouterTransport(routes, { router: { interceptors: [errorInterceptor(log)] } }));
    const err = await failure(client.list({}));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toBe("thing not found");
  });

  it("maps an error thrown mid-stream after messages were sent", async () => {
    const { log } = capture();
    const client = createClient(Health, createRouterTransport(routes, { router: { interceptors: [errorInterceptor(log)] } }));
    const received: Status[] = [];
    const err = await (async () => {
      for await (const res of client.watch({})) received.push(res.status);
    })().then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect(received).toEqual([Status.SERVING]);
    expect(err?.code).toBe(Code.Internal);
    expect(err?.rawMessage).not.toContain("hunter2");
  });
});

describe("interceptCall on a stream (the per-message path of every interceptor)", () => {
  type Next = Parameters<typeof interceptCall>[0];
  const streamOf = (source: AsyncIterable<unknown>): Next => async () => ({ stream: true, message: source }) as unknown as Awaited<ReturnType<Next>>;
  const req = () => ({ signal: new AbortController().signal }) as unknown as Parameters<typeof interceptCall>[1];

  it("passes every message through, runs each step in the call's context and ends once, OK, when the stream ends", async () => {
    const ends: unknown[] = [];
    const contexts: string[] = [];
    let inside = "";
    async function* source() {
      for (const m of [1, 2, 3]) {
        contexts.push(inside);
        yield m;
      }
    }
    const run = <T>(fn: () => T): T => {
      inside = "call";
      try {
        return fn();
      } finally {
        inside = "";
      }
    };
    const res = await interceptCall(streamOf(source()), req(), { run, end: (e) => ends.push(e) });
    const got: unknown[] = [];
    for await (const m of (res as unknown as { message: AsyncIterable<unknown> }).message) got.push(m);
    expect(got).toEqual([1, 2, 3]);
    expect(contexts).toEqual(["call", "call", "call"]);
    expect(ends).toEqual([undefined]);
  });

  it("maps an error thrown mid-stream and ends with the mapped error, once", async () => {
    const ends: unknown[] = [];
    const mapped = new ConnectError("mapped", Code.Internal);
    async function* source() {
      yield 1;
      throw new Error("secret detail");
    }
    const res = await interceptCall(streamOf(source()), req(), { mapError: () => mapped, end: (e) => ends.push(e) });
    const it = (res as unknown as { message: AsyncIterable<unknown> }).message[Symbol.asyncIterator]();
    expect(await it.next()).toEqual({ done: false, value: 1 });
    await expect(it.next()).rejects.toBe(mapped);
    expect(ends).toEqual([mapped]);
  });

  it("maps an error thrown synchronously by the stream's next()", async () => {
    const ends: unknown[] = [];
    const mapped = new ConnectError("mapped", Code.Internal);
    const source = { [Symbol.asyncIterator]: () => ({ next: () => { throw new Error("sync"); } }) } as unknown as AsyncIterable<unknown>;
    const res = await interceptCall(streamOf(source), req(), { mapError: () => mapped, end: (e) => ends.push(e) });
    await expect((res as unknown as { message: AsyncIterable<unknown> }).message[Symbol.asyncIterator]().next()).rejects.toBe(mapped);
    expect(ends).toEqual([mapped]);
  });
});

describe("refusal wordings (one per situation, used by every service)", () => {
  it("states credits once, with the need and what is available, in plain English", () => {
    const e = notEnoughCredits("this job (1 × 50)", 50n, 0n);
    expect([e.code, e.rawMessage]).toEqual([Code.ResourceExhausted, "not enough credits: this job (1 × 50) needs 50 credits, 0 available"]);
    expect(notEnoughCredits("a reply", 1, 0).rawMessage).toBe("not enough credits: a reply needs 1 credit, 0 available");
    expect([formatCredits(1n), formatCredits(0n), formatCredits(2)]).toEqual(["1 credit", "0 credits", "2 credits"]);
  });

  it("reads the available credits back from the wording (and from billing's older one), else undefined", () => {
    expect(availableCreditsOf(notEnoughCredits("the hold", 41n, 40n).rawMessage)).toBe(40n);
    expect(availableCreditsOf("insufficient credits: requested 31, available 30")).toBe(30n);
    expect(availableCreditsOf("not enough credits: the balance kept changing; try again")).toBeUndefined();
  });

  it("words page-size and page-token errors the same for every list", () => {
    expect([invalidPageSize("page.page_size", -1).code, invalidPageSize("page.page_size", -1).rawMessage]).toEqual([Code.InvalidArgument, "page.page_size: must not be negative, got -1"]);
    expect(invalidPageToken("page.page_token").rawMessage).toBe("page.page_token: is not a next_page_token of this list (pass it back unchanged)");
  });
});
