// The OpenAI-shaped errors: each Luna failure maps to the status and code OpenAI's SDKs turn into the right error
// class; bearer parsing and JSON bodies refuse what they must (in OpenAI's shape, never a 500).
import { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { JwtVerifier } from "./auth.js";
import type { OpenAIError} from "./openai-http.js";
import { authenticateOpenAI, readJsonBody, toOpenAIError } from "./openai-http.js";
import type { NodeServerRequest } from "./server.js";

const req = (headers: Record<string, string>, body = ""): NodeServerRequest =>
  Object.assign(Readable.from([Buffer.from(body)]), { headers }) as unknown as NodeServerRequest;

async function failure(p: Promise<unknown>): Promise<OpenAIError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  return toOpenAIError(e);
}

describe("toOpenAIError", () => {
  it("maps Luna's failures to OpenAI's statuses, types and codes", () => {
    const cases: Array<[ConnectError, number, string | null, string | null, Record<string, string>]> = [
      [new ConnectError("temperature: must be a number", Code.InvalidArgument), 400, null, "temperature", {}],
      [new ConnectError("invalid token", Code.Unauthenticated), 401, "invalid_api_key", null, {}],
      [new ConnectError("nope", Code.PermissionDenied), 403, "permission_denied", null, {}],
      [new ConnectError("not enough credits: a reply needs at least 17 credits, 0 available", Code.ResourceExhausted), 429, "insufficient_quota", null,
        { "x-should-retry": "false" }],
      [new ConnectError("rate limit: at most 3 chat requests per minute; retry in 12s", Code.ResourceExhausted), 429, "rate_limit_exceeded", null,
        { "retry-after": "12" }],
      [new ConnectError("too many replies in progress: at most 2 at a time", Code.ResourceExhausted), 429, "concurrency_limit_exceeded", null, {}],
      [new ConnectError("model m is offline", Code.Unavailable), 503, "model_unavailable", null, {}],
    ];
    for (const [err, status, code, param, headers] of cases) {
      const e = toOpenAIError(err);
      expect(e.status, err.rawMessage).toBe(status);
      expect(e.code, err.rawMessage).toBe(code);
      expect(e.param, err.rawMessage).toBe(param);
      expect(e.headers).toMatchObject(headers);
    }
    // Anything else is a 500 that says nothing of the cause.
    const internal = toOpenAIError(new Error("SELECT * FROM secrets failed"));
    expect(internal.status).toBe(500);
    expect(internal.message).toBe("internal error");
  });
});

describe("authenticateOpenAI", () => {
  const verifier: JwtVerifier = { async verify(t) {
    if (t === "good") return { userId: "u", role: "user", tokenId: "t" };
    if (t === "svc") return { userId: "chat-router", role: "internal", tokenId: "t" };
    throw new ConnectError("invalid token", Code.Unauthenticated);
  } };

  it("accepts a bearer the verifier accepts; 401 without one, malformed or refused; 403 for internal tokens", async () => {
    expect(await authenticateOpenAI(req({ authorization: "Bearer good" }), verifier)).toMatchObject({ userId: "u" });
    expect((await failure(authenticateOpenAI(req({}), verifier))).code).toBe("missing_api_key");
    expect((await failure(authenticateOpenAI(req({ authorization: "Basic abc" }), verifier))).status).toBe(401);
    expect((await failure(authenticateOpenAI(req({ authorization: "Bearer bad" }), verifier))).status).toBe(401);
    expect((await failure(authenticateOpenAI(req({ authorization: "Bearer svc" }), verifier))).status).toBe(403);
  });
});

describe("readJsonBody", () => {
  it("reads a JSON object; 400 for anything else, 413 past the limit", async () => {
    expect(await readJsonBody(req({}, '{"a":1}'))).toEqual({ a: 1 });
    for (const bad of ["", "{nope", "[1,2]", "null", "42"]) {
      const e = await failure(readJsonBody(req({}, bad)));
      expect(e.status, bad).toBe(400);
      expect(e.code, bad).toBe("invalid_json");
    }
    expect((await failure(readJsonBody(req({}, JSON.stringify({ a: "x".repeat(100) })), 50))).status).toBe(413);
  });
});
