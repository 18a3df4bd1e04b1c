// Chat commands: `ask` (one question, the reply streamed to stdout) and `chat` (an interactive REPL).
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { FinishReason, MessageRole, type ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelKind, ModelStatus, type Model } from "@luna/contracts/luna/models/v1/models_pb.js";
import { intArg, str, type Args, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { CliError, describeError, EXIT_FAILURE, EXIT_INTERRUPTED, UsageError } from "../errors.js";
import { count, credits, warmingUp } from "../format.js";
import { readAll } from "./stdin.js";

/** While a reply waits for its model to wake, its "warming up" line is repeated at most this often. */
const WAITING_NOTE_INTERVAL_MS = 30_000;

/** After /stop or Ctrl-C the server is asked to stop (so the reply ends with its bill); the stream is cut after this. */
const STOP_GRACE_MS = 3000;

/** The text models a conversation can use. */
async function textModels(ctx: Context): Promise<Model[]> {
  const res = await ctx.clients.client(ModelService).listModels({ kind: ModelKind.TEXT });
  return res.models;
}

/** The model asked for (checked against the catalog), or the first available one. */
async function pickModel(ctx: Context, wanted: string | undefined, command: string): Promise<Model> {
  const models = await textModels(ctx);
  if (wanted) {
    const m = models.find((x) => x.id === wanted);
    if (!m) {
      const ids = models.map((x) => x.id).join(", ") || "none";
      throw new UsageError(`unknown text model "${wanted}" (available: ${ids})`, command);
    }
    return m;
  }
  const m = models.find((x) => x.status === ModelStatus.AVAILABLE) ?? models[0];
  if (!m) throw new CliError("no text model is available on this server");
  return m;
}

/** How one reply ended. */
export interface ReplyOutcome {
  ended: "finished" | "error" | "stopped";
  text: string;
  summary?: string;
  errorMessage?: string;
}

/** A reply being streamed; `stop()` asks the server to stop it, then cuts the stream if it does not end soon. */
class Reply {
  private readonly abort = new AbortController();
  private assistantMessageId = "";
  private stopping = false;

  private lastWaitingNote = 0;

  constructor(private readonly ctx: Context) {}

  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    if (!this.assistantMessageId) return this.abort.abort();
    const timer = setTimeout(() => this.abort.abort(), STOP_GRACE_MS);
    timer.unref();
    this.ctx.clients.client(ChatService).stopGeneration({ messageId: this.assistantMessageId }).catch(() => this.abort.abort());
  }

  /** Streams the reply to `write` as it arrives; with `editOf` (a user message id), `text` replaces that message. */
  async run(conversationId: string, text: string, maxOutputTokens: number, write: (s: string) => void, editOf?: string): Promise<ReplyOutcome> {
    let written = "";
    const outcome = (o: Omit<ReplyOutcome, "text">): ReplyOutcome => ({ ...o, text: written });
    try {
      const chat = this.ctx.clients.client(ChatService);
      const options = { signal: this.abort.signal, timeoutMs: 0 };
      const stream: AsyncIterable<{ event?: ChatEvent }> = editOf
        ? chat.editMessage({ messageId: editOf, text, clientMessageId: randomUUID(), maxOutputTokens }, options)
        : chat.sendMessage({ conversationId, text, clientMessageId: randomUUID(), maxOutputTokens }, options);
      for await (const res of stream) {
        const ev: ChatEvent["event"] | undefined = res.event?.event;
        switch (ev?.case) {
          case "started":
            this.assistantMessageId = ev.value.assistantMessageId;
            break;
          case "waiting":
            // The model scaled to zero and is starting: say so (the server repeats it every few seconds; we rarely).
            if (Date.now() - this.lastWaitingNote >= WAITING_NOTE_INTERVAL_MS) {
              this.lastWaitingNote = Date.now();
              this.ctx.note(warmingUp(ev.value.modelId, Number(ev.value.elapsedMs), Number(ev.value.expectedWaitMs)));
            }
            break;
          case "delta":
            written += ev.value.text;
            write(ev.value.text);
            break;
          case "finished": {
            const f = ev.value;
            const summary = `${count(f.completionTokens, "token")}, ${count(f.creditsCharged, "credit")}; ${credits(f.balanceAfter)} left`;
            const stopped = f.finishReason === FinishReason.CANCELLED;
            const cut = f.finishReason === FinishReason.LENGTH ? " (reached the token limit)" : "";
            return outcome({ ended: stopped ? "stopped" : "finished", summary: summary + cut });
          }
          case "error":
            return outcome({ ended: "error", errorMessage: ev.value.message || ev.value.code,
              summary: `${count(ev.value.completionTokens, "token")}, ${count(ev.value.creditsCharged, "credit")}; ${credits(ev.value.balanceAfter)} left` });
          default:
            break;
        }
      }
      return outcome({ ended: this.stopping ? "stopped" : "finished" });
    } catch (err) {
      if (this.abort.signal.aborted || (err instanceof ConnectError && err.code === Code.Canceled && this.stopping)) {
        return outcome({ ended: "stopped" });
      }
      if (written) return outcome({ ended: "error", errorMessage: describeError(err, { url: this.ctx.settings.url, signedIn: true }) });
      throw err;
    }
  }
}

/** The id of a conversation's newest user message (what `ask --edit` replaces). */
async function lastUserMessage(ctx: Context, conversationId: string): Promise<string> {
  const { messages } = await ctx.clients.client(ChatService).getConversation({ conversationId, messagesPage: { pageSize: 20 } });
  const last = messages.findLast((m) => m.role === MessageRole.USER && m.active);
  if (!last) throw new CliError("this conversation has no message of yours to edit yet");
  return last.id;
}

/** The conversation `ask` continues (--conversation ID, or --continue: the most recent), if any. */
async function conversationToContinue(ctx: Context, args: Args, command: string): Promise<{ id: string; modelId: string } | undefined> {
  const id = str(args, "conversation");
  const latest = args.options.continue === true;
  if (!id && !latest) return undefined;
  if (id && latest) throw new UsageError("--conversation and --continue are alternatives: pass one", command);
  for (const flag of ["model", "system"]) {
    if (str(args, flag) !== undefined) throw new UsageError(`--${flag} is fixed for a conversation: leave it out when continuing one`, command);
  }
  const chat = ctx.clients.client(ChatService);
  if (id) {
    const res = await chat.getConversation({ conversationId: id, messagesPage: { pageSize: 1 } });
    if (!res.conversation) throw new CliError("the server returned no conversation");
    return { id: res.conversation.id, modelId: res.conversation.modelId };
  }
  const res = await chat.listConversations({ page: { pageSize: 1 } });
  const c = res.conversations[0];
  if (!c) throw new CliError("you have no conversation to continue yet");
  return { id: c.id, modelId: c.modelId };
}

async function createConversation(ctx: Context, modelId: string, systemPrompt: string): Promise<string> {
  const res = await ctx.clients.client(ChatService).createConversation({ modelId, systemPrompt });
  if (!res.conversation) throw new CliError("the server returned no conversation");
  return res.conversation.id;
}

function maxTokens(args: Args, command: string): number {
  return intArg(args.options["max-tokens"], "--max-tokens", { min: 1, max: 1_000_000, default: 0 }, command);
}

const chatOptions = {
  model: { type: "string", value: "ID", description: "Text model (default: the first available; see `luna models`)" },
  system: { type: "string", value: "TEXT", description: "System prompt for the conversation" },
  "max-tokens": { type: "string", value: "N", description: "Longest reply in tokens (default: the model's maximum)" },
} as const;

const REPL_HELP = [
  "  /model [id]  show the models, or switch (starts a new conversation)",
  "  /new         start a new conversation",
  "  /stop        stop the reply being written (Ctrl-C does too)",
  "  /help        this help;  Ctrl-D or /exit quits",
].join("\n");

export const chatCommands: CommandSpec<Context>[] = [
  {
    name: "ask",
    summary: "Ask one question; the reply streams to stdout.",
    details: "Use \"-\" as the question to read it from stdin. Ctrl-C stops the reply (what was written is kept and billed).\n" +
      "Each ask starts a conversation (`luna conversations` lists them); --conversation ID or -c (the most recent one)\n" +
      "continues one instead, with its model and system prompt; with --edit the question replaces your last message there\n" +
      "(the earlier version and its reply stay, as older versions).\n" +
      "Example: luna ask \"Write a haiku about GPUs\" --model qwen2.5-7b-instruct; luna ask -c \"Another one\"; luna ask -c --edit \"Rather this\"",
    positionals: [{ name: "<question>", description: "The question (or - for stdin)" }],
    options: {
      ...chatOptions,
      conversation: { type: "string", value: "ID", description: "Continue this conversation (see `luna conversations`)" },
      continue: { type: "boolean", short: "c", description: "Continue your most recent conversation" },
      edit: { type: "boolean", description: "Replace your last message of that conversation with the question and get a new reply" },
    },
    async run(ctx, args) {
      const command = "ask";
      const question = args.positionals[0] === "-" ? (await readAll(ctx.io)).trim() : args.positionals[0]!;
      if (!question.trim()) throw new UsageError("the question is empty", command);
      const limit = maxTokens(args, command);
      ctx.requireSession();
      const continued = await conversationToContinue(ctx, args, command);
      if (args.options.edit === true && !continued) throw new UsageError("--edit needs the conversation: --conversation ID or -c", command);
      const editOf = args.options.edit === true ? await lastUserMessage(ctx, continued!.id) : undefined;
      const model = continued ? { id: continued.modelId } : await pickModel(ctx, str(args, "model"), command);
      const conversationId = continued?.id ?? await createConversation(ctx, model.id, str(args, "system") ?? "");
      const reply = new Reply(ctx);
      const off = ctx.io.onInterrupt(() => reply.stop());
      try {
        const res = await reply.run(conversationId, question, limit, (s) => ctx.io.stdout.write(s), editOf);
        if (res.text && !res.text.endsWith("\n")) ctx.io.stdout.write("\n");
        if (res.ended === "error") {
          ctx.note(`luna: the reply failed: ${res.errorMessage}`);
          return EXIT_FAILURE;
        }
        if (res.summary) ctx.note(`[${res.ended === "stopped" ? "stopped · " : ""}${model.id} · ${res.summary}]`);
        else if (res.ended === "stopped") ctx.note("[stopped]");
        return res.ended === "stopped" ? EXIT_INTERRUPTED : undefined;
      } finally {
        off();
      }
    },
  },
  {
    name: "chat",
    summary: "Chat interactively; replies stream as they are written.",
    details: `Inside the chat:\n${REPL_HELP}`,
    options: chatOptions,
    async run(ctx, args) {
      const limit = maxTokens(args, "chat");
      ctx.requireSession();
      const model = await pickModel(ctx, str(args, "model"), "chat");
      await repl(ctx, { model, systemPrompt: str(args, "system") ?? "", maxOutputTokens: limit });
    },
  },
];

interface ReplOptions {
  model: Model;
  systemPrompt: string;
  maxOutputTokens: number;
}

/**
 * The chat loop. Lines are handled in order (typed-ahead or piped lines wait for the reply before them), except
 * `/stop`, which acts at once. Ctrl-C stops the current reply and never ends the program; Ctrl-D ends it.
 */
async function repl(ctx: Context, opts: ReplOptions): Promise<void> {
  const { io } = ctx;
  const terminal = io.stdin.isTTY === true && io.stdout.isTTY === true;
  // At a terminal readline echoes what is typed; while a reply is written that echo would land inside the reply
  // ("/stop" in the text), so it is muted then.
  let muted = false;
  const echo = Object.assign(new Writable({
    write(chunk: Buffer | string, _enc, done) {
      if (!muted) io.stdout.write(chunk);
      done();
    },
  }), { isTTY: io.stdout.isTTY, columns: io.stdout.columns });
  const rl = createInterface({ input: io.stdin, output: terminal ? echo : io.stdout, terminal, prompt: "you> " });
  let model = opts.model;
  let conversationId: string | undefined;
  let current: Reply | undefined;
  const queue: string[] = [];
  let closed = false;
  let quit = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };

  // Ctrl-C stops the reply being written. With nothing to stop it quits: at once without a terminal, on the second
  // press at a terminal (the first one only clears the line, as shells do).
  let idleInterrupts = 0;
  const interrupt = () => {
    if (current) return current.stop();
    if (terminal && ++idleInterrupts < 2) {
      io.stdout.write("\n");
      ctx.note("(Ctrl-C again or Ctrl-D quits)");
      rl.prompt();
      return;
    }
    quit = true;
    rl.close();
  };
  rl.on("line", (line) => {
    idleInterrupts = 0;
    if (line.trim() === "/stop" && current) return current.stop();
    // At a terminal, a line typed while a reply is written is not kept for later (it would run long after it was
    // typed): say so. Piped input is read ahead and answered in order.
    if (terminal && current && line.trim()) return ctx.note("(a reply is being written: /stop or Ctrl-C stops it; then type again)");
    queue.push(line);
    notify();
  });
  rl.on("SIGINT", interrupt); // terminal mode: readline turns Ctrl-C into this event
  rl.on("close", () => {
    closed = true;
    // Ctrl-D at a terminal quits now; piped input ends only after its last line got its reply.
    if (terminal) current?.stop();
    notify();
  });
  const offInterrupt = io.onInterrupt(interrupt);

  ctx.note(`Chatting with ${model.displayName || model.id} (${model.id}). /help for commands; Ctrl-C stops a reply, Ctrl-D quits.`);
  try {
    while (!quit) {
      if (queue.length === 0) {
        if (closed) break;
        if (terminal) rl.prompt();
        await new Promise<void>((r) => (wake = r));
        continue;
      }
      const line = queue.shift()!.trim();
      if (!line) continue;
      if (line.startsWith("/")) {
        const [cmd, ...rest] = line.split(/\s+/);
        const arg = rest.join(" ");
        if (cmd === "/exit" || cmd === "/quit") break;
        if (cmd === "/help") ctx.note(REPL_HELP);
        else if (cmd === "/new") {
          conversationId = undefined;
          ctx.note(`New conversation with ${model.id}.`);
        } else if (cmd === "/stop") ctx.note("No reply is being written.");
        else if (cmd === "/model") {
          try {
            if (!arg) {
              for (const m of await textModels(ctx)) ctx.note(`${m.id === model.id ? "*" : " "} ${m.id}  ${m.displayName}`);
            } else {
              model = await pickModel(ctx, arg, "chat");
              conversationId = undefined;
              ctx.note(`Switched to ${model.id}; new conversation.`);
            }
          } catch (err) {
            ctx.note(`luna: ${describeError(err, { url: ctx.settings.url, signedIn: true })}`);
          }
        } else ctx.note(`Unknown command ${cmd}. /help lists the commands.`);
        continue;
      }
      try {
        conversationId ??= await createConversation(ctx, model.id, opts.systemPrompt);
        current = new Reply(ctx);
        muted = true;
        const res = await current.run(conversationId, line, opts.maxOutputTokens, (s) => io.stdout.write(s));
        if (res.text && !res.text.endsWith("\n")) io.stdout.write("\n");
        if (res.ended === "error") ctx.note(`luna: the reply failed: ${res.errorMessage}`);
        else if (res.ended === "stopped") ctx.note(res.summary ? `[stopped · ${res.summary}]` : "[stopped]");
        else if (res.summary) ctx.note(`[${res.summary}]`);
      } catch (err) {
        ctx.note(`luna: ${describeError(err, { url: ctx.settings.url, signedIn: true })}`);
      } finally {
        current = undefined;
        muted = false;
      }
    }
  } finally {
    offInterrupt();
    rl.removeAllListeners("close");
    rl.close();
    if (terminal) io.stdout.write("\n"); // leave the shell's prompt on a line of its own
  }
}
