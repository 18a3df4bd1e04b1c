/**
 * The chat use cases behind the RPCs: conversations, and the reply streams (send, regenerate, resume, stop).
 *
 * SendMessage's path to the first token is kept short: one statement that inserts the user message with the reply's
 * placeholder and reads the conversation with its history, admission (rate limit + stream lease, one billing call)
 * and the new message's token count all run at once; then the one reserve; then the model. Writes not needed before
 * the first token (checkpoints; the first write also records the hold on the placeholder) run in the background.
 *
 * When this process knows the conversation's history (it created the conversation or stored its latest reply), the
 * reserve joins that first wave too: it is placed for an upper bound of the prompt (the new message's UTF-8 bytes as
 * its tokens), and used only if, once the exact prompt is known, it covers that prompt and grants the full reply
 * budget. Otherwise it is released and the exact reserve follows, as without speculation: the model is never called
 * before a hold covers the worst case, and what is charged is always the actual usage.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Model } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ReplyStarted } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import {
  failedPrecondition,
  invalidArgument,
  isServable,
  notFound,
  unavailable,
  type CatalogCache,
  type Principal,
} from "@luna/kit";
import { sendMessageIds } from "../domain/ids.js";
import { tokenUpperBound } from "../domain/tokens.js";
import { buildPrompt, type ChatMessage, type HistoryMessage } from "../domain/prompt.js";
import type { TokenPrices } from "../domain/pricing.js";
import { previewOf } from "../domain/validate.js";
import type { ConversationRow, HistoryRow, MessageRow } from "../data/store.js";
import { finalFromRow, startedFromRow } from "../server/convert.js";
import type { ReplyEvent, ReplyReader } from "../live/reply.js";
import type { ChatRouterConfig } from "../config.js";
import { ReplyRun, type RunDeps, type RunPlan, type StopReason } from "./reply-run.js";

/** ResumeStream's `offset` beyond the reply's text: OUT_OF_RANGE (the documented answer). */
function offsetPastEnd(offset: number, end: number): ConnectError {
  return new ConnectError(`offset: ${offset} is past the end of the reply (${end} UTF-16 code units)`, Code.OutOfRange);
}
import type { ReplyHold } from "./billing.js";
import type { TokenCounter } from "./tokens.js";
import type { TitleWriter } from "./titles.js";

/** A reply stream as the RPC handlers send it: `started`, then the events, until the final one. */
export interface ReplyStream {
  started: ReplyStarted;
  /** Deltas then the final event; ends after the final event or after close(). */
  next(): Promise<ReplyEvent | undefined>;
  /** The client went away (or the stream is done). */
  close(): void;
}

export interface EngineDeps extends Omit<RunDeps, "onFinal"> {
  config: ChatRouterConfig;
  catalog: Pick<CatalogCache, "getModel" | "loaded">;
  tokens: TokenCounter;
  titles: TitleWriter | undefined;
}

const INT32_MAX = 2_147_483_647;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Conversation facts cached so the hot path can start early: owner and model (they never change), and what the
 * history adds to a prompt when this process knows it (the speculative reserve's basis).
 */
interface ConversationFacts {
  userId: string;
  modelId: string;
  /** The system prompt with its template overhead, in tokens (0 without one). */
  systemTokens: number;
  /**
   * An upper bound of the tokens the history adds to the next prompt (content plus per-message overhead), known when
   * this process created the conversation or stored its latest reply; undefined otherwise (another replica may have
   * added messages, or a reply is being generated).
   */
  historyTokens: number | undefined;
}

/** A reserve placed before the exact prompt was known: the prompt tokens it was sized for, and its outcome. */
interface SpeculativeHold {
  promptTokens: number;
  result: Promise<ReplyHold | undefined>;
}

export class ChatEngine {
  private readonly runs = new Map<string, ReplyRun>();
  private readonly facts = new Map<string, ConversationFacts>();
  private readonly runDeps: RunDeps;
  private closing = false;

  constructor(private readonly deps: EngineDeps) {
    this.runDeps = { ...deps, onFinal: (run, status) => this.onFinal(run, status) };
  }

  // ---- helpers --------------------------------------------------------------------------------------------------

  /**
   * Caches a conversation's facts; `historyTokens`: what its history adds to a prompt when known (0 for a new
   * conversation), undefined when this process cannot know it.
   */
  remember(c: Pick<ConversationRow, "id" | "userId" | "modelId" | "systemPrompt" | "systemPromptTokens">, historyTokens: number | undefined): void {
    const max = this.deps.config.CHAT_CONVERSATION_CACHE_SIZE;
    if (max === 0) return;
    if (this.facts.size >= max && !this.facts.has(c.id)) {
      const oldest = this.facts.keys().next().value;
      if (oldest !== undefined) this.facts.delete(oldest);
    }
    const systemTokens = c.systemPrompt ? c.systemPromptTokens + this.deps.config.CHAT_MESSAGE_OVERHEAD_TOKENS : 0;
    this.facts.set(c.id, { userId: c.userId, modelId: c.modelId, systemTokens, historyTokens });
  }

  forget(conversationId: string): void {
    this.facts.delete(conversationId);
  }

  forgetUser(userId: string): void {
    for (const [id, f] of this.facts) if (f.userId === userId) this.facts.delete(id);
  }

  /** The model of a conversation if it can take a request now; the right error otherwise. */
  servableModel(modelId: string): Model {
    if (!this.deps.catalog.loaded) throw unavailable("the model catalog is not loaded yet; try again shortly");
    const m = this.deps.catalog.getModel(modelId);
    if (!m || m.kind !== ModelKind.TEXT) throw failedPrecondition(`model ${modelId} is no longer offered`);
    if (m.status === ModelStatus.DISABLED) throw failedPrecondition(`model ${modelId} is disabled${m.statusReason ? `: ${m.statusReason}` : ""}`);
    if (!isServable(m.status)) {
      this.deps.metrics.modelRequests.inc({ model: m.id, outcome: "refused" });
      throw unavailable(`model ${modelId} is offline${m.statusReason ? `: ${m.statusReason}` : ""}; try again later`);
    }
    return m;
  }

  private prices(m: Model): TokenPrices {
    return { inputPer1k: m.prices?.inputPer1kTokens ?? 0n, outputPer1k: m.prices?.outputPer1kTokens ?? 0n };
  }

  private historyOf(rows: HistoryRow[]): HistoryMessage[] {
    return rows.map((h) => ({ role: h.role, content: h.content, tokens: h.tokenCount ?? this.deps.tokens.estimate(h.content) }));
  }

  /** The reply budget asked for: the request's, within the model's maximum. */
  private maxOutput(model: Model, requestedMax: number): number {
    const modelMax = model.maxOutputTokens > 0 ? model.maxOutputTokens : Math.max(1, Math.floor(model.contextWindow / 4));
    return requestedMax > 0 ? Math.min(requestedMax, modelMax) : modelMax;
  }

  /** Fits the prompt into the model's window; INVALID_ARGUMENT when the new message alone is too long. */
  private prompt(conv: ConversationRow, model: Model, history: HistoryMessage[], requestedMax: number) {
    const cfg = this.deps.config;
    const p = buildPrompt({
      systemPrompt: conv.systemPrompt,
      systemTokens: conv.systemPromptTokens,
      history,
      contextWindow: model.contextWindow,
      maxOutputTokens: this.maxOutput(model, requestedMax),
      minOutputTokens: cfg.CHAT_MIN_REPLY_TOKENS,
      overhead: { perMessage: cfg.CHAT_MESSAGE_OVERHEAD_TOKENS, perPrompt: cfg.CHAT_PROMPT_OVERHEAD_TOKENS },
    });
    if (!p.ok) {
      throw invalidArgument("text", `is too long for ${model.id}: with the system prompt and a minimal reply it needs about ${p.requiredTokens} tokens, the model's context window is ${p.contextWindow}`);
    }
    return p;
  }

  /**
   * The reserve for an upper bound of the prompt, started with the first wave (see the module comment); undefined
   * when this process does not know the history or the bound leaves no room for a reply.
   */
  private speculate(p: Principal, facts: ConversationFacts | undefined, model: Model | undefined, text: string, requestedMax: number,
    messageId: string): SpeculativeHold | undefined {
    const cfg = this.deps.config;
    if (!cfg.CHAT_SPECULATIVE_RESERVE || !facts || !model || facts.historyTokens === undefined) return undefined;
    // As buildPrompt counts: the fixed part (generation prompt, system prompt, the new message), then the history.
    const fixed = cfg.CHAT_PROMPT_OVERHEAD_TOKENS + facts.systemTokens + tokenUpperBound(text) + cfg.CHAT_MESSAGE_OVERHEAD_TOKENS;
    const room = model.contextWindow - fixed;
    if (room < cfg.CHAT_MIN_REPLY_TOKENS) return undefined;
    const outputTokens = Math.min(this.maxOutput(model, requestedMax), room);
    const promptTokens = Math.min(fixed + facts.historyTokens, model.contextWindow - outputTokens);
    const result = this.deps.billing.reserveReply({
      userId: p.userId, messageId, prices: this.prices(model), promptTokens, outputTokens, minOutputTokens: outputTokens,
      ttlMs: cfg.CHAT_HOLD_TTL, idempotencyKey: `${messageId}/${randomUUID()}`,
    }).catch(() => undefined); // refused or failed: the exact reserve decides (and says why)
    return { promptTokens, result };
  }

  /**
   * The speculative hold if it covers the exact prompt with the full reply budget (then it is what the exact reserve
   * would have placed, or a little more); undefined otherwise (the caller releases it).
   */
  private async useSpeculation(spec: SpeculativeHold, promptTokens: number, outputTokens: number): Promise<ReplyHold | undefined> {
    const hold = await spec.result;
    if (hold && spec.promptTokens >= promptTokens && hold.outputTokens >= outputTokens) {
      this.deps.metrics.speculativeReserves.inc({ outcome: "used" });
      return { ...hold, outputTokens };
    }
    this.deps.metrics.speculativeReserves.inc({ outcome: hold ? "released" : "refused" });
    return undefined;
  }

  /** Releases a speculative hold that is not used (retried; should that fail, billing releases it at its deadline). */
  private async discard(spec: SpeculativeHold): Promise<void> {
    const hold = await spec.result;
    if (hold?.holdId) await this.deps.billing.release(hold.holdId);
  }

  // ---- SendMessage ----------------------------------------------------------------------------------------------

  /** Stores the user's message and starts the reply (or replays it for a retry of the same client message id). */
  async send(p: Principal, req: { conversationId: string; text: string; clientMessageId: string; maxOutputTokens: number }, startedAt: number): Promise<ReplyStream> {
    const cfg = this.deps.config;
    const { store, billing, tokens } = this.deps;
    if (this.closing) throw unavailable("the service is shutting down; try again");
    const ids = sendMessageIds(req.conversationId, req.clientMessageId);
    const cached = this.facts.get(req.conversationId);
    const known = cached && cached.userId === p.userId ? cached : undefined;
    const knownModel = known ? this.deps.catalog.getModel(known.modelId) : undefined;

    // Everything that does not depend on anything else, at once.
    const countP = knownModel ? tokens.count(knownModel.id, req.conversationId, req.text) : undefined;
    countP?.catch(() => undefined);
    let spec = this.speculate(p, known, knownModel, req.text, req.maxOutputTokens, ids.assistantMessageId);
    // A reply is generated from here on: the history is not known again until it is stored.
    if (known) known.historyTokens = undefined;
    const [insertR, admitR] = await Promise.allSettled([
      store.insertSend({
        userId: p.userId, conversationId: req.conversationId, userMessageId: ids.userMessageId, assistantMessageId: ids.assistantMessageId,
        text: req.text, clientMessageId: req.clientMessageId, preview: previewOf(req.text),
      }, cfg.CHAT_HISTORY_MAX_MESSAGES, knownModel?.contextWindow ?? INT32_MAX),
      billing.admit(p, cfg.CHAT_LEASE_TTL),
    ]);
    const leaseId = admitR.status === "fulfilled" ? admitR.value : "";
    const inserted = insertR.status === "fulfilled" && !("conflict" in insertR.value) ? insertR.value : undefined;
    let handedOver = false;
    try {
      if (insertR.status === "rejected") throw insertR.reason;
      if ("conflict" in insertR.value) {
        const conflict = insertR.value.conflict;
        if (conflict === "gone") throw notFound(`conversation ${req.conversationId}`);
        if (conflict === "busy") throw failedPrecondition("a reply is already being generated in this conversation; wait for it or stop it");
        // A retry of a message already stored: stream its reply instead of generating another.
        return await this.replaySend(p, ids, req.text);
      }
      const ctx = insertR.value;
      this.remember(ctx.conversation, undefined);
      if (admitR.status === "rejected") throw admitR.reason;

      const model = this.servableModel(ctx.conversation.modelId);
      const userTokens = await (knownModel?.id === model.id && countP ? countP : tokens.count(model.id, req.conversationId, req.text));
      const preparedAt = performance.now();
      this.deps.metrics.ttftPhase.observe({ phase: "prepare" }, (preparedAt - startedAt) / 1000);
      const history = this.historyOf(ctx.history);
      history.push({ role: "user", content: req.text, tokens: userTokens });
      const prompt = this.prompt(ctx.conversation, model, history, req.maxOutputTokens);
      const prices = this.prices(model);
      let hold = spec && knownModel === model ? await this.useSpeculation(spec, prompt.promptTokens, prompt.outputTokens) : undefined;
      if (hold) spec = undefined;
      else {
        // The speculative hold (if any) is released while the exact one is placed.
        const releasing = spec ? this.discard(spec) : undefined;
        spec = undefined;
        try {
          hold = await billing.reserveReply({
            userId: p.userId, messageId: ids.assistantMessageId, prices, promptTokens: prompt.promptTokens, outputTokens: prompt.outputTokens,
            minOutputTokens: cfg.CHAT_MIN_REPLY_TOKENS, ttlMs: cfg.CHAT_HOLD_TTL,
          });
        } finally {
          await releasing;
        }
      }
      handedOver = true;
      const heldAt = performance.now();
      this.deps.metrics.ttftPhase.observe({ phase: "reserve" }, (heldAt - preparedAt) / 1000);
      return this.begin({
        userId: p.userId, conversationId: req.conversationId, modelId: model.id, userMessageId: ids.userMessageId,
        assistantMessageId: ids.assistantMessageId, messages: prompt.messages, promptTokens: prompt.promptTokens, prices, hold, leaseId, startedAt, heldAt,
      }, { userTokens, titleFrom: ctx.conversation.title === "" ? req.text : undefined, historyTokens: this.historyTokensOf(ctx.history, userTokens) });
    } finally {
      if (spec) await this.discard(spec);
      if (!handedOver) {
        if (leaseId) billing.releaseStreamLease(leaseId);
        if (inserted) {
          await store.undoSend({ conversationId: req.conversationId, userMessageId: ids.userMessageId, assistantMessageId: ids.assistantMessageId,
            previousActivity: inserted.previousActivity, previousPreview: inserted.previousPreview })
            .catch((err: unknown) => this.deps.log.error({ err, messageId: ids.userMessageId }, "could not undo a rejected message"));
        }
      }
    }
  }

  /** A SendMessage retry: the same text streams the stored reply; different text under the same id is rejected. */
  private async replaySend(p: Principal, ids: { userMessageId: string; assistantMessageId: string }, text: string): Promise<ReplyStream> {
    const stored = await this.deps.store.getMessage(ids.userMessageId, p.userId);
    if (!stored) throw failedPrecondition("client_message_id was already used in another conversation's message; use a new one");
    if (stored.message.content !== text) {
      throw failedPrecondition("client_message_id was already used for a different message; use a new id for a new message");
    }
    const reply = await this.deps.store.getMessage(ids.assistantMessageId, p.userId);
    if (!reply) throw failedPrecondition("the reply to this message no longer exists; send it with a new client_message_id");
    return this.follow(reply.message, p.userId, 0, true);
  }

  // ---- RegenerateMessage ----------------------------------------------------------------------------------------

  async regenerate(p: Principal, req: { messageId: string; maxOutputTokens: number }, startedAt: number): Promise<ReplyStream> {
    const cfg = this.deps.config;
    const { store, billing, tokens } = this.deps;
    if (this.closing) throw unavailable("the service is shutting down; try again");
    const [loadR, admitR] = await Promise.allSettled([
      store.loadForRegenerate(req.messageId, p.userId, cfg.CHAT_HISTORY_MAX_MESSAGES, INT32_MAX),
      billing.admit(p, cfg.CHAT_LEASE_TTL),
    ]);
    const leaseId = admitR.status === "fulfilled" ? admitR.value : "";
    const assistantMessageId = randomUUID();
    let inserted: { reactivate: string[]; conversationId: string } | undefined;
    let handedOver = false;
    try {
      if (loadR.status === "rejected") throw loadR.reason;
      const ctx = loadR.value;
      if (!ctx) throw notFound(`message ${req.messageId}`);
      const { target, conversation } = ctx;
      if (target.role !== "assistant" || !target.parentId) throw invalidArgument("message_id", "must be an assistant message (a reply)");
      if (ctx.latestUserMessageId !== target.parentId) throw failedPrecondition("only the reply to the newest message can be regenerated");
      if (ctx.busy) throw failedPrecondition("a reply is already being generated in this conversation; wait for it or stop it");
      if (admitR.status === "rejected") throw admitR.reason;
      this.remember(conversation, undefined);
      const model = this.servableModel(conversation.modelId);
      const rows = ctx.history;
      const last = rows[rows.length - 1];
      if (!last || last.id !== target.parentId) throw failedPrecondition("the message this reply answers is no longer in the conversation");
      if (last.tokenCount === null) last.tokenCount = await tokens.count(model.id, conversation.id, last.content);
      const prompt = this.prompt(conversation, model, this.historyOf(rows), req.maxOutputTokens);
      const prices = this.prices(model);

      const ins = await store.insertRegenerate({ conversationId: conversation.id, parentId: target.parentId, assistantMessageId, modelId: model.id });
      if (ins.conflict === "busy") throw failedPrecondition("a reply is already being generated in this conversation; wait for it or stop it");
      if (ins.conflict) throw notFound(`message ${req.messageId}`);
      inserted = { reactivate: ins.deactivated, conversationId: conversation.id };
      const hold = await billing.reserveReply({
        userId: p.userId, messageId: assistantMessageId, prices, promptTokens: prompt.promptTokens, outputTokens: prompt.outputTokens,
        minOutputTokens: cfg.CHAT_MIN_REPLY_TOKENS, ttlMs: cfg.CHAT_HOLD_TTL,
      });
      handedOver = true;
      return this.begin({
        userId: p.userId, conversationId: conversation.id, modelId: model.id, userMessageId: target.parentId, assistantMessageId,
        messages: prompt.messages, promptTokens: prompt.promptTokens, prices, hold, leaseId, startedAt, heldAt: performance.now(),
      }, { userTokens: last.tokenCount });
    } finally {
      if (!handedOver) {
        if (leaseId) billing.releaseStreamLease(leaseId);
        if (inserted) {
          await store.undoRegenerate({ conversationId: inserted.conversationId, assistantMessageId, reactivate: inserted.reactivate })
            .catch((err: unknown) => this.deps.log.error({ err, messageId: assistantMessageId }, "could not undo a rejected regeneration"));
        }
      }
    }
  }

  // ---- EditMessage ---------------------------------------------------------------------------------------------

  /**
   * Replaces the conversation's newest user message with a new version and starts the reply to it: SendMessage's
   * path (one statement stores the version and the placeholder and reads the history before the old version; rate
   * limit and stream lease at once; the hold before the model; the same ReplyRun), and a retry with the same client
   * message id replays the reply. The old version and its replies stay, inactive (store.insertEdit).
   */
  async edit(p: Principal, req: { messageId: string; text: string; clientMessageId: string; maxOutputTokens: number }, startedAt: number): Promise<ReplyStream> {
    const cfg = this.deps.config;
    const { store, billing, tokens } = this.deps;
    if (this.closing) throw unavailable("the service is shutting down; try again");
    const found = await store.getMessage(req.messageId, p.userId);
    if (!found) throw notFound(`message ${req.messageId}`);
    if (found.message.role !== "user") throw invalidArgument("message_id", "must be a user message (to change a reply, regenerate it)");
    const conversationId = found.conversation.id;
    const ids = sendMessageIds(conversationId, req.clientMessageId);
    const knownModel = this.deps.catalog.getModel(found.conversation.modelId);
    const countP = knownModel ? tokens.count(knownModel.id, conversationId, req.text) : undefined;
    countP?.catch(() => undefined);
    // The history changes (the old version leaves it): not known again until a reply is stored.
    this.remember(found.conversation, undefined);
    const [insertR, admitR] = await Promise.allSettled([
      store.insertEdit({
        userId: p.userId, conversationId, oldUserMessageId: found.message.id, userMessageId: ids.userMessageId,
        assistantMessageId: ids.assistantMessageId, text: req.text, clientMessageId: req.clientMessageId, preview: previewOf(req.text),
      }, cfg.CHAT_HISTORY_MAX_MESSAGES, knownModel?.contextWindow ?? INT32_MAX),
      billing.admit(p, cfg.CHAT_LEASE_TTL),
    ]);
    const leaseId = admitR.status === "fulfilled" ? admitR.value : "";
    const inserted = insertR.status === "fulfilled" && !("conflict" in insertR.value) ? insertR.value : undefined;
    let handedOver = false;
    try {
      if (insertR.status === "rejected") throw insertR.reason;
      if ("conflict" in insertR.value) {
        const conflict = insertR.value.conflict;
        if (conflict === "gone") throw notFound(`message ${req.messageId}`);
        if (conflict === "busy") throw failedPrecondition("a reply is still being generated in this conversation; wait for it or stop it before editing");
        // A retry of an edit that went through (so its old version is no longer the newest) replays its reply.
        if (conflict === "stale" && !(await store.getMessage(ids.userMessageId, p.userId))) {
          throw failedPrecondition("only the conversation's newest user message can be edited");
        }
        return await this.replaySend(p, ids, req.text);
      }
      const ctx = insertR.value;
      if (admitR.status === "rejected") throw admitR.reason;
      const model = this.servableModel(ctx.conversation.modelId);
      const userTokens = await (knownModel?.id === model.id && countP ? countP : tokens.count(model.id, conversationId, req.text));
      const history = this.historyOf(ctx.history);
      history.push({ role: "user", content: req.text, tokens: userTokens });
      const prompt = this.prompt(ctx.conversation, model, history, req.maxOutputTokens);
      const prices = this.prices(model);
      const hold = await billing.reserveReply({
        userId: p.userId, messageId: ids.assistantMessageId, prices, promptTokens: prompt.promptTokens, outputTokens: prompt.outputTokens,
        minOutputTokens: cfg.CHAT_MIN_REPLY_TOKENS, ttlMs: cfg.CHAT_HOLD_TTL,
      });
      handedOver = true;
      return this.begin({
        userId: p.userId, conversationId, modelId: model.id, userMessageId: ids.userMessageId, assistantMessageId: ids.assistantMessageId,
        messages: prompt.messages, promptTokens: prompt.promptTokens, prices, hold, leaseId, startedAt, heldAt: performance.now(),
      }, { userTokens, titleFrom: ctx.conversation.title === "" ? req.text : undefined, historyTokens: this.historyTokensOf(ctx.history, userTokens) });
    } finally {
      if (!handedOver) {
        if (leaseId) billing.releaseStreamLease(leaseId);
        if (inserted) {
          await store.undoEdit({ conversationId, userMessageId: ids.userMessageId, assistantMessageId: ids.assistantMessageId,
            previousActivity: inserted.previousActivity, previousPreview: inserted.previousPreview, reactivate: inserted.deactivated })
            .catch((err: unknown) => this.deps.log.error({ err, messageId: ids.userMessageId }, "could not undo a rejected edit"));
        }
      }
    }
  }

  // ---- stateless completions (the OpenAI-compatible API) -------------------------------------------------------

  /**
   * A reply to a history the client sends (`POST /v1/chat/completions`): the same rate limit, stream lease,
   * worst-case hold, replica choice, breaker, retries, wake-up wait, cancellation and billing as SendMessage — the
   * same ReplyRun — but nothing is stored except the usage event. `req.id` (the completion id) is the hold's
   * reference; it is not a UUID, so the sweeper's release of holds without a message leaves it alone, and a hold of a
   * replica that crashed is released at its deadline (CHAT_HOLD_TTL). The whole history must fit the context window
   * (nothing is dropped, as OpenAI does): else INVALID_ARGUMENT on `messages`.
   */
  async complete(p: Principal, req: { id: string; model: Model; messages: ChatMessage[]; maxOutputTokens: number;
    sampling: Record<string, unknown>; recordUsage: NonNullable<RunPlan["stateless"]>["recordUsage"] }, startedAt: number): Promise<ReplyStream> {
    const cfg = this.deps.config;
    const { billing, tokens } = this.deps;
    if (this.closing) throw unavailable("the service is shutting down; try again");
    const model = this.servableModel(req.model.id);
    const text = req.messages.map((m) => m.content).join("\n");
    const [admitR, countR] = await Promise.allSettled([
      billing.admit(p, cfg.CHAT_LEASE_TTL),
      tokens.count(model.id, req.id, text),
    ]);
    const leaseId = admitR.status === "fulfilled" ? admitR.value : "";
    let handedOver = false;
    try {
      if (admitR.status === "rejected") throw admitR.reason;
      const contentTokens = countR.status === "fulfilled" ? countR.value : tokens.estimate(text);
      const promptTokens = cfg.CHAT_PROMPT_OVERHEAD_TOKENS + contentTokens + req.messages.length * cfg.CHAT_MESSAGE_OVERHEAD_TOKENS;
      const room = model.contextWindow - promptTokens;
      const minOutput = Math.min(cfg.CHAT_MIN_REPLY_TOKENS, this.maxOutput(model, req.maxOutputTokens));
      if (room < minOutput) {
        throw invalidArgument("messages", `need about ${promptTokens + minOutput} tokens with a minimal reply; the context window of ${model.id} is ${model.contextWindow}`);
      }
      const outputTokens = Math.min(this.maxOutput(model, req.maxOutputTokens), room);
      const prices = this.prices(model);
      const preparedAt = performance.now();
      this.deps.metrics.ttftPhase.observe({ phase: "prepare" }, (preparedAt - startedAt) / 1000);
      const hold = await billing.reserveReply({
        userId: p.userId, messageId: req.id, prices, promptTokens, outputTokens, minOutputTokens: minOutput, ttlMs: cfg.CHAT_HOLD_TTL,
      });
      handedOver = true;
      const heldAt = performance.now();
      this.deps.metrics.ttftPhase.observe({ phase: "reserve" }, (heldAt - preparedAt) / 1000);
      return this.begin({
        userId: p.userId, conversationId: "", modelId: model.id, userMessageId: "", assistantMessageId: req.id, messages: req.messages,
        promptTokens, prices, hold, leaseId, startedAt, heldAt, sampling: req.sampling, stateless: { recordUsage: req.recordUsage },
      });
    } finally {
      if (!handedOver && leaseId) billing.releaseStreamLease(leaseId);
    }
  }

  // ---- runs -----------------------------------------------------------------------------------------------------

  /** What the history read with the new message adds to the next prompt once the reply is stored, without the reply. */
  private historyTokensOf(rows: HistoryRow[], userTokens: number): number {
    const perMessage = this.deps.config.CHAT_MESSAGE_OVERHEAD_TOKENS;
    let n = userTokens + perMessage;
    for (const h of rows) n += (h.tokenCount ?? this.deps.tokens.estimate(h.content)) + perMessage;
    return n;
  }

  /**
   * `titleFrom`: the first user message, when the conversation still needs a title. `historyTokens`: what the
   * history adds to a prompt before this reply (undefined: unknown), so that the next message can reserve early.
   */
  /**
   * Starts a reply whose hold is placed and streams it from its start. A reply with a message row (`userTokens`
   * given) records its hold there with its run's first write (checkpoint, heartbeat or final state), not with a
   * statement of its own: in every crash window before that the sweeper finds the hold by its reference, the message id.
   */
  private begin(plan: ReplyRun["plan"], opts: { userTokens?: number; titleFrom?: string; historyTokens?: number } = {}): ReplyStream {
    const { hold, assistantMessageId } = plan;
    const holdFacts = opts.userTokens === undefined ? undefined : {
      holdId: hold.holdId, creditsHeld: hold.amount, availableAfterReserve: hold.available, maxOutputTokens: hold.outputTokens,
      promptTokens: plan.promptTokens, userMessageId: plan.userMessageId, userTokens: opts.userTokens,
    };
    const run = new ReplyRun(this.runDeps, holdFacts ? { ...plan, holdFacts } : plan);
    this.runs.set(assistantMessageId, run);
    if (opts.titleFrom !== undefined) this.titleSources.set(assistantMessageId, opts.titleFrom);
    if (opts.historyTokens !== undefined) this.historyBefore.set(assistantMessageId, opts.historyTokens);
    return this.localStream(run.reply.read(0), {
      $typeName: "luna.chat.v1.ReplyStarted", userMessageId: plan.userMessageId, assistantMessageId,
      creditsHeld: hold.amount, maxOutputTokens: hold.outputTokens, modelId: plan.modelId, replayed: false,
    });
  }

  private readonly titleSources = new Map<string, string>();
  private readonly historyBefore = new Map<string, number>();

  private onFinal(run: ReplyRun, status: string): void {
    const id = run.plan.assistantMessageId;
    this.runs.delete(id);
    const before = this.historyBefore.get(id);
    this.historyBefore.delete(id);
    const facts = this.facts.get(run.plan.conversationId);
    if (facts && before !== undefined && run.result?.stored) {
      facts.historyTokens = before + run.result.completionTokens + this.deps.config.CHAT_MESSAGE_OVERHEAD_TOKENS;
    }
    const titleFrom = this.titleSources.get(id);
    this.titleSources.delete(id);
    if (titleFrom !== undefined && this.deps.titles && (status === "complete" || status === "stopped") && run.result?.content) {
      this.deps.titles.schedule({ conversationId: run.plan.conversationId, modelId: run.plan.modelId, userText: titleFrom, replyText: run.result.content });
    }
  }

  /** Replies being generated by this process. */
  activeRuns(): ReplyRun[] {
    return [...this.runs.values()];
  }

  /** Stops every reply of this process and waits until each is billed and stored (shutdown). */
  async shutdown(): Promise<void> {
    this.closing = true;
    const runs = [...this.runs.values()];
    for (const r of runs) r.stop("shutdown");
    await Promise.all(runs.map((r) => r.done));
    await this.deps.titles?.drain();
  }

  stopLocal(messageId: string, reason: StopReason): boolean {
    const run = this.runs.get(messageId);
    if (!run) return false;
    run.stop(reason);
    return true;
  }

  // ---- streams --------------------------------------------------------------------------------------------------

  private localStream(reader: ReplyReader, started: ReplyStarted): ReplyStream {
    return { started, next: () => reader.next(), close: () => reader.close() };
  }

  /**
   * A reply from `offset`: read locally when this process generates it; followed live from the replica that does;
   * else from the database (final, or checkpoints of a reply whose replica stopped answering, until it is final).
   */
  private follow(message: MessageRow, userId: string, offset: number, replayed: boolean): ReplyStream {
    const started = startedFromRow(message, replayed);
    const local = this.runs.get(message.id);
    // The row has the hold only from the run's first write on (begin): this process's own run has it exactly. A reply
    // another replica streams reads 0 held and 0 max tokens until then (at most CHAT_CHECKPOINT_INTERVAL after its
    // start): informational fields no client acts on (the web and CLI clients ignore them; the final event carries
    // the charge and balance), so they are not worth a statement per reply (README: "Credit holds after a crash").
    if (local) return this.localStream(local.reply.read(offset), { ...started, creditsHeld: local.plan.hold.amount, maxOutputTokens: local.plan.hold.outputTokens });
    const ac = new AbortController();
    const it = this.followElsewhere(message, userId, offset, ac.signal);
    return {
      started,
      next: async () => {
        if (ac.signal.aborted) return undefined;
        const r = await it.next();
        return r.done ? undefined : r.value;
      },
      close: () => {
        ac.abort();
        void it.return(undefined);
      },
    };
  }

  private async *followElsewhere(first: MessageRow, userId: string, offset: number, signal: AbortSignal): AsyncGenerator<ReplyEvent, void, undefined> {
    const cfg = this.deps.config;
    const { hub, store } = this.deps;
    let pos = offset;
    let row: MessageRow | undefined = first;
    const silenceMs = Math.max(3 * cfg.CHAT_CHECKPOINT_INTERVAL, 1000);
    const delta = (text: string, end: number): ReplyEvent => ({ case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text, offset: BigInt(end) } });
    while (!signal.aborted) {
      if (row && row.status !== "streaming") {
        if (pos > row.content.length) throw offsetPastEnd(pos, row.content.length);
        if (row.content.length > pos) yield delta(row.content.slice(pos), row.content.length);
        yield finalFromRow(row);
        return;
      }
      // Streaming somewhere: ask its replica.
      const local = this.runs.get(first.id);
      if (local) {
        const reader = local.reply.read(pos);
        try {
          for (;;) {
            const ev = await reader.next();
            if (!ev) return;
            yield ev;
          }
        } finally {
          reader.close();
        }
      }
      // Asked on the replica the row names (streamed_by; '' = a previous version's replica: its per-reply subject).
      const f = await hub.follow(first.id, first.streamedBy, cfg.CHAT_RESUME_SNAPSHOT_TIMEOUT);
      if (f) {
        // The reply's length as last seen: a terminal event with the client's offset beyond it is OUT_OF_RANGE.
        let seenEnd = f.snapshot.offset;
        try {
          if (f.snapshot.offset > pos) {
            yield delta(f.snapshot.text.slice(pos), f.snapshot.offset);
            pos = f.snapshot.offset;
          }
          for (;;) {
            if (signal.aborted) return;
            const ev = await f.next(silenceMs);
            if (ev === undefined || ev === "silent") break;
            if (ev.case === "waiting") {
              // Still warming up (before any text): pass the tick on; it also keeps this follow from going silent.
              if (pos === 0) yield ev;
              continue;
            }
            if (ev.case === "delta") {
              const end = Number(ev.value.offset);
              const start = end - ev.value.text.length;
              seenEnd = Math.max(seenEnd, end);
              if (end <= pos) continue;
              if (start > pos) break; // a gap (should not happen): ask for a fresh snapshot
              yield start === pos ? { case: "delta", value: ev.value } : delta(ev.value.text.slice(pos - start), end);
              pos = end;
            } else {
              if (pos > seenEnd) throw offsetPastEnd(pos, seenEnd);
              yield ev;
              return;
            }
          }
        } finally {
          f.close();
        }
        row = undefined;
        continue;
      }
      // Nobody streams it right now: the database knows its end, or its latest checkpoint.
      const fresh = await store.getMessage(first.id, userId);
      if (!fresh) {
        yield { case: "error", value: { $typeName: "luna.chat.v1.ReplyError", code: "deleted", message: "the conversation was deleted", promptTokens: 0n, completionTokens: 0n, creditsCharged: 0n, balanceAfter: 0n } };
        return;
      }
      row = fresh.message;
      if (row.status === "streaming") {
        if (row.content.length > pos) {
          yield delta(row.content.slice(pos), row.content.length);
          pos = row.content.length;
        }
        await sleep(cfg.CHAT_CHECKPOINT_INTERVAL, signal);
      }
    }
  }

  /** ResumeStream: the rest of a reply from `offset`. */
  async resume(p: Principal, req: { messageId: string; offset: number }): Promise<ReplyStream> {
    const found = await this.deps.store.getMessage(req.messageId, p.userId);
    if (!found) throw notFound(`message ${req.messageId}`);
    if (found.message.role !== "assistant") throw invalidArgument("message_id", "must be an assistant message (a reply)");
    // Past the end is the client's mistake (a wrong message or a miscounted offset): say so rather than send nothing.
    // The end is known here for a finished reply and for one this process streams; a reply streaming on another
    // replica is checked when it ends (followElsewhere).
    const local = this.runs.get(found.message.id);
    const end = local ? local.reply.length : found.message.status !== "streaming" ? found.message.content.length : undefined;
    if (end !== undefined && req.offset > end) throw offsetPastEnd(req.offset, end);
    return this.follow(found.message, p.userId, req.offset, true);
  }

  // ---- StopGeneration -------------------------------------------------------------------------------------------

  async stopGeneration(p: Principal, messageId: string): Promise<boolean> {
    const found = await this.deps.store.getMessage(messageId, p.userId);
    if (!found) throw notFound(`message ${messageId}`);
    if (found.message.role !== "assistant") throw invalidArgument("message_id", "must be an assistant message (a reply)");
    if (found.message.status !== "streaming") return false;
    if (!this.stopLocal(messageId, "cancelled")) this.deps.hub.requestStop(messageId);
    return true;
  }
}
