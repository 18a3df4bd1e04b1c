/**
 * HTTP client of OpenAI-compatible servers (vLLM, llama.cpp, Ollama, the simulator): streamed chat completions
 * relayed chunk by chunk, non-streamed ones (titles), and `/tokenize`. node:http with a keep-alive Agent per
 * replica; the response is decoded as UTF-8 text and parsed incrementally, so every delta is handed on the moment
 * its SSE event is complete.
 */
import http from "node:http";
import https from "node:https";
import { interpretChunk, SseParser, upstreamErrorMessage, type Usage } from "../domain/sse.js";

/** Where a request goes. */
export interface Endpoint {
  /** Replica base URL without `/v1`, e.g. `http://10.0.0.5:8000`. */
  baseUrl: string;
  agent: http.Agent;
  /** `Authorization: Bearer` key, when the upstream wants one. */
  apiKey?: string;
}

/** Creates the keep-alive agent of one replica. */
export function createAgent(baseUrl: string, maxSockets: number): http.Agent {
  const opts = { keepAlive: true, maxSockets, maxFreeSockets: Math.min(maxSockets, 64), scheduling: "lifo" as const };
  return baseUrl.startsWith("https:") ? new https.Agent(opts) : new http.Agent(opts);
}

/** How a streamed request failed. `retryable` failures before the first token go to another replica. */
export type UpstreamFailure =
  | { kind: "http"; status: number; message: string }
  | { kind: "network"; message: string }
  | { kind: "timeout"; phase: "connect" | "first_token" | "idle" | "total"; message: string }
  | { kind: "stream_error"; message: string }
  | { kind: "protocol"; message: string }
  | { kind: "closed"; message: string };

/** Whether a failure says something about the replica (breaker) and may be retried elsewhere. */
export function isReplicaFault(f: UpstreamFailure): boolean {
  if (f.kind === "http") return f.status >= 500 || f.status === 408 || f.status === 429;
  return true;
}

export function isContextOverflow(f: UpstreamFailure): boolean {
  return f.kind === "http" && f.status === 400 && /maximum context length/i.test(f.message);
}

export type StreamOutcome =
  | { kind: "finished"; finishReason: string; usage: Usage | undefined }
  | { kind: "aborted" }
  | { kind: "failed"; failure: UpstreamFailure };

export interface StreamChatRequest {
  endpoint: Endpoint;
  /** Encoded JSON body (built once per reply, reused by a retry). */
  body: string;
  connectTimeoutMs: number;
  firstTokenTimeoutMs: number;
  idleTimeoutMs: number;
  /** Content deltas, in order. */
  onDelta(text: string): void;
}

/** The JSON body of a streamed chat completion asking for usage in the last chunk. */
export function chatRequestBody(model: string, messages: ReadonlyArray<{ role: string; content: string }>, maxTokens: number,
  sampling?: Record<string, unknown>): string {
  // Sampling first: the fields Luna controls (model, budget, streaming with usage) always win.
  return JSON.stringify({ ...sampling, model, messages, stream: true, stream_options: { include_usage: true }, max_tokens: maxTokens });
}

const MAX_ERROR_BODY = 64 * 1024;

/** How often a request is resent at once when its kept-alive socket turns out to be closed. */
const STALE_SOCKET_RETRIES = 2;

/**
 * A request that died on a reused keep-alive socket before any response: the server closed the idle connection
 * (its keep-alive timeout, e.g. uvicorn's 5 s) just as we reused it. Nothing reached the model, so the request is
 * simply sent again (what Node's documentation recommends), not counted against the replica.
 */
function isStaleSocket(req: http.ClientRequest, err: NodeJS.ErrnoException, respondedAt: number | undefined): boolean {
  return req.reusedSocket && respondedAt === undefined && (err.code === "ECONNRESET" || err.code === "EPIPE" || err.message === "socket hang up");
}

/**
 * One streamed chat completion. `done` always resolves (never rejects); `abort()` ends the request (the upstream
 * sees the connection close and frees its slot, as vLLM does on a client disconnect).
 */
export class UpstreamStream {
  /** Whether a content delta arrived (after it, failures are not retried). */
  gotContent = false;
  /** When the response headers arrived (performance.now()); undefined before. */
  respondedAt: number | undefined;
  readonly done: Promise<StreamOutcome>;
  private resolve!: (o: StreamOutcome) => void;
  private settled = false;
  private req: http.ClientRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private phase: "connect" | "first_token" | "idle" = "connect";
  private finishReason = "";
  private usage: Usage | undefined;
  private sawDone = false;

  constructor(private readonly r: StreamChatRequest) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
  }

  start(): this {
    this.timer = setTimeout(() => this.onTimeout(), this.r.connectTimeoutMs);
    this.send(STALE_SOCKET_RETRIES);
    return this;
  }

  /** Sends the request; `staleRetries`: resends left for a kept-alive socket the server had already closed. */
  private send(staleRetries: number): void {
    const { endpoint } = this.r;
    const url = new URL(`${endpoint.baseUrl}/v1/chat/completions`);
    const headers: Record<string, string> = {
      "content-type": "application/json",
      accept: "text/event-stream",
      "content-length": String(Buffer.byteLength(this.r.body)),
    };
    if (endpoint.apiKey) headers.authorization = `Bearer ${endpoint.apiKey}`;
    const mod = url.protocol === "https:" ? https : http;
    let req: http.ClientRequest;
    try {
      req = mod.request(url, { method: "POST", agent: endpoint.agent, headers });
    } catch (err) {
      this.settle({ kind: "failed", failure: { kind: "network", message: (err as Error).message } });
      return;
    }
    this.req = req;
    req.setNoDelay(true);
    req.on("response", (res) => this.onResponse(res));
    req.on("error", (err) => {
      if (this.settled) return;
      if (staleRetries > 0 && isStaleSocket(req, err, this.respondedAt)) {
        this.send(staleRetries - 1);
        return;
      }
      this.fail({ kind: "network", message: err.message });
    });
    req.end(this.r.body);
  }

  /** Ends the request; `done` resolves with `aborted` unless it had already settled. */
  abort(): void {
    if (this.settled) return;
    this.settle({ kind: "aborted" });
  }

  private onResponse(res: http.IncomingMessage): void {
    this.respondedAt = performance.now();
    if (this.settled) {
      res.destroy();
      return;
    }
    const status = res.statusCode ?? 0;
    if (status < 200 || status >= 300) {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        if (body.length < MAX_ERROR_BODY) body += d;
      });
      res.on("end", () => this.fail({ kind: "http", status, message: upstreamErrorMessage(body) || `HTTP ${status}` }));
      res.on("error", () => this.fail({ kind: "http", status, message: `HTTP ${status}` }));
      return;
    }
    this.phase = "first_token";
    this.armTimer(this.r.firstTokenTimeoutMs);
    const parser = new SseParser((data) => this.onEvent(data));
    res.setEncoding("utf8");
    res.on("data", (piece: string) => {
      if (this.settled) return;
      if (this.phase === "idle") this.timer?.refresh();
      parser.push(piece);
    });
    res.on("end", () => {
      if (this.settled) return;
      parser.end();
      if (!this.settled) this.onStreamEnd();
    });
    // A connection dropped mid-body ("aborted") surfaces as an error or a close without end.
    res.on("error", (err) => this.fail({ kind: "closed", message: `upstream connection lost: ${err.message}` }));
    res.on("close", () => {
      if (!this.settled) this.fail({ kind: "closed", message: "upstream closed the stream before it ended" });
    });
  }

  private onEvent(data: string): void {
    if (this.settled) return;
    const info = interpretChunk(data);
    switch (info.kind) {
      case "done":
        this.sawDone = true;
        this.onStreamEnd();
        return;
      case "error":
        this.fail({ kind: "stream_error", message: info.message });
        return;
      case "invalid":
        this.fail({ kind: "protocol", message: `unexpected stream data: ${info.reason}` });
        return;
      case "chunk":
        if (info.content !== undefined) {
          if (!this.gotContent) {
            this.gotContent = true;
            this.phase = "idle";
            this.armTimer(this.r.idleTimeoutMs);
          }
          this.r.onDelta(info.content);
        }
        if (info.finishReason) this.finishReason = info.finishReason;
        if (info.usage) this.usage = info.usage;
        return;
    }
  }

  private onStreamEnd(): void {
    if (!this.sawDone && !this.finishReason) {
      this.fail({ kind: "closed", message: "upstream ended the stream without finishing the reply" });
      return;
    }
    this.settle({ kind: "finished", finishReason: this.finishReason || "stop", usage: this.usage });
  }

  private armTimer(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onTimeout(), ms);
  }

  private onTimeout(): void {
    const phase = this.phase;
    const what = phase === "connect" ? "no response from the model server" : phase === "first_token" ? "the model sent no first token" : "the model stopped sending";
    this.fail({ kind: "timeout", phase, message: `${what} in time` });
  }

  private fail(failure: UpstreamFailure): void {
    this.settle({ kind: "failed", failure });
  }

  private settle(outcome: StreamOutcome): void {
    if (this.settled) return;
    this.settled = true;
    if (this.timer) clearTimeout(this.timer);
    // A finished stream keeps its socket for the next request; anything else closes it, which is what tells the
    // upstream to stop generating.
    if (outcome.kind !== "finished") this.req?.destroy();
    this.resolve(outcome);
  }
}

/** Result of a small JSON request (tokenize, a non-streamed completion). */
async function postJson(endpoint: Endpoint, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<{ status: number; json: unknown; text: string }> {
  const data = JSON.stringify(body);
  for (let retries = STALE_SOCKET_RETRIES; ; retries--) {
    try {
      return await postJsonOnce(endpoint, path, data, timeoutMs, signal);
    } catch (err) {
      if (retries > 0 && err instanceof StaleSocketError) continue;
      throw err instanceof StaleSocketError ? err.original : err;
    }
  }
}

class StaleSocketError extends Error {
  constructor(readonly original: Error) {
    super(original.message);
  }
}

async function postJsonOnce(endpoint: Endpoint, path: string, data: string, timeoutMs: number, signal?: AbortSignal): Promise<{ status: number; json: unknown; text: string }> {
  signal?.throwIfAborted();
  const url = new URL(`${endpoint.baseUrl}${path}`);
  const headers: Record<string, string> = { "content-type": "application/json", "content-length": String(Buffer.byteLength(data)) };
  if (endpoint.apiKey) headers.authorization = `Bearer ${endpoint.apiKey}`;
  const mod = url.protocol === "https:" ? https : http;
  return await new Promise((resolve, reject) => {
    const req = mod.request(url, { method: "POST", agent: endpoint.agent, headers, timeout: timeoutMs, signal }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        if (text.length < 4 * 1024 * 1024) text += d;
      });
      res.on("end", () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
      res.on("error", reject);
    });
    const timer = setTimeout(() => req.destroy(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on("close", () => clearTimeout(timer));
    let responded = false;
    req.on("response", () => (responded = true));
    req.on("error", (err: NodeJS.ErrnoException) => reject(isStaleSocket(req, err, responded ? 0 : undefined) ? new StaleSocketError(err) : err));
    req.end(data);
  });
}

/**
 * Counts the tokens of `text` with the upstream's `/tokenize` (vLLM: `{count}`; llama.cpp: `{tokens}`). Returns
 * undefined when the upstream has no such route or answers something else (the caller then estimates); throws on
 * network failures and timeouts.
 */
export async function tokenizeText(endpoint: Endpoint, model: string, text: string, timeoutMs: number): Promise<number | undefined> {
  const r = await postJson(endpoint, "/tokenize", { model, prompt: text, content: text, add_special_tokens: false }, timeoutMs);
  if (r.status !== 200 || !r.json || typeof r.json !== "object") return undefined;
  const o = r.json as { count?: unknown; tokens?: unknown };
  if (typeof o.count === "number" && Number.isInteger(o.count) && o.count >= 0) return o.count;
  if (Array.isArray(o.tokens)) return o.tokens.length;
  return undefined;
}

/** A non-streamed chat completion (titles); throws with the upstream's message on failure, or when `signal` aborts. */
export async function completeChat(endpoint: Endpoint, req: { model: string; messages: Array<{ role: string; content: string }>; maxTokens: number; temperature: number }, timeoutMs: number, signal?: AbortSignal): Promise<{ text: string; usage: Usage | undefined }> {
  const r = await postJson(endpoint, "/v1/chat/completions", {
    model: req.model, messages: req.messages, max_tokens: req.maxTokens, temperature: req.temperature, stream: false,
  }, timeoutMs, signal);
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${upstreamErrorMessage(r.text)}`);
  const o = r.json as { choices?: Array<{ message?: { content?: unknown } }>; usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } } | undefined;
  const content = o?.choices?.[0]?.message?.content;
  if (typeof content !== "string") throw new Error("the completion has no message content");
  const u = o?.usage;
  const usage = u && typeof u.prompt_tokens === "number" && typeof u.completion_tokens === "number"
    ? { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens } : undefined;
  return { text: content, usage };
}
