/**
 * The HTTP surface of the simulator (node:http only): vLLM's OpenAI-compatible routes plus the `/_sim/*` control
 * endpoints. Routing is a switch on the path; every failure is answered with a JSON error, never a crash.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { SimConfigError } from "./config.js";
import type { FinishResult, SequenceSink, Sequence, Usage } from "./engine.js";
import {
  ApiError,
  badRequest,
  modelNotFound,
  parseChatRequest,
  parseCompletionRequest,
  parseJsonObject,
  parseTokenizeRequest,
} from "./requests.js";
import type { Simulator } from "./sim.js";
import { replySeed } from "./textgen.js";
import { renderChatTemplate, tokenize, tokenizePieces } from "./tokenizer.js";

const JSON_TYPE = "application/json";

/** Error `type` names vLLM uses per status. */
function errorType(status: number): string {
  switch (status) {
    case 400: return "BadRequestError";
    case 401: return "UnauthorizedError";
    case 404: return "NotFoundError";
    case 413: return "RequestEntityTooLargeError";
    case 429: return "TooManyRequestsError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

function send(res: ServerResponse, status: number, body: string, contentType = JSON_TYPE): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

function sendError(res: ServerResponse, err: ApiError): void {
  send(res, err.status, err.body());
}

/** Reads the request body as UTF-8, refusing more than `limit` bytes with 413. */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    let ended = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(new ApiError(413, `Request body exceeds ${limit} bytes`, errorType(413)));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      ended = true;
      if (!failed) resolve(Buffer.concat(chunks).toString("utf8"));
    });
    const fail = (err: Error) => {
      if (failed || ended) return;
      failed = true;
      reject(err);
    };
    req.on("error", fail);
    req.on("close", () => fail(new Error("client closed the connection while sending the request")));
  });
}

/** The pieces of one streaming format (chat chunks or text-completion chunks), pre-rendered per request so each
 * token costs one `JSON.stringify` of its text and nothing else. */
interface StreamFormat {
  /** Sent once when the first token is ready (chat's role chunk), or "". */
  first: string;
  token(text: string): string;
  final(text: string, finishReason: string, stopReason: string | null): string;
  usage(u: Usage): string;
}

function usageJson(u: Usage): string {
  return `{"prompt_tokens":${u.promptTokens},"total_tokens":${u.promptTokens + u.completionTokens},` +
    `"completion_tokens":${u.completionTokens},"prompt_tokens_details":{"cached_tokens":${u.cachedTokens}}}`;
}

function chatStreamFormat(id: string, model: string, created: number): StreamFormat {
  const head = `{"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)},`;
  const choice = `data: ${head}"choices":[{"index":0,"delta":`;
  return {
    first: `${choice}{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n`,
    token: (text) => `${choice}{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":null}]}\n\n`,
    final: (text, reason, stop) =>
      `${choice}{"content":${JSON.stringify(text)}},"logprobs":null,"finish_reason":"${reason}",` +
      `"stop_reason":${JSON.stringify(stop)}}]}\n\n`,
    usage: (u) => `data: ${head}"choices":[],"usage":${usageJson(u)}}\n\n`,
  };
}

function completionStreamFormat(id: string, model: string, created: number): StreamFormat {
  const head = `{"id":"${id}","object":"text_completion","created":${created},"model":${JSON.stringify(model)},`;
  const choice = `data: ${head}"choices":[{"index":0,"text":`;
  return {
    first: "",
    token: (text) => `${choice}${JSON.stringify(text)},"logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n`,
    final: (text, reason, stop) =>
      `${choice}${JSON.stringify(text)},"logprobs":null,"finish_reason":"${reason}",` +
      `"stop_reason":${JSON.stringify(stop)}}]}\n\n`,
    usage: (u) => `data: ${head}"choices":[],"usage":${usageJson(u)}}\n\n`,
  };
}

/** Server-sent events writer. Writes made in the same tick are corked into one socket write. */
class StreamSink implements SequenceSink {
  seq: Sequence | undefined;
  /** True once the response is complete or deliberately dropped, so a later 'close' is not a client abort. */
  done = false;
  private started = false;
  private corked = false;
  private readonly uncork = () => {
    if (!this.corked) return;
    this.corked = false;
    this.res.uncork();
  };
  private readonly onDrain = () => this.seq?.resume();

  constructor(
    private readonly res: ServerResponse,
    private readonly format: StreamFormat,
    private readonly includeUsage: boolean,
  ) {}

  private write(s: string): boolean {
    if (!this.corked) {
      this.corked = true;
      this.res.cork();
      process.nextTick(this.uncork);
    }
    return this.res.write(s);
  }

  private ensureStarted(): void {
    if (this.started) return;
    this.started = true;
    if (this.format.first) this.write(this.format.first);
  }

  delta(text: string): boolean {
    this.ensureStarted();
    if (text === "") return !this.res.writableNeedDrain;
    const ok = this.write(this.format.token(text));
    if (!ok) this.res.once("drain", this.onDrain);
    return ok;
  }

  finish(r: FinishResult): void {
    this.ensureStarted();
    this.write(this.format.final(r.text, r.finishReason, r.stopReason));
    if (this.includeUsage) this.write(this.format.usage(r.usage));
    this.end();
  }

  error(message: string): void {
    // vLLM reports a failure after streaming began as an error event followed by the normal terminator.
    this.write(`data: ${new ApiError(500, message, "InternalServerError").body()}\n\n`);
    this.end();
  }

  disconnect(): void {
    this.done = true;
    // Deliver the tokens already written, then close the connection without the chunked terminator or [DONE],
    // as when a server process dies mid-reply.
    this.uncork();
    const socket = this.res.socket;
    if (socket) socket.destroySoon();
    else this.res.destroy();
  }

  private end(): void {
    this.done = true;
    this.write("data: [DONE]\n\n");
    this.res.end();
  }
}

/** Collects the whole reply and answers with one JSON object. */
class JsonSink implements SequenceSink {
  done = false;
  private readonly parts: string[] = [];

  constructor(
    private readonly res: ServerResponse,
    private readonly render: (text: string, r: FinishResult) => string,
  ) {}

  delta(text: string): boolean {
    if (text) this.parts.push(text);
    return true;
  }

  finish(r: FinishResult): void {
    this.done = true;
    this.parts.push(r.text);
    send(this.res, 200, this.render(this.parts.join(""), r));
  }

  error(message: string): void {
    this.done = true;
    sendError(this.res, new ApiError(500, message, "InternalServerError"));
  }

  disconnect(): void {
    this.done = true;
    this.res.destroy();
  }
}

/** Builds the request handler for a simulator. */
export function createHandler(sim: Simulator): (req: IncomingMessage, res: ServerResponse) => void {
  const opts = sim.options;
  const created = Math.floor(Date.now() / 1000);
  const defaultModel = opts.models[0]!.name;

  const engineFor = (model: string | undefined) => {
    const name = model ?? defaultModel;
    const engine = sim.engines.get(name);
    if (!engine) throw modelNotFound(name);
    return engine;
  };

  async function generate(kind: "chat" | "completions", req: IncomingMessage, res: ServerResponse): Promise<void> {
    sim.countRequest();
    let prepared;
    try {
      const body = parseJsonObject(await readBody(req, opts.maxBodyBytes));
      prepared = kind === "chat" ? prepareChat(body) : prepareCompletion(body);
    } catch (err) {
      sim.countRejected();
      throw err;
    }
    const { engine, promptIds, promptText, p } = prepared;

    // Context window: vLLM rejects prompt + max_tokens beyond max_model_len; without max_tokens the reply may use
    // whatever the prompt leaves.
    const limit = engine.maxModelLen;
    let maxTokens = p.maxTokens;
    const promptLen = promptIds.length;
    if (maxTokens === undefined) {
      if (promptLen >= limit) {
        sim.countRejected();
        throw badRequest(`This model's maximum context length is ${limit} tokens. However, your request has ` +
          `${promptLen} input tokens. Please reduce the length of the input messages.`);
      }
      maxTokens = limit - promptLen;
    } else if (promptLen + maxTokens > limit) {
      sim.countRejected();
      throw badRequest(`This model's maximum context length is ${limit} tokens. However, you requested ` +
        `${promptLen + maxTokens} tokens (${promptLen} in the messages, ${maxTokens} in the completion). ` +
        `Please reduce the length of the messages or completion.`);
    }

    const fault = sim.planFault();
    if (fault?.kind === "error") {
      sim.countInjectedHttpError();
      throw new ApiError(fault.status, "Simulated engine error (sim-vllm fault injection)", errorType(fault.status));
    }
    if (res.destroyed) return; // the client left while we read the body

    const seed = textSeed(engine.model, promptText, p.temperature, p.seed);
    const script = sim.scriptedReply(prepared.lastUserText);

    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
    const now = Math.floor(Date.now() / 1000);
    let sink: StreamSink | JsonSink;
    if (p.stream) {
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "x-request-id": id });
      res.flushHeaders(); // vLLM answers 200 as soon as the request is accepted, before prefill
      sink = new StreamSink(res, kind === "chat" ? chatStreamFormat(id, engine.model, now)
        : completionStreamFormat(id, engine.model, now), p.includeUsage);
    } else {
      sink = new JsonSink(res, kind === "chat" ? renderChatCompletion(id, engine.model, now)
        : renderCompletion(id, engine.model, now));
    }
    const seq = engine.submit({
      id,
      endpoint: kind,
      stream: p.stream,
      promptIds,
      maxTokens,
      minTokens: p.minTokens,
      ignoreEos: p.ignoreEos,
      stop: p.stop,
      includeStopStrInOutput: p.includeStopStrInOutput,
      seed,
      ...(script !== undefined ? { script } : {}),
      fault,
      sink,
    });
    if (sink instanceof StreamSink) sink.seq = seq;
    // A client that goes away aborts the request and frees its slot, as in vLLM.
    res.on("close", () => {
      if (!sink.done) seq.abort();
    });
  }

  function prepareChat(body: Record<string, unknown>) {
    const p = parseChatRequest(body);
    const engine = engineFor(p.model);
    const promptText = renderChatTemplate(p.messages);
    const lastUserText = p.messages.findLast((m) => m.role === "user")?.content ?? "";
    return { engine, promptText, promptIds: tokenize(promptText), p, lastUserText };
  }

  function prepareCompletion(body: Record<string, unknown>) {
    const p = parseCompletionRequest(body);
    const engine = engineFor(p.model);
    const promptText = typeof p.prompt === "string" ? p.prompt : p.prompt.join(",");
    return { engine, promptText, promptIds: typeof p.prompt === "string" ? tokenize(p.prompt) : p.prompt, p, lastUserText: promptText };
  }

  async function tokenizeRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t = parseTokenizeRequest(parseJsonObject(await readBody(req, opts.maxBodyBytes)));
    const engine = engineFor(t.model);
    const text = t.messages ? renderChatTemplate(t.messages, t.addGenerationPrompt) : t.prompt!;
    const pieces = tokenizePieces(text);
    const tokens = tokenize(text);
    send(res, 200, JSON.stringify({ count: tokens.length, max_model_len: engine.maxModelLen, tokens,
      token_strs: t.returnTokenStrs ? pieces : null }));
  }

  function modelsRoute(res: ServerResponse): void {
    send(res, 200, JSON.stringify({
      object: "list",
      data: opts.models.map((m) => ({
        id: m.name, object: "model", created, owned_by: "vllm", root: m.name, parent: null,
        max_model_len: m.maxModelLen,
        permission: [{ id: `modelperm-${m.name}`, object: "model_permission", created, allow_create_engine: false,
          allow_sampling: true, allow_logprobs: true, allow_search_indices: false, allow_view: true,
          allow_fine_tuning: false, organization: "*", group: null, is_blocking: false }],
      })),
    }));
  }

  async function faultsRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === "GET") {
      send(res, 200, JSON.stringify(sim.faults));
      return;
    }
    const body = parseJsonObject(await readBody(req, opts.maxBodyBytes));
    try {
      send(res, 200, JSON.stringify(sim.setFaults(body)));
    } catch (err) {
      if (err instanceof SimConfigError) throw badRequest(err.message);
      throw err;
    }
  }

  /** GET: the cold-start state; POST `{"ms"?: n}`: start a cold start now (default: the configured length). */
  async function coldStartRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === "POST") {
      const body = parseJsonObject(await readBody(req, opts.maxBodyBytes));
      const keys = Object.keys(body).filter((k) => k !== "ms");
      if (keys.length > 0) throw badRequest(`unknown field "${keys[0]}" (known: ms)`);
      if (body.ms !== undefined && !(Number.isSafeInteger(body.ms) && (body.ms as number) >= 0)) throw badRequest("ms must be a non-negative integer");
      sim.coldStart(body.ms as number | undefined);
    }
    send(res, 200, JSON.stringify({ loading: sim.loading, readyAt: sim.readyAt, remainingMs: Math.max(0, sim.readyAt - Date.now()),
      coldStartMs: opts.coldStartMs }));
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = req.method ?? "GET";

    // Cold-start mode: the model is still loading, so only the control routes answer.
    if (sim.loading && !path.startsWith("/_sim/")) {
      if (path === "/v1/chat/completions" || path === "/v1/completions") sim.countRequest();
      res.setHeader("retry-after", String(Math.max(1, Math.ceil((sim.readyAt - Date.now()) / 1000))));
      sendError(res, new ApiError(503, "The model is loading (simulated cold start)", "ServiceUnavailableError"));
      return;
    }

    // Like vLLM's --api-key: only the OpenAI routes are protected.
    if (opts.apiKey !== undefined && path.startsWith("/v1") && method !== "OPTIONS" &&
        req.headers.authorization !== `Bearer ${opts.apiKey}`) {
      if (path === "/v1/chat/completions" || path === "/v1/completions") {
        sim.countRequest();
        sim.countRejected();
      }
      send(res, 401, JSON.stringify({ error: "Unauthorized" }));
      return;
    }

    const allow = (methods: string): boolean => {
      if (methods.split(",").includes(method)) return true;
      res.setHeader("allow", methods.replaceAll(",", ", "));
      send(res, 405, JSON.stringify({ detail: "Method Not Allowed" }));
      return false;
    };

    switch (path) {
      case "/v1/chat/completions":
        if (allow("POST")) await generate("chat", req, res);
        return;
      case "/v1/completions":
        if (allow("POST")) await generate("completions", req, res);
        return;
      case "/v1/models":
        if (allow("GET")) modelsRoute(res);
        return;
      case "/health":
        if (allow("GET")) {
          res.writeHead(sim.faults.unhealthy ? 503 : 200, { "content-length": 0 });
          res.end();
        }
        return;
      case "/version":
        if (allow("GET")) send(res, 200, JSON.stringify({ version: "0.11.0+sim" }));
        return;
      case "/tokenize":
        if (allow("POST")) await tokenizeRoute(req, res);
        return;
      case "/metrics":
        if (allow("GET")) send(res, 200, sim.metricsText(), "text/plain; version=0.0.4; charset=utf-8");
        return;
      case "/_sim/faults":
        if (allow("GET,POST")) await faultsRoute(req, res);
        return;
      case "/_sim/stats":
        if (allow("GET")) send(res, 200, JSON.stringify(sim.stats()));
        return;
      case "/_sim/cold-start":
        if (allow("GET,POST")) await coldStartRoute(req, res);
        return;
      case "/_sim/replies":
        if (allow("GET,POST")) {
          if (method === "POST") {
            const body = parseJsonObject(await readBody(req, opts.maxBodyBytes));
            try {
              sim.setReplies(body.replies);
            } catch (err) {
              if (err instanceof SimConfigError) throw badRequest(err.message);
              throw err;
            }
          }
          send(res, 200, JSON.stringify({ replies: sim.replies }));
        }
        return;
      case "/_sim/reset":
        if (allow("POST")) {
          sim.reset();
          send(res, 200, JSON.stringify({ ok: true }));
        }
        return;
      default:
        send(res, 404, JSON.stringify({ detail: "Not Found" }));
    }
  }

  return (req, res) => {
    route(req, res).catch((err: unknown) => {
      if (res.destroyed) return;
      if (err instanceof ApiError) sendError(res, err);
      else sendError(res, new ApiError(500, `Internal error: ${(err as Error)?.message ?? String(err)}`,
        "InternalServerError"));
    });
  };
}

/**
 * Seed of the reply text. Greedy decoding (temperature 0) is deterministic whatever the seed; with sampling, a seed
 * makes the text repeatable for the same prompt and temperature; without one every call differs.
 */
function textSeed(model: string, prompt: string, temperature: number, seed: number | undefined): number {
  if (temperature === 0) return replySeed(model, prompt, undefined);
  if (seed === undefined) return Math.floor(Math.random() * 2 ** 32);
  const seed32 = Number(BigInt.asUintN(32, BigInt(seed))); // any safe integer, negative ones included
  return replySeed(model, prompt, (seed32 ^ Math.round(temperature * 1000)) >>> 0);
}

function usageObject(u: Usage) {
  return { prompt_tokens: u.promptTokens, total_tokens: u.promptTokens + u.completionTokens,
    completion_tokens: u.completionTokens, prompt_tokens_details: { cached_tokens: u.cachedTokens } };
}

function renderChatCompletion(id: string, model: string, created: number) {
  return (text: string, r: FinishResult) => JSON.stringify({
    id, object: "chat.completion", created, model,
    choices: [{ index: 0, message: { role: "assistant", content: text, refusal: null, tool_calls: [] },
      logprobs: null, finish_reason: r.finishReason, stop_reason: r.stopReason }],
    usage: usageObject(r.usage),
    prompt_logprobs: null,
  });
}

function renderCompletion(id: string, model: string, created: number) {
  return (text: string, r: FinishResult) => JSON.stringify({
    id, object: "text_completion", created, model,
    choices: [{ index: 0, text, logprobs: null, finish_reason: r.finishReason, stop_reason: r.stopReason,
      prompt_logprobs: null }],
    usage: usageObject(r.usage),
  });
}
