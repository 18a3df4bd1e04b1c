/**
 * The OpenAI-compatible door of chat-router (issue 22): `GET /v1/models` and `POST /v1/chat/completions`, plain HTTP
 * routes on the API port (the gateway routes `/v1/*` here). Authentication, bodies and errors are the kit's
 * (packages/kit/src/openai-http.ts); the reply itself is ChatEngine.complete — the same rate limit, stream lease,
 * hold, replica choice, breaker, retries, wake-up wait, cancellation and billing as SendMessage.
 */
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import type { Model } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { FinishReason, type ReplyError, type ReplyFinished } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import {
  authenticateOpenAI, badRequest, modelNotFound, OpenAIError, OUTBOX_INSERT, outboxValuesSql, readJsonBody, sendJson, serveOpenAI, type CatalogCache, type HttpContext,
  type NodeServerRequest, type NodeServerResponse, type OutboxRow,
} from "@luna/kit";
import type { ChatEngine, ReplyStream } from "../chat/engine.js";
import type { Conversations } from "../chat/conversations.js";
import type { ChatMessage } from "../domain/prompt.js";
import { WARM_UP_TIMEOUT } from "../chat/reply-run.js";

export interface OpenAIRoutesDeps {
  engine: Pick<ChatEngine, "complete" | "send">;
  /** For the `luna` extension that stores the exchange as a conversation. */
  conversations: Pick<Conversations, "create">;
  /** CHAT_MAX_MESSAGE_CHARS / CHAT_MAX_SYSTEM_PROMPT_CHARS: what a stored message and system prompt may hold. */
  maxMessageChars: number;
  maxSystemPromptChars: number;
  catalog: Pick<CatalogCache, "getModel" | "listModels" | "listWorkflows" | "loaded">;
  /** Enqueues a stateless reply's usage event (the outbox), then wakes the relay. */
  recordUsage(event: OutboxRow | undefined): Promise<boolean>;
  maxBodyBytes: number;
  /** Most messages in one request. */
  maxMessages: number;
  log: { error(obj: object, msg?: string): void };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const ROLES: Record<string, ChatMessage["role"]> = { system: "system", developer: "system", user: "user", assistant: "assistant" };

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

/** A message's text: a string, or text parts (`[{type: "text", text}]`); images and audio are not supported. */
function contentOf(raw: unknown, i: number): string {
  if (typeof raw === "string") return raw;
  if (raw === null || raw === undefined) return "";
  if (!Array.isArray(raw)) throw badRequest(`messages[${i}].content`, "must be a string or an array of text parts");
  return raw.map((part: unknown, j) => {
    const p = part as { type?: unknown; text?: unknown };
    if (p?.type !== "text" || typeof p.text !== "string") throw badRequest(`messages[${i}].content[${j}]`, "only text parts are supported");
    return p.text;
  }).join("");
}

/** The validated request (OpenAI's field names; unknown fields are ignored, as OpenAI-compatible servers do). */
export function parseChatRequest(body: Record<string, unknown>, maxMessages: number) {
  if (typeof body.model !== "string" || body.model === "") throw badRequest("model", "is required");
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw badRequest("messages", "must be a non-empty array");
  if (body.messages.length > maxMessages) throw badRequest("messages", `at most ${maxMessages} messages`);
  const messages: ChatMessage[] = body.messages.map((m: unknown, i) => {
    const msg = m as { role?: unknown; content?: unknown };
    if (typeof msg !== "object" || msg === null) throw badRequest(`messages[${i}]`, "must be an object");
    const role = typeof msg.role === "string" ? ROLES[msg.role] : undefined;
    if (!role) throw badRequest(`messages[${i}].role`, "must be system, developer, user or assistant");
    return { role, content: contentOf(msg.content, i) };
  });
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw badRequest("n", "only n=1 is supported");
  const max = body.max_completion_tokens ?? body.max_tokens;
  if (max !== undefined && max !== null && (!isInt(max) || max < 1)) {
    throw badRequest(body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens", "must be a positive integer");
  }
  const sampling: Record<string, unknown> = {};
  const num = (name: string, lo: number, hi: number) => {
    const v = body[name];
    if (v === undefined || v === null) return;
    if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi) throw badRequest(name, `must be a number from ${lo} to ${hi}`);
    sampling[name] = v;
  };
  num("temperature", 0, 2);
  num("top_p", 0, 1);
  num("presence_penalty", -2, 2);
  num("frequency_penalty", -2, 2);
  if (body.seed !== undefined && body.seed !== null) {
    if (!isInt(body.seed)) throw badRequest("seed", "must be an integer");
    sampling.seed = body.seed;
  }
  if (body.stop !== undefined && body.stop !== null) {
    const stop = typeof body.stop === "string" ? [body.stop] : body.stop;
    if (!Array.isArray(stop) || stop.length > 4 || stop.some((s) => typeof s !== "string" || s === "")) {
      throw badRequest("stop", "must be a string or up to 4 non-empty strings");
    }
    sampling.stop = stop;
  }
  if (body.stream !== undefined && body.stream !== null && typeof body.stream !== "boolean") throw badRequest("stream", "must be a boolean");
  const so = body.stream_options as { include_usage?: unknown } | undefined | null;
  if (so !== undefined && so !== null && (typeof so !== "object" || (so.include_usage !== undefined && typeof so.include_usage !== "boolean"))) {
    throw badRequest("stream_options", "must be an object with a boolean include_usage");
  }
  if (Array.isArray(body.tools) && body.tools.length > 0) throw badRequest("tools", "tool calls are not supported");
  // Luna's extension: `"luna": {"store": true}` keeps the exchange as a new conversation (the request then holds
  // optional system messages and one user message); `"luna": {"conversation_id": "<id>"}` sends the last user message
  // to that conversation, which answers from its own stored history and model.
  let store: { conversationId?: string } | undefined;
  if (body.luna !== undefined && body.luna !== null) {
    const l = body.luna as { store?: unknown; conversation_id?: unknown };
    if (typeof l !== "object" || Array.isArray(l)) throw badRequest("luna", "must be an object");
    if (l.store !== undefined && typeof l.store !== "boolean") throw badRequest("luna.store", "must be a boolean");
    if (l.conversation_id !== undefined && (typeof l.conversation_id !== "string" || !UUID.test(l.conversation_id))) {
      throw badRequest("luna.conversation_id", "must be a conversation id");
    }
    if (typeof l.conversation_id === "string") store = { conversationId: l.conversation_id };
    else if (l.store === true) store = {};
  }
  if (store) {
    const last = messages[messages.length - 1]!;
    if (last.role !== "user") throw badRequest(`messages[${messages.length - 1}].role`, "the last message must be the user's (luna extension)");
    if (store.conversationId === undefined && messages.slice(0, -1).some((m) => m.role !== "system")) {
      throw badRequest("messages", "to store a new conversation, send system messages and one user message (luna.store)");
    }
  }
  return {
    store,
    model: body.model, messages, maxOutputTokens: isInt(max) ? max : 0, sampling,
    stream: body.stream === true, includeUsage: so?.include_usage === true,
  };
}

/**
 * The catalog in OpenAI's shape: the text models (for /v1/chat/completions) and the image workflows (the `model` of
 * /v1/images/generations), with Luna's prices and limits as extra fields. Disabled ones are not listed.
 */
export function modelsList(catalog: OpenAIRoutesDeps["catalog"]) {
  const created = (t: { seconds: bigint } | undefined) => Math.floor(Number(t?.seconds ?? 0n));
  const text = catalog.listModels(ModelKind.TEXT).filter((m) => m.status !== ModelStatus.DISABLED).map((m: Model) => ({
    id: m.id, object: "model", created: created(m.updatedAt), owned_by: "luna",
    luna: {
      kind: "text", display_name: m.displayName, context_window: m.contextWindow, max_output_tokens: m.maxOutputTokens,
      input_credits_per_1k_tokens: (m.prices?.inputPer1kTokens ?? 0n).toString(),
      output_credits_per_1k_tokens: (m.prices?.outputPer1kTokens ?? 0n).toString(),
    },
  }));
  const images = catalog.listWorkflows().flatMap((c) => (c.workflow && c.workflow.status !== ModelStatus.DISABLED ? [c.workflow] : [])).map((w) => ({
    id: w.id, object: "model", created: created(w.updatedAt), owned_by: "luna",
    luna: {
      kind: "image", display_name: w.displayName, credits_per_image: w.pricePerImage.toString(),
      sizes: (w.parameters?.sizes ?? []).map((z) => `${z.width}x${z.height}`), max_images: w.parameters?.maxImages ?? 1,
    },
  }));
  return { object: "list", data: [...text, ...images] };
}

function finishReasonOf(f: ReplyFinished): string {
  return f.finishReason === FinishReason.LENGTH ? "length" : "stop";
}

function usageOf(f: ReplyFinished | ReplyError) {
  const prompt = Number(f.promptTokens);
  const completion = Number(f.completionTokens);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** A reply that failed: the status its cause deserves. */
function replyFailure(e: ReplyError): OpenAIError {
  if (e.code === WARM_UP_TIMEOUT || e.code === "upstream_unavailable") return new OpenAIError(503, e.message, "server_error", "model_unavailable", null, { "retry-after": "5" });
  if (e.code === "context_length_exceeded") return new OpenAIError(400, e.message, "invalid_request_error", "context_length_exceeded", "messages");
  if (e.code === "upstream_timeout") return new OpenAIError(504, e.message, "server_error", "timeout");
  return new OpenAIError(502, e.message, "server_error", e.code || "upstream_error");
}

/** The plain HTTP handler for `/v1/models` and `/v1/chat/completions`. */
export function openAIRoutes(deps: OpenAIRoutesDeps): (req: NodeServerRequest, res: NodeServerResponse, ctx: HttpContext) => boolean {
  return (req, res, ctx) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/v1/models") {
      return serveOpenAI(res, async () => {
        if (req.method !== "GET") throw new OpenAIError(405, "use GET", "invalid_request_error", "method_not_allowed");
        await authenticateOpenAI(req, ctx.verifier);
        if (!deps.catalog.loaded) throw new OpenAIError(503, "the model catalog is not loaded yet; try again shortly", "server_error", "catalog_unavailable");
        sendJson(res, 200, modelsList(deps.catalog));
      }, deps.log);
    }
    if (path !== "/v1/chat/completions") return false;
    return serveOpenAI(res, async () => {
      const startedAt = performance.now();
      if (req.method !== "POST") throw new OpenAIError(405, "use POST", "invalid_request_error", "method_not_allowed");
      const principal = await authenticateOpenAI(req, ctx.verifier);
      const r = parseChatRequest(await readJsonBody(req, deps.maxBodyBytes), deps.maxMessages);
      if (!deps.catalog.loaded) throw new OpenAIError(503, "the model catalog is not loaded yet; try again shortly", "server_error", "catalog_unavailable");
      const model = deps.catalog.getModel(r.model);
      if (!model || model.kind !== ModelKind.TEXT) throw modelNotFound(r.model);
      let id = `chatcmpl-${randomUUID()}`;
      const created = Math.floor(Date.now() / 1000);
      let stream: ReplyStream;
      let extra: Record<string, unknown> = {};
      if (r.store) {
        // Stored: SendMessage's own path (the conversation's history and model; sampling fields do not apply).
        const text = r.messages[r.messages.length - 1]!.content;
        if ([...text].length > deps.maxMessageChars) throw badRequest(`messages[${r.messages.length - 1}].content`, `at most ${deps.maxMessageChars} characters`);
        let conversationId = r.store.conversationId;
        if (conversationId === undefined) {
          const system = r.messages.filter((m) => m.role === "system").map((m) => m.content).join("\n\n");
          if ([...system].length > deps.maxSystemPromptChars) throw badRequest("messages", `system messages: at most ${deps.maxSystemPromptChars} characters`);
          conversationId = (await deps.conversations.create(principal, { modelId: model.id, title: "", systemPrompt: system })).id;
        }
        stream = await deps.engine.send(principal, { conversationId, text, clientMessageId: randomUUID(), maxOutputTokens: r.maxOutputTokens }, startedAt);
        id = `chatcmpl-${stream.started.assistantMessageId}`;
        extra = { conversation_id: conversationId, message_id: stream.started.assistantMessageId };
      } else {
        stream = await deps.engine.complete(principal, {
          id, model, messages: r.messages, maxOutputTokens: r.maxOutputTokens, sampling: r.sampling, recordUsage: deps.recordUsage,
        }, startedAt);
      }
      // The client going away stops the reply (after CHAT_DISCONNECT_GRACE); what was produced is billed.
      res.on("close", () => stream.close());
      const modelId = stream.started.modelId || model.id;
      if (r.stream) await streamReply(res, stream, { id, created, model: modelId, includeUsage: r.includeUsage, extra });
      else await wholeReply(res, stream, { id, created, model: modelId, extra });
    }, deps.log);
  };
}

async function wholeReply(res: NodeServerResponse, stream: ReplyStream, c: { id: string; created: number; model: string; extra: Record<string, unknown> }): Promise<void> {
  let text = "";
  for (;;) {
    const ev = await stream.next();
    if (!ev) throw new OpenAIError(502, "the reply ended unexpectedly", "server_error");
    if (ev.case === "delta") text += ev.value.text;
    else if (ev.case === "error") throw replyFailure(ev.value);
    else if (ev.case === "finished") {
      const f = ev.value;
      sendJson(res, 200, {
        id: c.id, object: "chat.completion", created: c.created, model: c.model,
        choices: [{ index: 0, message: { role: "assistant", content: text, refusal: null }, finish_reason: finishReasonOf(f), logprobs: null }],
        usage: usageOf(f),
        luna: { credits_charged: f.creditsCharged.toString(), balance_after: f.balanceAfter.toString(), ...c.extra },
      });
      return;
    }
  }
}

async function streamReply(res: NodeServerResponse, stream: ReplyStream,
  c: { id: string; created: number; model: string; includeUsage: boolean; extra: Record<string, unknown> }): Promise<void> {
  const w = res as ServerResponse;
  w.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" });
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    w.write(`data: ${JSON.stringify({ id: c.id, object: "chat.completion.chunk", created: c.created, model: c.model, choices, ...extra })}\n\n`);
  chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null, logprobs: null }]);
  for (;;) {
    const ev = await stream.next();
    if (!ev) {
      w.end(); // the client left
      return;
    }
    if (ev.case === "waiting") {
      w.write(": waiting for the model to wake up\n\n"); // an SSE comment: keeps the connection alive
    } else if (ev.case === "delta") {
      chunk([{ index: 0, delta: { content: ev.value.text }, finish_reason: null, logprobs: null }]);
    } else if (ev.case === "error") {
      const e = replyFailure(ev.value);
      w.cork(); // the last events and the end of the body in one socket write (end() uncorks)
      w.write(`data: ${JSON.stringify({ error: { message: e.message, type: e.type, code: e.code, param: e.param } })}\n\n`);
      w.end();
      return;
    } else if (ev.case === "finished") {
      const f = ev.value;
      w.cork(); // the last events and the end of the body in one socket write (end() uncorks)
      chunk([{ index: 0, delta: {}, finish_reason: finishReasonOf(f), logprobs: null }]);
      if (c.includeUsage) {
        chunk([], { usage: usageOf(f), luna: { credits_charged: f.creditsCharged.toString(), balance_after: f.balanceAfter.toString(), ...c.extra } });
      }
      w.write("data: [DONE]\n\n");
      w.end();
      return;
    }
  }
}

/** Writes a stateless reply's usage event into the outbox (what ChatStore.finishReply does for a stored reply). */
export function outboxUsageRecorder(pool: { query(q: { text: string; values: unknown[] }): Promise<unknown> }) {
  return async (event: OutboxRow | undefined): Promise<boolean> => {
    if (!event) return true;
    await pool.query({ text: `${OUTBOX_INSERT} VALUES (${outboxValuesSql(1)})`, values: [event.id, event.subject, event.payload, event.headers] });
    return true;
  };
}
