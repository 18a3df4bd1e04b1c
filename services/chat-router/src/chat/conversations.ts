/** Conversation management: create, list, get (with a page of messages), rename, delete. */
import { randomUUID } from "node:crypto";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { failedPrecondition, invalidArgument, notFound, unavailable, type CatalogCache, type Principal } from "@luna/kit";
import { decodeConversationCursor, decodeMessageCursor, encodeConversationCursor, encodeMessageCursor } from "../domain/page-token.js";
import type { ChatStore, ConversationRow, MessageRow } from "../data/store.js";
import type { TokenCounter } from "./tokens.js";

export const CONVERSATIONS_PAGE = { default: 20, max: 100 } as const;
export const MESSAGES_PAGE = { default: 50, max: 200 } as const;

export interface ConversationDeps {
  store: ChatStore;
  catalog: Pick<CatalogCache, "getModel" | "loaded">;
  tokens: TokenCounter;
  /** Stops a reply wherever it streams. */
  stopReply(messageId: string): void;
  forget(conversationId: string): void;
  /** Caches a new conversation's owner and model for the hot path. */
  remember(c: ConversationRow): void;
}

export class Conversations {
  constructor(private readonly deps: ConversationDeps) {}

  async create(p: Principal, c: { modelId: string; title: string; systemPrompt: string }): Promise<ConversationRow> {
    const { catalog, tokens, store } = this.deps;
    if (!catalog.loaded) throw unavailable("the model catalog is not loaded yet; try again shortly");
    const model = catalog.getModel(c.modelId);
    if (!model || model.kind !== ModelKind.TEXT) throw invalidArgument("model_id", `"${c.modelId}" is not a text model of the catalog`);
    if (model.status === ModelStatus.DISABLED) throw failedPrecondition(`model ${c.modelId} is disabled${model.statusReason ? `: ${model.statusReason}` : ""}`);
    const id = randomUUID();
    const systemPromptTokens = c.systemPrompt ? await tokens.count(model.id, id, c.systemPrompt) : 0;
    const row = await store.createConversation({ id, userId: p.userId, modelId: model.id, title: c.title, systemPrompt: c.systemPrompt, systemPromptTokens });
    this.deps.remember(row);
    return row;
  }

  async list(p: Principal, pageSize: number, pageToken: string): Promise<{ items: ConversationRow[]; next: string }> {
    const after = decodeConversationCursor("page.page_token", pageToken);
    const rows = await this.deps.store.listConversations(p.userId, pageSize + 1, after);
    const items = rows.slice(0, pageSize);
    const last = items[items.length - 1];
    return { items, next: rows.length > pageSize && last ? encodeConversationCursor({ micros: last.lastActivityMicros, id: last.id }) : "" };
  }

  async get(p: Principal, id: string, pageSize: number, pageToken: string): Promise<{ conversation: ConversationRow; messages: MessageRow[]; next: string }> {
    const before = decodeMessageCursor("messages_page.page_token", pageToken);
    const conversation = await this.deps.store.getConversation(id, p.userId);
    if (!conversation) throw notFound(`conversation ${id}`);
    const rows = await this.deps.store.listMessages(id, pageSize + 1, before);
    const page = rows.slice(0, pageSize);
    const oldest = page[page.length - 1];
    return { conversation, messages: page.reverse(), next: rows.length > pageSize && oldest ? encodeMessageCursor(oldest.seq) : "" };
  }

  async rename(p: Principal, id: string, title: string): Promise<ConversationRow> {
    const row = await this.deps.store.renameConversation(id, p.userId, title);
    if (!row) throw notFound(`conversation ${id}`);
    return row;
  }

  async delete(p: Principal, id: string): Promise<void> {
    const r = await this.deps.store.deleteConversation(id, p.userId);
    if (!r.deleted) throw notFound(`conversation ${id}`);
    this.deps.forget(id);
    for (const m of r.streaming) this.deps.stopReply(m);
  }
}
