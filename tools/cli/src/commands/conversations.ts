// Conversation commands: list, show (with history), resume an interrupted reply, rename, delete.
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { MessageRole, MessageStatus, type Message } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { intArg, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { CliError, EXIT_FAILURE, EXIT_INTERRUPTED, UsageError } from "../errors.js";
import { clip, count, dateTime, table } from "../format.js";
import { collectPages } from "./pages.js";

const DEFAULT_LIST_LIMIT = 20;
const DEFAULT_SHOW_LIMIT = 50;
const ID = [{ name: "<id>", description: "Conversation id (see `luna conversations`)" }];

/** The newest `limit` messages of a conversation, oldest first. */
async function history(ctx: Context, conversationId: string, limit: number) {
  const chat = ctx.clients.client(ChatService);
  let conversation;
  const pages: Message[][] = [];
  let total = 0;
  let pageToken = "";
  // The first page holds the newest messages; next pages go back in time.
  for (;;) {
    const res = await chat.getConversation({ conversationId, messagesPage: { pageSize: Math.min(200, limit - total), pageToken } });
    conversation ??= res.conversation;
    pages.unshift(res.messages);
    total += res.messages.length;
    pageToken = res.messagesPage?.nextPageToken ?? "";
    if (!pageToken || total >= limit || res.messages.length === 0) break;
  }
  if (!conversation) throw new CliError("the server returned no conversation");
  return { conversation, messages: pages.flat().slice(-limit) };
}

function statusNote(m: Message): string {
  switch (m.status) {
    case MessageStatus.STREAMING:
      return " [still being written: `luna conversation resume` follows it]";
    case MessageStatus.STOPPED:
      return " [stopped]";
    case MessageStatus.FAILED:
      return ` [failed: ${m.errorMessage || m.errorCode}]`;
    default:
      return "";
  }
}

export const conversationCommands: CommandSpec<Context>[] = [
  {
    name: "conversations",
    summary: "List your conversations, newest activity first.",
    options: { limit: { type: "string", value: "N", description: `How many (default ${DEFAULT_LIST_LIMIT})` } },
    async run(ctx, args) {
      ctx.requireSession();
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_LIST_LIMIT }, "conversations");
      const chat = ctx.clients.client(ChatService);
      const list = await collectPages(limit, async (page) => {
        const res = await chat.listConversations({ page });
        return { items: res.conversations, next: res.page?.nextPageToken };
      });
      if (list.length === 0) return ctx.out("No conversations yet.");
      for (const line of table(["ID", "LAST ACTIVITY", "MODEL", "MESSAGES", "TITLE"],
        list.map((c) => [c.id, dateTime(c.lastActivityAt), c.modelId, String(c.messageCount), clip(c.title || c.lastMessagePreview || "(untitled)", 60)]))) {
        ctx.out(line);
      }
    },
  },
  {
    name: "conversation show",
    summary: "Show a conversation and its messages (the newest, oldest first).",
    positionals: ID,
    options: { limit: { type: "string", value: "N", description: `How many messages (default ${DEFAULT_SHOW_LIMIT})` } },
    async run(ctx, args) {
      ctx.requireSession();
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_SHOW_LIMIT }, "conversation show");
      const { conversation: c, messages } = await history(ctx, args.positionals[0]!, limit);
      ctx.out(`${c.title || c.lastMessagePreview || "(untitled)"}`);
      ctx.out(`  id ${c.id} · ${c.modelId} · ${count(c.messageCount, "message")} · last activity ${dateTime(c.lastActivityAt)}`);
      if (c.systemPrompt) ctx.out(`  system: ${c.systemPrompt}`);
      // Regenerated replies are siblings: the active one is shown, with how many there are.
      const siblings = new Map<string, number>();
      for (const m of messages) if (m.role === MessageRole.ASSISTANT) siblings.set(m.parentId, (siblings.get(m.parentId) ?? 0) + 1);
      // Edited messages (ask --edit, the web client) are versions: the newest is shown, with how many there are.
      const versions = new Map<string, number>();
      for (const m of messages) if (m.role === MessageRole.USER) versions.set(m.parentId || m.id, (versions.get(m.parentId || m.id) ?? 0) + 1);
      for (const m of messages) {
        if (m.role === MessageRole.USER) {
          const n = versions.get(m.parentId || m.id) ?? 1;
          if (m.active) ctx.out(`\nyou>${n > 1 ? ` (edited, ${n} versions)` : ""} ${m.content}`);
        } else if (m.active) {
          const n = siblings.get(m.parentId) ?? 1;
          ctx.out(`\n${m.modelId || c.modelId}>${n > 1 ? ` (latest of ${n} replies)` : ""} ${m.content}${statusNote(m)}`);
        }
      }
    },
  },
  {
    name: "conversation resume",
    summary: "Follow a reply that is still being written (e.g. after the terminal was closed) to its end.",
    details: "Prints the whole reply (what was written so far, then the rest as it arrives). Ctrl-C stops following; the reply goes on.",
    positionals: ID,
    async run(ctx, args) {
      ctx.requireSession();
      const chat = ctx.clients.client(ChatService);
      const res = await chat.getConversation({ conversationId: args.positionals[0]!, messagesPage: { pageSize: 1 } });
      const last = res.messages.at(-1);
      if (!last || last.role !== MessageRole.ASSISTANT) throw new CliError("this conversation has no reply to resume");
      if (last.status !== MessageStatus.STREAMING) {
        ctx.out(last.content);
        ctx.note(`[the last reply is not being written any more${statusNote(last) || " (complete)"}]`);
        return;
      }
      const abort = new AbortController();
      const off = ctx.io.onInterrupt(() => abort.abort());
      let written = "";
      try {
        for await (const r of chat.resumeStream({ messageId: last.id, offset: 0n }, { signal: abort.signal, timeoutMs: 0 })) {
          const ev = r.event?.event;
          if (ev?.case === "delta") {
            // `offset` is the reply's length after this delta: write only what is new.
            const start = Number(ev.value.offset) - ev.value.text.length;
            const fresh = start < written.length ? ev.value.text.slice(written.length - start) : ev.value.text;
            written += fresh;
            ctx.io.stdout.write(fresh);
          } else if (ev?.case === "finished") {
            if (written && !written.endsWith("\n")) ctx.io.stdout.write("\n");
            ctx.note(`[${count(ev.value.completionTokens, "token")}, ${count(ev.value.creditsCharged, "credit")}]`);
            return;
          } else if (ev?.case === "error") {
            if (written && !written.endsWith("\n")) ctx.io.stdout.write("\n");
            ctx.note(`luna: the reply failed: ${ev.value.message || ev.value.code}`);
            return EXIT_FAILURE;
          }
        }
      } catch (err) {
        if (abort.signal.aborted) {
          if (written && !written.endsWith("\n")) ctx.io.stdout.write("\n");
          ctx.note("[stopped following; the reply goes on]");
          return EXIT_INTERRUPTED;
        }
        throw err;
      } finally {
        off();
      }
      if (written && !written.endsWith("\n")) ctx.io.stdout.write("\n");
    },
  },
  {
    name: "conversation rename",
    summary: "Give a conversation a new title.",
    positionals: [...ID, { name: "<title>", description: "The new title" }],
    async run(ctx, args) {
      ctx.requireSession();
      const title = args.positionals[1]!.trim();
      if (!title) throw new UsageError("the title is empty", "conversation rename");
      const res = await ctx.clients.client(ChatService).renameConversation({ conversationId: args.positionals[0]!, title });
      ctx.out(`Renamed to "${res.conversation?.title ?? title}".`);
    },
  },
  {
    name: "conversation delete",
    summary: "Delete a conversation and its messages.",
    positionals: ID,
    async run(ctx, args) {
      ctx.requireSession();
      await ctx.clients.client(ChatService).deleteConversation({ conversationId: args.positionals[0]! });
      ctx.out("Conversation deleted.");
    },
  },
];
