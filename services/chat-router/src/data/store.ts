/**
 * chat-router's Postgres access: hand-written SQL over a node-postgres pool. The statements on the streaming hot path
 * are single round trips (named, so each connection plans them once): one statement that inserts the user message
 * with the reply's placeholder (enforcing idempotency and one streaming reply per conversation) and returns the
 * conversation with its prompt history; and one that stores the final reply with its usage event. The reply's hold
 * is recorded by its first write after the reserve (a checkpoint, a heartbeat or the final state), not by a statement
 * of its own. Ownership is part of every statement (`user_id = $n`), so another user's id reads as absent.
 */
import { OUTBOX_INSERT, outboxValuesSql, sqlTxFromPg, type SqlTx } from "@luna/kit";
import type pg from "pg";
import type { OutboxRow } from "../events/usage.js";

/** Postgres error codes this store reacts to. */
const PG_UNIQUE_VIOLATION = "23505";
const PG_FOREIGN_KEY_VIOLATION = "23503";

export type MessageRole = "user" | "assistant";
export type MessageStatus = "streaming" | "complete" | "stopped" | "failed";

export interface ConversationRow {
  id: string;
  userId: string;
  modelId: string;
  title: string;
  systemPrompt: string;
  systemPromptTokens: number;
  createdAt: Date;
  lastActivityAt: Date;
  /** last_activity_at in microseconds since the epoch (exact; for page tokens). */
  lastActivityMicros: bigint;
  lastMessagePreview: string;
  messageCount: number;
}

export interface MessageRow {
  id: string;
  conversationId: string;
  seq: bigint;
  role: MessageRole;
  content: string;
  status: MessageStatus;
  parentId: string | null;
  active: boolean;
  clientMessageId: string | null;
  modelId: string;
  tokenCount: number | null;
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
  maxOutputTokens: number;
  creditsHeld: bigint;
  creditsCharged: bigint;
  balanceAfter: bigint;
  availableAfterReserve: bigint;
  holdId: string | null;
  errorCode: string;
  errorMessage: string;
  /** The replica that streams (streamed) the reply: LiveHub's id; '' = written by a replica of the previous version. */
  streamedBy: string;
  createdAt: Date;
  updatedAt: Date;
}

/** A message of the prompt history (oldest first). */
export interface HistoryRow {
  id: string;
  role: MessageRole;
  content: string;
  tokenCount: number | null;
}

const CONVERSATION_COLUMNS = `c.id, c.user_id, c.model_id, c.title, c.system_prompt, c.system_prompt_tokens, c.created_at,
  c.last_activity_at, (extract(epoch from c.last_activity_at) * 1000000)::bigint::text AS last_activity_us,
  c.last_message_preview, c.message_count`;

const MESSAGE_COLUMNS = `m.id, m.conversation_id, m.seq::text AS seq, m.role, m.content, m.status, m.parent_id, m.active,
  m.client_message_id, m.model_id, m.token_count, m.finish_reason, m.prompt_tokens, m.completion_tokens,
  m.max_output_tokens, m.credits_held::text AS credits_held, m.credits_charged::text AS credits_charged,
  m.balance_after::text AS balance_after, m.available_after_reserve::text AS available_after_reserve, m.hold_id,
  m.error_code, m.error_message, m.streamed_by, m.created_at, m.updated_at`;

type Row = Record<string, unknown>;

function toConversation(r: Row): ConversationRow {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    modelId: r.model_id as string,
    title: r.title as string,
    systemPrompt: r.system_prompt as string,
    systemPromptTokens: r.system_prompt_tokens as number,
    createdAt: r.created_at as Date,
    lastActivityAt: r.last_activity_at as Date,
    lastActivityMicros: BigInt(r.last_activity_us as string),
    lastMessagePreview: r.last_message_preview as string,
    messageCount: r.message_count as number,
  };
}

export function toMessage(r: Row): MessageRow {
  return {
    id: r.id as string,
    conversationId: r.conversation_id as string,
    seq: BigInt(r.seq as string),
    role: r.role as MessageRole,
    content: r.content as string,
    status: r.status as MessageStatus,
    parentId: (r.parent_id as string | null) ?? null,
    active: r.active as boolean,
    clientMessageId: (r.client_message_id as string | null) ?? null,
    modelId: r.model_id as string,
    tokenCount: (r.token_count as number | null) ?? null,
    finishReason: r.finish_reason as string,
    promptTokens: r.prompt_tokens as number,
    completionTokens: r.completion_tokens as number,
    maxOutputTokens: r.max_output_tokens as number,
    creditsHeld: BigInt(r.credits_held as string),
    creditsCharged: BigInt(r.credits_charged as string),
    balanceAfter: BigInt(r.balance_after as string),
    availableAfterReserve: BigInt(r.available_after_reserve as string),
    holdId: (r.hold_id as string | null) ?? null,
    errorCode: r.error_code as string,
    errorMessage: r.error_message as string,
    streamedBy: r.streamed_by as string,
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
  };
}

function pgCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "string" ? (err as { code: string }).code : undefined;
}

function pgConstraint(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && typeof (err as { constraint?: unknown }).constraint === "string"
    ? (err as { constraint: string }).constraint
    : undefined;
}

/** What insertSend stored and read. */
export interface SendStart {
  /** The conversation as it was before the insert. */
  conversation: ConversationRow;
  /** Active messages before the new one, oldest first (newest `historyLimit`, cut where they surely exceed `windowTokens`). */
  history: HistoryRow[];
  /** The conversation's activity and preview before the insert (for undoSend). */
  previousActivity: bigint;
  previousPreview: string;
}

/** Why inserting a reply failed. */
export type InsertConflict = "duplicate" | "busy" | "gone";

export interface SendInsert {
  userId: string;
  conversationId: string;
  userMessageId: string;
  assistantMessageId: string;
  text: string;
  clientMessageId: string;
  preview: string;
}

/** EditMessage's insert: SendInsert's fields plus the version it replaces. */
export interface EditInsert extends SendInsert {
  oldUserMessageId: string;
}

/** What insertEdit stored and read (history: before the old version), and the messages it deactivated (for undoEdit). */
export interface EditStart extends SendStart {
  deactivated: string[];
}

export interface RegenerateInsert {
  conversationId: string;
  parentId: string;
  assistantMessageId: string;
  modelId: string;
}

/** The final state of a reply. */
export interface ReplyFinal {
  messageId: string;
  conversationId: string;
  content: string;
  status: Exclude<MessageStatus, "streaming">;
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
  /** Content tokens of the reply as history. */
  tokenCount: number;
  creditsCharged: bigint;
  balanceAfter: bigint;
  errorCode: string;
  errorMessage: string;
  preview: string;
}

/** Reply state recorded once the credits are held (by the reply's first write: checkpoint, heartbeat or final state). */
export interface HoldInfo {
  holdId: string;
  creditsHeld: bigint;
  availableAfterReserve: bigint;
  maxOutputTokens: number;
  /** Our count of the prompt (what the sweeper bills if the replica dies). */
  promptTokens: number;
  /** The user message and its content token count (counted while the insert ran). */
  userMessageId: string;
  userTokens: number | null;
}

/** A reply's hold columns, set from `$first` on (values: holdValues). */
const HOLD_SET = (first: number) =>
  `hold_id = $${first}, credits_held = $${first + 1}, available_after_reserve = $${first + 2}, max_output_tokens = $${first + 3}`;

function holdValues(h: HoldInfo): unknown[] {
  return [h.holdId || null, h.creditsHeld.toString(), h.availableAfterReserve.toString(), h.maxOutputTokens];
}

/** The user message's token count (`$first`: its id, `$first + 1`: the count; null leaves it alone). */
const USER_TOKENS_UPDATE = (first: number) => `UPDATE messages SET token_count = $${first + 1} WHERE id = $${first} AND $${first + 1}::int IS NOT NULL`;

export class ChatStore {
  readonly pool: pg.Pool;
  /** Written as `streamed_by` on the replies this process streams (its LiveHub's id); followers ask that replica. */
  readonly replicaId: string;

  constructor(pool: pg.Pool, opts: { replicaId?: string } = {}) {
    this.pool = pool;
    this.replicaId = opts.replicaId ?? "";
  }

  // ---- conversations ------------------------------------------------------------------------------------------

  async createConversation(c: { id: string; userId: string; modelId: string; title: string; systemPrompt: string; systemPromptTokens: number }): Promise<ConversationRow> {
    const r = await this.pool.query(
      `INSERT INTO conversations AS c (id, user_id, model_id, title, system_prompt, system_prompt_tokens)
       VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${CONVERSATION_COLUMNS}`,
      [c.id, c.userId, c.modelId, c.title, c.systemPrompt, c.systemPromptTokens],
    );
    return toConversation(r.rows[0] as Row);
  }

  async getConversation(id: string, userId: string): Promise<ConversationRow | undefined> {
    const r = await this.pool.query({
      name: "chat_get_conversation",
      text: `SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1 AND c.user_id = $2`,
      values: [id, userId],
    });
    return r.rows[0] ? toConversation(r.rows[0] as Row) : undefined;
  }

  /** Newest activity first; `after` = the last item of the previous page. */
  async listConversations(userId: string, limit: number, after?: { micros: bigint; id: string }): Promise<ConversationRow[]> {
    const r = after
      ? await this.pool.query(
          `SELECT ${CONVERSATION_COLUMNS} FROM conversations c
           WHERE c.user_id = $1 AND (c.last_activity_at, c.id) < ('epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3::uuid)
           ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $4`,
          [userId, after.micros.toString(), after.id, limit],
        )
      : await this.pool.query(
          `SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.user_id = $1
           ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $2`,
          [userId, limit],
        );
    return r.rows.map((x) => toConversation(x as Row));
  }

  async renameConversation(id: string, userId: string, title: string): Promise<ConversationRow | undefined> {
    const r = await this.pool.query(
      `UPDATE conversations c SET title = $3 WHERE c.id = $1 AND c.user_id = $2 RETURNING ${CONVERSATION_COLUMNS}`,
      [id, userId, title],
    );
    return r.rows[0] ? toConversation(r.rows[0] as Row) : undefined;
  }

  /** Sets a generated title unless the conversation has one by now (the user may have renamed it meanwhile). */
  async setGeneratedTitle(id: string, title: string): Promise<boolean> {
    const r = await this.pool.query(`UPDATE conversations SET title = $2 WHERE id = $1 AND title = ''`, [id, title]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Deletes a conversation with its messages; returns whether it existed and the ids of replies that were streaming. */
  async deleteConversation(id: string, userId: string): Promise<{ deleted: boolean; streaming: string[] }> {
    const r = await this.pool.query(
      `WITH s AS (
         SELECT m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.conversation_id = $1 AND c.user_id = $2 AND m.status = 'streaming'
       ), d AS (
         DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id
       )
       SELECT (SELECT count(*) FROM d)::int AS deleted, coalesce((SELECT array_agg(id::text) FROM s), '{}') AS streaming`,
      [id, userId],
    );
    const row = r.rows[0] as { deleted: number; streaming: string[] };
    return { deleted: row.deleted > 0, streaming: row.deleted > 0 ? row.streaming : [] };
  }

  /** Deletes every conversation of a user (account deleted); returns the replies that were streaming. */
  async deleteUserConversations(tx: SqlTx, userId: string): Promise<string[]> {
    const rows = await tx.$queryRawUnsafe<Array<{ id: string }>>(
      `WITH s AS (
         SELECT m.id::text AS id FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE c.user_id = $1 AND m.status = 'streaming'
       ), d AS (DELETE FROM conversations WHERE user_id = $1)
       SELECT id FROM s`,
      userId,
    );
    return rows.map((r) => r.id);
  }

  // ---- messages -------------------------------------------------------------------------------------------------

  /** A page of messages, newest first; `beforeSeq` = the oldest message of the previous page. */
  async listMessages(conversationId: string, limit: number, beforeSeq?: bigint): Promise<MessageRow[]> {
    const r = beforeSeq !== undefined
      ? await this.pool.query(
          `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3`,
          [conversationId, beforeSeq.toString(), limit],
        )
      : await this.pool.query(
          `SELECT ${MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 ORDER BY m.seq DESC LIMIT $2`,
          [conversationId, limit],
        );
    return r.rows.map((x) => toMessage(x as Row));
  }

  /** A message of one of the user's conversations, with that conversation. */
  async getMessage(messageId: string, userId: string): Promise<{ message: MessageRow; conversation: ConversationRow } | undefined> {
    const r = await this.pool.query({
      name: "chat_get_message",
      text: `SELECT ${MESSAGE_COLUMNS}, row_to_json(cc) AS conv FROM messages m
             JOIN LATERAL (SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = m.conversation_id AND c.user_id = $2) cc ON true
             WHERE m.id = $1`,
      values: [messageId, userId],
    });
    const row = r.rows[0] as Row | undefined;
    if (!row) return undefined;
    const conv = row.conv as Row;
    return {
      message: toMessage(row),
      conversation: toConversation({ ...conv, created_at: new Date(conv.created_at as string), last_activity_at: new Date(conv.last_activity_at as string) }),
    };
  }

  /**
   * SendMessage's one round trip: if the user owns the conversation, stores the user message and the reply's
   * placeholder (status streaming) and bumps the conversation, atomically, and returns the conversation with its
   * newest active history (read from the statement's snapshot, so without the new message; `windowTokens` cuts it
   * where the counted messages alone exceed it — uncounted ones count 0 here, so the cut is never early) and its
   * previous activity (for undoSend). A conflict stops it without writing anything: "duplicate" (this client message
   * id exists), "busy" (another reply is streaming), "gone" (no such conversation of this user).
   */
  async insertSend(s: SendInsert, historyLimit: number, windowTokens: number): Promise<{ conflict: InsertConflict } | SendStart> {
    try {
      const r = await this.pool.query({
        name: "chat_insert_send",
        text: `WITH conv AS (
                 SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $2 AND c.user_id = $6
               ), um AS (
                 INSERT INTO messages (id, conversation_id, role, content, status, client_message_id)
                 SELECT $1, conv.id, 'user', $3, 'complete', $4 FROM conv RETURNING id
               ), am AS (
                 INSERT INTO messages (id, conversation_id, role, status, parent_id, model_id, streamed_by)
                 SELECT $5, conv.id, 'assistant', 'streaming', um.id, conv.model_id, $10 FROM um, conv RETURNING id
               ), cv AS (
                 UPDATE conversations SET last_activity_at = now(), last_message_preview = $7, message_count = message_count + 2
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM am)
               )
               SELECT conv.*,
                 (SELECT coalesce(json_agg(json_build_array(h.id, h.role, h.content, h.token_count) ORDER BY h.seq), '[]'::json)
                    FROM (SELECT x.id, x.role, x.content, x.token_count, x.seq,
                                 sum(coalesce(x.token_count, 0)) OVER (ORDER BY x.seq DESC) - coalesce(x.token_count, 0) AS before
                            FROM messages x
                           WHERE x.conversation_id = conv.id AND x.active AND x.status <> 'streaming' AND (x.role = 'user' OR x.content <> '')
                           ORDER BY x.seq DESC LIMIT $8) h
                   WHERE h.before < $9) AS history
               FROM conv`,
        values: [s.userMessageId, s.conversationId, s.text, s.clientMessageId, s.assistantMessageId, s.userId, s.preview, historyLimit, windowTokens,
          this.replicaId],
      });
      const row = r.rows[0] as Row | undefined;
      if (!row) return { conflict: "gone" };
      const conversation = toConversation(row);
      return {
        conversation,
        history: (row.history as Array<[string, MessageRole, string, number | null]>).map(([id, role, content, tokenCount]) => ({ id, role, content, tokenCount })),
        previousActivity: conversation.lastActivityMicros,
        previousPreview: conversation.lastMessagePreview,
      };
    } catch (err) {
      return { conflict: conflictOf(err) };
    }
  }

  /** Undoes insertSend when the request failed before its reply started (limits, credits). */
  async undoSend(s: { conversationId: string; userMessageId: string; assistantMessageId: string; previousActivity: bigint; previousPreview: string }): Promise<void> {
    await this.pool.query(
      `WITH d AS (DELETE FROM messages WHERE id IN ($1, $2) AND conversation_id = $3 RETURNING id)
       UPDATE conversations SET message_count = message_count - (SELECT count(*) FROM d),
         last_activity_at = 'epoch'::timestamptz + $4::bigint * interval '1 microsecond', last_message_preview = $5
       WHERE id = $3 AND EXISTS (SELECT 1 FROM d)`,
      [s.userMessageId, s.assistantMessageId, s.conversationId, s.previousActivity.toString(), s.previousPreview],
    );
  }

  /** The reply being regenerated with what RegenerateMessage needs: the history up to its user message. */
  async loadForRegenerate(messageId: string, userId: string, historyLimit: number, windowTokens: number): Promise<{
    conversation: ConversationRow;
    target: MessageRow;
    /** The conversation's newest user message id. */
    latestUserMessageId: string | null;
    busy: boolean;
    history: HistoryRow[];
  } | undefined> {
    const found = await this.getMessage(messageId, userId);
    if (!found) return undefined;
    const { message: target, conversation } = found;
    const r = await this.pool.query(
      `SELECT
         (SELECT id FROM messages u WHERE u.conversation_id = $1 AND u.role = 'user' ORDER BY u.seq DESC LIMIT 1) AS latest_user,
         EXISTS (SELECT 1 FROM messages b WHERE b.conversation_id = $1 AND b.status = 'streaming') AS busy,
         (SELECT coalesce(json_agg(json_build_array(h.id, h.role, h.content, h.token_count) ORDER BY h.seq), '[]'::json)
            FROM (SELECT x.id, x.role, x.content, x.token_count, x.seq,
                         sum(coalesce(x.token_count, 0)) OVER (ORDER BY x.seq DESC) - coalesce(x.token_count, 0) AS before
                    FROM messages x
                   WHERE x.conversation_id = $1 AND x.active AND x.status <> 'streaming' AND (x.role = 'user' OR x.content <> '')
                     AND x.seq <= (SELECT p.seq FROM messages p WHERE p.id = $2)
                   ORDER BY x.seq DESC LIMIT $3) h
           WHERE h.before < $4) AS history`,
      [conversation.id, target.parentId, historyLimit, windowTokens],
    );
    const row = r.rows[0] as Row;
    return {
      conversation,
      target,
      latestUserMessageId: (row.latest_user as string | null) ?? null,
      busy: row.busy as boolean,
      history: (row.history as Array<[string, MessageRole, string, number | null]>).map(([id, role, content, tokenCount]) => ({ id, role, content, tokenCount })),
    };
  }

  /**
   * Adds a new reply to `parentId` (status streaming, active) and deactivates its siblings, atomically; fails on a
   * conflict without writing ("busy": a reply is streaming; "gone": the conversation was deleted).
   */
  async insertRegenerate(s: RegenerateInsert): Promise<{ conflict?: InsertConflict; deactivated: string[] }> {
    try {
      const r = await this.pool.query(
        `WITH am AS (
           INSERT INTO messages (id, conversation_id, role, status, parent_id, model_id, streamed_by)
           VALUES ($1, $2, 'assistant', 'streaming', $3, $4, $5) RETURNING id
         ), off AS (
           UPDATE messages SET active = false WHERE parent_id = $3 AND role = 'assistant' AND active AND id <> $1 RETURNING id
         ), cv AS (
           UPDATE conversations SET last_activity_at = now(), message_count = message_count + 1 WHERE id = $2 AND EXISTS (SELECT 1 FROM am)
         )
         SELECT coalesce((SELECT array_agg(id::text) FROM off), '{}') AS deactivated`,
        [s.assistantMessageId, s.conversationId, s.parentId, s.modelId, this.replicaId],
      );
      return { deactivated: (r.rows[0] as { deactivated: string[] }).deactivated };
    } catch (err) {
      return { conflict: conflictOf(err), deactivated: [] };
    }
  }

  /** Undoes insertRegenerate when the credits could not be held. */
  async undoRegenerate(s: { conversationId: string; assistantMessageId: string; reactivate: string[] }): Promise<void> {
    await this.pool.query(
      `WITH d AS (DELETE FROM messages WHERE id = $1 AND conversation_id = $2 RETURNING id),
            r AS (UPDATE messages SET active = true WHERE id = ANY($3::uuid[]))
       UPDATE conversations SET message_count = message_count - (SELECT count(*) FROM d) WHERE id = $2`,
      [s.assistantMessageId, s.conversationId, s.reactivate],
    );
  }

  /**
   * EditMessage's one round trip: if `oldUserMessageId` is the active, newest user message of the user's conversation,
   * stores the new version (a user message whose parent_id is the first version's id) with the reply's placeholder
   * (status streaming), deactivates the old version and its replies, bumps the conversation, atomically, and returns
   * the conversation with the active history before the old version (as insertSend). Conflicts write nothing:
   * "stale" (not the newest active user message), "duplicate" (this client message id exists), "busy" (a reply is
   * streaming), "gone" (no such conversation of this user).
   */
  async insertEdit(s: EditInsert, historyLimit: number, windowTokens: number): Promise<{ conflict: InsertConflict | "stale" } | EditStart> {
    try {
      const r = await this.pool.query({
        name: "chat_insert_edit",
        text: `WITH conv AS (
                 SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $2 AND c.user_id = $6
               ), old AS (
                 SELECT o.id, o.seq, coalesce(o.parent_id, o.id) AS root FROM messages o, conv
                 WHERE o.id = $10 AND o.conversation_id = conv.id AND o.role = 'user' AND o.active
                   AND NOT EXISTS (SELECT 1 FROM messages n WHERE n.conversation_id = conv.id AND n.role = 'user' AND n.seq > o.seq)
               ), um AS (
                 INSERT INTO messages (id, conversation_id, role, content, status, client_message_id, parent_id)
                 SELECT $1, conv.id, 'user', $3, 'complete', $4, old.root FROM conv, old RETURNING id
               ), am AS (
                 INSERT INTO messages (id, conversation_id, role, status, parent_id, model_id, streamed_by)
                 SELECT $5, conv.id, 'assistant', 'streaming', um.id, conv.model_id, $11 FROM um, conv RETURNING id
               ), off AS (
                 UPDATE messages SET active = false
                 WHERE (id = $10 OR (parent_id = $10 AND role = 'assistant')) AND active AND EXISTS (SELECT 1 FROM am) RETURNING id
               ), cv AS (
                 UPDATE conversations SET last_activity_at = now(), last_message_preview = $7, message_count = message_count + 2
                 WHERE id = $2 AND EXISTS (SELECT 1 FROM am)
               )
               SELECT conv.*, EXISTS (SELECT 1 FROM old) AS fresh,
                 coalesce((SELECT array_agg(id::text) FROM off), '{}') AS deactivated,
                 (SELECT coalesce(json_agg(json_build_array(h.id, h.role, h.content, h.token_count) ORDER BY h.seq), '[]'::json)
                    FROM (SELECT x.id, x.role, x.content, x.token_count, x.seq,
                                 sum(coalesce(x.token_count, 0)) OVER (ORDER BY x.seq DESC) - coalesce(x.token_count, 0) AS before
                            FROM messages x
                           WHERE x.conversation_id = conv.id AND x.active AND x.status <> 'streaming' AND (x.role = 'user' OR x.content <> '')
                             AND x.seq < (SELECT seq FROM old)
                           ORDER BY x.seq DESC LIMIT $8) h
                   WHERE h.before < $9) AS history
               FROM conv`,
        values: [s.userMessageId, s.conversationId, s.text, s.clientMessageId, s.assistantMessageId, s.userId, s.preview, historyLimit, windowTokens,
          s.oldUserMessageId, this.replicaId],
      });
      const row = r.rows[0] as Row | undefined;
      if (!row) return { conflict: "gone" };
      if (!(row.fresh as boolean)) return { conflict: "stale" };
      const conversation = toConversation(row);
      return {
        conversation,
        history: (row.history as Array<[string, MessageRole, string, number | null]>).map(([id, role, content, tokenCount]) => ({ id, role, content, tokenCount })),
        previousActivity: conversation.lastActivityMicros,
        previousPreview: conversation.lastMessagePreview,
        deactivated: row.deactivated as string[],
      };
    } catch (err) {
      return { conflict: conflictOf(err) };
    }
  }

  /** Undoes insertEdit when the request failed before its reply started (limits, credits): the old version is back. */
  async undoEdit(s: { conversationId: string; userMessageId: string; assistantMessageId: string; previousActivity: bigint; previousPreview: string; reactivate: string[] }): Promise<void> {
    await this.pool.query(
      `WITH d AS (DELETE FROM messages WHERE id IN ($1, $2) AND conversation_id = $3 RETURNING id),
            r AS (UPDATE messages SET active = true WHERE id = ANY($6::uuid[]) AND conversation_id = $3)
       UPDATE conversations SET message_count = message_count - (SELECT count(*) FROM d),
         last_activity_at = 'epoch'::timestamptz + $4::bigint * interval '1 microsecond', last_message_preview = $5
       WHERE id = $3 AND EXISTS (SELECT 1 FROM d)`,
      [s.userMessageId, s.assistantMessageId, s.conversationId, s.previousActivity.toString(), s.previousPreview, s.reactivate],
    );
  }

  /**
   * Saves the text of a streaming reply so far (also the heartbeat the sweeper watches). `hold`: the reply's first
   * write also records its hold (and the user message's token count) in the same statement — there is no statement
   * of its own for that (issue 23); later writes pass none.
   */
  async checkpoint(messageId: string, content: string, completionTokens: number, hold?: HoldInfo): Promise<void> {
    await this.pool.query(hold
      ? {
          name: "chat_checkpoint_hold",
          text: `WITH ut AS (${USER_TOKENS_UPDATE(9)})
                 UPDATE messages SET content = $2, completion_tokens = $3, updated_at = now(), ${HOLD_SET(4)}, prompt_tokens = $8
                 WHERE id = $1 AND status = 'streaming'`,
          values: [messageId, content, completionTokens, ...holdValues(hold), hold.promptTokens, hold.userMessageId, hold.userTokens],
        }
      : {
          name: "chat_checkpoint",
          text: `UPDATE messages SET content = $2, completion_tokens = $3, updated_at = now() WHERE id = $1 AND status = 'streaming'`,
          values: [messageId, content, completionTokens],
        });
  }

  /** Bumps a streaming reply's heartbeat without rewriting its text; `hold` as in checkpoint. */
  async checkpointHeartbeat(messageId: string, hold?: HoldInfo): Promise<void> {
    await this.pool.query(hold
      ? {
          name: "chat_checkpoint_heartbeat_hold",
          text: `WITH ut AS (${USER_TOKENS_UPDATE(7)})
                 UPDATE messages SET updated_at = now(), ${HOLD_SET(2)}, prompt_tokens = $6 WHERE id = $1 AND status = 'streaming'`,
          values: [messageId, ...holdValues(hold), hold.promptTokens, hold.userMessageId, hold.userTokens],
        }
      : {
          name: "chat_checkpoint_heartbeat",
          text: `UPDATE messages SET updated_at = now() WHERE id = $1 AND status = 'streaming'`,
          values: [messageId],
        });
  }

  /**
   * Writes a reply's final state, bumps its conversation and enqueues `event` (its usage event, into the kit's
   * outbox table, as `enqueueEvent` would), in one statement (atomic without a transaction: one round trip instead
   * of four). Returns false (and enqueues nothing) when the reply was already final — finished by the sweeper — so
   * its event is not emitted twice; a deleted reply still enqueues `event`: its credits were charged. `hold`: a reply
   * whose run wrote nothing before its end records its hold (and the user message's token count) here, as checkpoint.
   */
  async finishReply(f: ReplyFinal, event: OutboxRow | undefined, hold?: HoldInfo): Promise<boolean> {
    const r = await this.pool.query({
      name: hold ? "chat_finish_reply_hold" : "chat_finish_reply",
      text: `WITH u AS (
               UPDATE messages SET content = $2, status = $3, finish_reason = $4, prompt_tokens = $5, completion_tokens = $6,
                 token_count = $7, credits_charged = $8, balance_after = $9, error_code = $10, error_message = $11, updated_at = now()${hold ? `,
                 ${HOLD_SET(17)}` : ""}
               WHERE id = $1 AND status = 'streaming' RETURNING conversation_id
             ), ${hold ? `ut AS (${USER_TOKENS_UPDATE(21)}), ` : ""}cv AS (
               UPDATE conversations SET last_activity_at = now(), last_message_preview = $12
               WHERE id = (SELECT conversation_id FROM u) AND $12 <> ''
             ), p AS (
               SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1) AS present
             ), ev AS (
               ${OUTBOX_INSERT}
               SELECT ${outboxValuesSql(13)}
               WHERE $13::uuid IS NOT NULL AND (EXISTS (SELECT 1 FROM u) OR NOT (SELECT present FROM p))
             )
             SELECT (SELECT count(*) FROM u)::int AS updated, (SELECT present FROM p) AS present`,
      values: [f.messageId, f.content, f.status, f.finishReason, f.promptTokens, f.completionTokens, f.tokenCount,
        f.creditsCharged.toString(), f.balanceAfter.toString(), f.errorCode, f.errorMessage, f.preview,
        event?.id ?? null, event?.subject ?? null, event?.payload ?? null, event?.headers ?? null,
        ...(hold ? [...holdValues(hold), hold.userMessageId, hold.userTokens] : [])],
    });
    const row = r.rows[0] as { updated: number; present: boolean };
    return row.updated > 0 || !row.present;
  }

  /**
   * Claims streaming replies whose checkpoint is older than `staleMs` (their replica died): bumps their heartbeat so
   * no other sweeper claims them meanwhile, and returns them.
   */
  async claimStale(staleMs: number, limit: number, skip: string[]): Promise<MessageRow[]> {
    const r = await this.pool.query(
      `UPDATE messages m SET updated_at = now()
       WHERE m.id IN (SELECT id FROM messages WHERE status = 'streaming' AND updated_at < now() - $1::int * interval '1 millisecond'
                        AND NOT (id = ANY($3::uuid[])) ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING ${MESSAGE_COLUMNS}`,
      [staleMs, limit, skip],
    );
    return r.rows.map((x) => toMessage(x as Row));
  }

  /** Status and recorded hold of the given messages; ids without a message are absent (for the hold sweep). */
  async holdStates(ids: string[]): Promise<Map<string, { status: MessageStatus; holdId: string | null }>> {
    const r = await this.pool.query(`SELECT id, status, hold_id FROM messages WHERE id = ANY($1::uuid[])`, [ids]);
    return new Map(r.rows.map((x: { id: string; status: MessageStatus; hold_id: string | null }) => [x.id, { status: x.status, holdId: x.hold_id }]));
  }

  /** The owner of a conversation (for the sweeper's usage events). */
  async conversationOwner(conversationId: string): Promise<{ userId: string; modelId: string } | undefined> {
    const r = await this.pool.query(`SELECT user_id, model_id FROM conversations WHERE id = $1`, [conversationId]);
    const row = r.rows[0] as { user_id: string; model_id: string } | undefined;
    return row ? { userId: row.user_id, modelId: row.model_id } : undefined;
  }

  /** Runs `fn` in a transaction. */
  async transaction<T>(fn: (tx: SqlTx) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let failed = false;
    try {
      await client.query("BEGIN");
      const out = await fn(sqlTxFromPg(client));
      await client.query("COMMIT");
      return out;
    } catch (err) {
      failed = true;
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release(failed ? true : undefined);
    }
  }
}

function conflictOf(err: unknown): InsertConflict {
  const code = pgCode(err);
  if (code === PG_FOREIGN_KEY_VIOLATION) return "gone";
  if (code === PG_UNIQUE_VIOLATION) {
    return pgConstraint(err) === "messages_one_streaming_per_conversation" ? "busy" : "duplicate";
  }
  throw err;
}
