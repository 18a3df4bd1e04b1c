// The plumbing of Luna's OpenAI-compatible HTTP API (issue 22), shared by the services that serve part of `/v1/*`
// (chat-router: models and chat completions; image-job: image generations): bearer authentication (API keys and
// access tokens, through the host's verifier), JSON bodies with a size limit, and errors in OpenAI's shape
// (`{"error": {"message", "type", "code", "param"}}`) with the HTTP statuses OpenAI's SDKs map to their error classes:
//   400 BadRequestError (param names the field) · 401 AuthenticationError · 403 PermissionDeniedError ·
//   404 NotFoundError (unknown model: code model_not_found) · 429 RateLimitError — rate limited (code
//   rate_limit_exceeded, `retry-after`), too many replies at once (code concurrency_limit_exceeded), or out of credits
//   (code insufficient_quota, as OpenAI reports an exhausted quota, with `x-should-retry: false` so the SDKs do not
//   retry it) · 503 InternalServerError (model unavailable or waking up; retried by the SDKs) · 500 otherwise.
import type { ServerResponse } from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import type { JwtVerifier, Principal } from "./auth.js";
import type { NodeServerRequest, NodeServerResponse } from "./server.js";

/** An error answered in OpenAI's shape. */
export class OpenAIError extends Error {
  constructor(readonly status: number, message: string, readonly type: string, readonly code: string | null = null,
    readonly param: string | null = null, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

/** Default limit of a request body (a chat history); LUNA_OPENAI_MAX_BODY_BYTES where a service exposes it. */
export const DEFAULT_OPENAI_MAX_BODY_BYTES = 4 * 1024 * 1024;

export function badRequest(param: string | null, message: string, code: string | null = null): OpenAIError {
  return new OpenAIError(400, param ? `${param}: ${message}` : message, "invalid_request_error", code, param);
}

export function modelNotFound(model: string): OpenAIError {
  return new OpenAIError(404, `The model \`${model}\` does not exist or you do not have access to it.`, "invalid_request_error", "model_not_found", "model");
}

/** Seconds from a Luna rate-limit message ("... retry in 12s"), else 1. */
function retryAfterOf(message: string): number {
  const m = /retry in (\d+)\s*s/.exec(message);
  return m ? Math.max(1, Number(m[1])) : 1;
}

/** The OpenAI-shaped error for anything a handler threw (ConnectErrors keep their meaning; the rest is a 500). */
export function toOpenAIError(err: unknown): OpenAIError {
  if (err instanceof OpenAIError) return err;
  if (!(err instanceof ConnectError)) return new OpenAIError(500, "internal error", "server_error");
  const msg = err.rawMessage;
  switch (err.code) {
    case Code.InvalidArgument: {
      const field = /^([a-z_][a-z0-9_.[\]]*): /i.exec(msg)?.[1] ?? null;
      return new OpenAIError(400, msg, "invalid_request_error", null, field);
    }
    case Code.Unauthenticated:
      return new OpenAIError(401, msg, "invalid_request_error", "invalid_api_key");
    case Code.PermissionDenied:
      return new OpenAIError(403, msg, "invalid_request_error", "permission_denied");
    case Code.NotFound:
      return new OpenAIError(404, msg, "invalid_request_error", "not_found");
    case Code.ResourceExhausted:
      if (/credits/i.test(msg)) {
        return new OpenAIError(429, msg, "insufficient_quota", "insufficient_quota", null, { "x-should-retry": "false" });
      }
      if (/in progress|at a time/i.test(msg)) {
        return new OpenAIError(429, msg, "rate_limit_exceeded", "concurrency_limit_exceeded", null, { "retry-after": "1" });
      }
      return new OpenAIError(429, msg, "rate_limit_exceeded", "rate_limit_exceeded", null, { "retry-after": String(retryAfterOf(msg)) });
    case Code.FailedPrecondition:
      return new OpenAIError(400, msg, "invalid_request_error", "failed_precondition");
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return new OpenAIError(503, msg, "server_error", "model_unavailable", null, { "retry-after": "1" });
    default:
      return new OpenAIError(500, "internal error", "server_error");
  }
}

/** Writes `err` as OpenAI does (only when nothing was sent yet; a broken stream just ends). */
export function sendOpenAIError(res: NodeServerResponse, err: unknown): void {
  const e = toOpenAIError(err);
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, e.status, { error: { message: e.message, type: e.type, code: e.code, param: e.param } }, e.headers);
}

export function sendJson(res: NodeServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  (res as ServerResponse).writeHead(status, {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/** The caller, from `authorization: Bearer <API key or access token>`; 401 in OpenAI's shape otherwise. */
export async function authenticateOpenAI(req: NodeServerRequest, verifier: JwtVerifier): Promise<Principal> {
  const header = req.headers.authorization;
  if (typeof header !== "string" || header.trim() === "") {
    throw new OpenAIError(401, "You didn't provide an API key. Send it as `Authorization: Bearer luna_sk_...`.", "invalid_request_error", "missing_api_key");
  }
  const match = /^Bearer[ ]+(\S+)$/i.exec(header.trim());
  if (!match) throw new OpenAIError(401, 'malformed authorization header, expected "Bearer <API key>"', "invalid_request_error", "invalid_api_key");
  const principal = await verifier.verify(match[1]!);
  if (principal.role === "internal") throw new OpenAIError(403, "internal tokens cannot call the public API", "invalid_request_error", "permission_denied");
  return principal;
}

/** The request's JSON object body (400 when it is not one, 413 past `maxBytes`). */
export async function readJsonBody(req: NodeServerRequest, maxBytes = DEFAULT_OPENAI_MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new OpenAIError(413, `request body larger than ${maxBytes} bytes`, "invalid_request_error", "request_too_large");
    chunks.push(chunk);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw badRequest(null, "the request body must be JSON", "invalid_json");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw badRequest(null, "the request body must be a JSON object", "invalid_json");
  return body as Record<string, unknown>;
}

/**
 * Runs an OpenAI route: errors (thrown or rejected) are answered in OpenAI's shape; true so the host knows the
 * request was taken.
 */
export function serveOpenAI(res: NodeServerResponse, handler: () => Promise<void>, log?: { error(obj: object, msg?: string): void }): true {
  handler().catch((err: unknown) => {
    if (!(err instanceof OpenAIError) && !(err instanceof ConnectError)) log?.error({ err }, "OpenAI-compatible request failed");
    sendOpenAIError(res, err);
  });
  return true;
}
