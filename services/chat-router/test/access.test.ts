// Integration: conversation management, privacy between users, bad input on every field of every RPC (INVALID_ARGUMENT
// naming the field, nothing written), the schema contract, and the user.deleted consumer.
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { assertSchemaMatchesDatabase } from "@luna/kit/testing";
import { invalidPageSize, invalidPageToken } from "@luna/kit";
import { startVllmSim, type VllmSim } from "@luna/sim-vllm";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { MessageStatus } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { ChatStore } from "../src/data/store.js";
import { handleUserDeleted } from "../src/events/user-deleted.js";
import { collect, startPlatform, waitFor, type Platform } from "./harness.js";

let platform: Platform;
let sim: VllmSim;
const VALID_ID = "6f9619ff-8b86-4011-b42d-00c04fc964ff";

beforeAll(async () => {
  sim = await startVllmSim({ models: ["sim-model:4096"], outputTokens: { min: 10, max: 20 } });
  platform = await startPlatform();
  await platform.addModel({ id: "m-a", baseUrls: [sim.url], contextWindow: 4096, maxOutputTokens: 128 });
});

afterAll(async () => {
  await platform?.stop();
  await sim?.close();
});

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return { code: err.code, message: err.rawMessage };
}

async function rowCounts(): Promise<{ conversations: number; messages: number }> {
  const db = new pg.Client({ connectionString: platform.dbs.chat.url });
  await db.connect();
  try {
    const r = await db.query("SELECT (SELECT count(*) FROM conversations)::int AS c, (SELECT count(*) FROM messages)::int AS m");
    return { conversations: r.rows[0].c as number, messages: r.rows[0].m as number };
  } finally {
    await db.end();
  }
}

describe("conversations", () => {
  it("lists newest activity first with pages, renames, and deletes", async () => {
    const u = await platform.user(1000n);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await u.chat.createConversation({ modelId: "m-a", title: `c${i}` })).conversation!.id);
    // Activity in the oldest moves it to the top.
    await collect(u.chat.sendMessage({ conversationId: ids[0]!, text: "bump", clientMessageId: "b" }));
    const seen: string[] = [];
    let token = "";
    do {
      const page = await u.chat.listConversations({ page: { pageSize: 2, pageToken: token } });
      expect(page.conversations.length).toBeLessThanOrEqual(2);
      seen.push(...page.conversations.map((c) => c.id));
      token = page.page!.nextPageToken;
    } while (token);
    expect(seen).toEqual([ids[0], ids[4], ids[3], ids[2], ids[1]]);
    const top = (await u.chat.listConversations({})).conversations[0]!;
    expect(top.lastMessagePreview).not.toBe("");
    expect(top.messageCount).toBe(2);

    const renamed = await u.chat.renameConversation({ conversationId: ids[1]!, title: "  Holiday plans " });
    expect(renamed.conversation!.title).toBe("Holiday plans");
    await u.chat.deleteConversation({ conversationId: ids[0]! });
    expect((await codeOf(u.chat.getConversation({ conversationId: ids[0]! }))).code).toBe(Code.NotFound);
    expect((await u.chat.listConversations({})).conversations.map((c) => c.id)).not.toContain(ids[0]);
  });

  it("pages messages from the newest back, oldest first within a page", async () => {
    const u = await platform.user(1000n);
    const id = (await u.chat.createConversation({ modelId: "m-a", title: "p" })).conversation!.id;
    for (let i = 0; i < 3; i++) await collect(u.chat.sendMessage({ conversationId: id, text: `q${i}`, clientMessageId: `q${i}` }));
    const first = await u.chat.getConversation({ conversationId: id, messagesPage: { pageSize: 4 } });
    expect(first.messages.map((m) => m.content).filter((c) => c.startsWith("q"))).toEqual(["q1", "q2"]);
    const second = await u.chat.getConversation({ conversationId: id, messagesPage: { pageSize: 4, pageToken: first.messagesPage!.nextPageToken } });
    expect(second.messages.map((m) => m.content)[0]).toBe("q0");
    expect(second.messages).toHaveLength(2);
    expect(second.messagesPage!.nextPageToken).toBe("");
  });

  it("stops a streaming reply when its conversation is deleted", async () => {
    const u = await platform.user(1000n);
    const id = (await u.chat.createConversation({ modelId: "m-a", title: "d" })).conversation!.id;
    sim.setFaults({ slowTokenMs: 30 });
    try {
      const aborted = sim.stats().requests.aborted;
      let deleted = false;
      const c = await collect(u.chat.sendMessage({ conversationId: id, text: "long", clientMessageId: "d" }), async (s) => {
        if (s.deltas.length === 2 && !deleted) {
          deleted = true;
          await u.chat.deleteConversation({ conversationId: id });
        }
      });
      expect(c.finished?.completionTokens ?? 0n).toBeGreaterThan(0n);
      await waitFor(() => sim.stats().requests.aborted === aborted + 1, "the upstream request to be aborted");
      // Its credits were still charged for the text produced.
      expect(await platform.available(u.id)).toBe(1000n - c.finished!.creditsCharged);
    } finally {
      sim.setFaults({ slowTokenMs: 0 });
    }
    await platform.assertInvariants();
  });
});

describe("privacy", () => {
  it("answers NOT_FOUND for another user's conversation and messages on every RPC, and changes nothing", async () => {
    const owner = await platform.user(1000n);
    const intruder = await platform.user(1000n);
    const id = (await owner.chat.createConversation({ modelId: "m-a", title: "mine" })).conversation!.id;
    const c = await collect(owner.chat.sendMessage({ conversationId: id, text: "secret", clientMessageId: "s" }));
    const reply = c.started!.assistantMessageId;
    const calls: Array<[string, () => Promise<unknown>]> = [
      ["get", () => intruder.chat.getConversation({ conversationId: id })],
      ["rename", () => intruder.chat.renameConversation({ conversationId: id, title: "pwned" })],
      ["delete", () => intruder.chat.deleteConversation({ conversationId: id })],
      ["send", () => collect(intruder.chat.sendMessage({ conversationId: id, text: "hi", clientMessageId: "i" }))],
      ["stop", () => intruder.chat.stopGeneration({ messageId: reply })],
      ["regenerate", () => collect(intruder.chat.regenerateMessage({ messageId: reply }))],
      ["resume", () => collect(intruder.chat.resumeStream({ messageId: reply, offset: 0n }))],
    ];
    for (const [name, call] of calls) expect((await codeOf(call())).code, name).toBe(Code.NotFound);
    expect((await intruder.chat.listConversations({})).conversations).toEqual([]);
    const got = await owner.chat.getConversation({ conversationId: id });
    expect(got.conversation!.title).toBe("mine");
    expect(got.messages).toHaveLength(2);
    expect(await platform.available(intruder.id)).toBe(1000n);
    await platform.assertInvariants();
  });

  it("requires a signed-in user", async () => {
    const anonymous = createClient(ChatService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${platform.chat.hosted.port}` }));
    expect((await codeOf(anonymous.listConversations({}))).code).toBe(Code.Unauthenticated);
  });
});

describe("bad input", () => {
  it("is INVALID_ARGUMENT naming the field on every RPC, with nothing written", async () => {
    const u = await platform.user(1000n);
    const id = (await u.chat.createConversation({ modelId: "m-a", title: "b" })).conversation!.id;
    const reply = (await collect(u.chat.sendMessage({ conversationId: id, text: "ok", clientMessageId: "ok" }))).started!.assistantMessageId;
    const before = await rowCounts();
    const available = await platform.available(u.id);
    const requests = sim.stats().requests.total;
    const chat = u.chat;
    const send = (r: Partial<{ conversationId: string; text: string; clientMessageId: string; maxOutputTokens: number }>) =>
      collect(chat.sendMessage({ conversationId: id, text: "hello", clientMessageId: "new", ...r }));
    const cases: Array<[string, () => Promise<unknown>]> = [
      ["model_id", () => chat.createConversation({ modelId: "" })],
      ["model_id", () => chat.createConversation({ modelId: "../../etc" })],
      ["model_id", () => chat.createConversation({ modelId: "no-such-model" })],
      ["title", () => chat.createConversation({ modelId: "m-a", title: "x".repeat(201) })],
      ["title", () => chat.createConversation({ modelId: "m-a", title: "two\nlines" })],
      ["system_prompt", () => chat.createConversation({ modelId: "m-a", systemPrompt: "x".repeat(8001) })],
      ["system_prompt", () => chat.createConversation({ modelId: "m-a", systemPrompt: "nul\u0000byte" })],
      ["page.page_size", () => chat.listConversations({ page: { pageSize: -1 } })],
      ["page.page_token", () => chat.listConversations({ page: { pageToken: "not-a-token" } })],
      ["conversation_id", () => chat.getConversation({ conversationId: "" })],
      ["conversation_id", () => chat.getConversation({ conversationId: "1; DROP TABLE messages" })],
      ["messages_page.page_size", () => chat.getConversation({ conversationId: id, messagesPage: { pageSize: -3 } })],
      ["messages_page.page_token", () => chat.getConversation({ conversationId: id, messagesPage: { pageToken: "%%%" } })],
      ["conversation_id", () => chat.renameConversation({ conversationId: "x", title: "t" })],
      ["title", () => chat.renameConversation({ conversationId: id, title: "   " })],
      ["title", () => chat.renameConversation({ conversationId: id, title: "y".repeat(500) })],
      ["conversation_id", () => chat.deleteConversation({ conversationId: "" })],
      ["conversation_id", () => send({ conversationId: "nope" })],
      ["text", () => send({ text: "" })],
      ["text", () => send({ text: " \n\t " })],
      ["text", () => send({ text: "z".repeat(32_001) })],
      ["text", () => send({ text: "bell\u0007" })],
      ["client_message_id", () => send({ clientMessageId: "" })],
      ["client_message_id", () => send({ clientMessageId: "has spaces" })],
      ["client_message_id", () => send({ clientMessageId: "k".repeat(101) })],
      ["max_output_tokens", () => send({ maxOutputTokens: -5 })],
      ["message_id", () => chat.stopGeneration({ messageId: "" })],
      ["message_id", () => collect(chat.regenerateMessage({ messageId: "zzz" }))],
      ["max_output_tokens", () => collect(chat.regenerateMessage({ messageId: reply, maxOutputTokens: -1 }))],
      ["message_id", () => collect(chat.resumeStream({ messageId: "", offset: 0n }))],
      ["offset", () => collect(chat.resumeStream({ messageId: reply, offset: -1n }))],
    ];
    for (const [field, call] of cases) {
      const { code, message } = await codeOf(call());
      expect(code, `${field}: ${message}`).toBe(Code.InvalidArgument);
      expect(message.startsWith(`${field}: `), message).toBe(true);
    }
    expect(await rowCounts()).toEqual(before);
    expect(await platform.available(u.id)).toBe(available);
    expect(sim.stats().requests.total).toBe(requests);
    // Page errors in the kit's wording, as in every service's lists.
    expect((await codeOf(chat.listConversations({ page: { pageSize: -1 } }))).message).toBe(invalidPageSize("page.page_size", -1).rawMessage);
    expect((await codeOf(chat.getConversation({ conversationId: id, messagesPage: { pageToken: "%%%" } }))).message)
      .toBe(invalidPageToken("messages_page.page_token").rawMessage);
    // Unknown but well-formed ids are NOT_FOUND.
    expect((await codeOf(chat.getConversation({ conversationId: VALID_ID }))).code).toBe(Code.NotFound);
    expect((await codeOf(send({ conversationId: VALID_ID }))).code).toBe(Code.NotFound);
    expect(await rowCounts()).toEqual(before);
    await platform.assertInvariants();
  });
});

describe("schema", () => {
  it("matches the migrations", async () => {
    await assertSchemaMatchesDatabase({
      schemaPath: fileURLToPath(new URL("../prisma/schema.prisma", import.meta.url)),
      databaseUrl: platform.dbs.chat.url,
      ignoreIndexes: ["messages_one_streaming_per_conversation", "outbox_events_unpublished_seq_idx"],
    });
  });
});

describe("user.deleted", () => {
  it("deletes the user's conversations once, whatever the redeliveries", async () => {
    const u = await platform.user(1000n);
    const keep = await platform.user(1000n);
    const id = (await u.chat.createConversation({ modelId: "m-a", title: "gone" })).conversation!.id;
    await collect(u.chat.sendMessage({ conversationId: id, text: "bye", clientMessageId: "bye" }));
    const kept = (await keep.chat.createConversation({ modelId: "m-a", title: "kept" })).conversation!.id;
    const pool = new pg.Pool({ connectionString: platform.dbs.chat.url, max: 2 });
    const stopped: string[] = [];
    try {
      const deps = { store: new ChatStore(pool), stopReply: (m: string) => stopped.push(m), forgetUser: () => {}, log: platform.log };
      const data = toBinary(UserDeletedSchema, create(UserDeletedSchema, { meta: { eventId: "ev-1" }, userId: u.id }));
      const msg = { subject: "luna.events.user.deleted", data, msgId: "ev-1" };
      expect(await handleUserDeleted(deps, msg)).toBe("ack");
      expect((await codeOf(u.chat.getConversation({ conversationId: id }))).code).toBe(Code.NotFound);
      expect((await keep.chat.getConversation({ conversationId: kept })).conversation!.title).toBe("kept");
      // A redelivery is recorded in the inbox and changes nothing (a conversation made since survives it).
      const later = (await u.chat.createConversation({ modelId: "m-a", title: "later" })).conversation!.id;
      expect(await handleUserDeleted(deps, msg)).toBe("ack");
      expect((await u.chat.getConversation({ conversationId: later })).conversation!.title).toBe("later");
      expect(await handleUserDeleted(deps, { subject: "luna.events.user.deleted", data: new Uint8Array([0xff, 0xff]), msgId: "bad" })).toBe("term");
      expect(stopped).toEqual([]);
    } finally {
      await pool.end();
    }
    expect(MessageStatus.COMPLETE).toBeDefined();
  });
});
