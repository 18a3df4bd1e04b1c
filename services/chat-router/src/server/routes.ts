/** Connect handlers of luna.chat.v1.ChatService: validation → use case → protobuf. */
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import type { ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { requirePrincipal, type MethodRules } from "@luna/kit";
import type { ChatRouterConfig } from "../config.js";
import type { ChatEngine, ReplyStream } from "../chat/engine.js";
import { WARM_UP_TIMEOUT } from "../chat/reply-run.js";
import { CONVERSATIONS_PAGE, MESSAGES_PAGE, type Conversations } from "../chat/conversations.js";
import type { ReplyEvent } from "../live/reply.js";
import {
  checkClientMessageId,
  checkId,
  checkMaxOutputTokens,
  checkModelId,
  checkOffset,
  checkOptionalText,
  checkPageSize,
  checkText,
  checkTitle,
} from "../domain/validate.js";
import { conversationToProto, messageToProto } from "./convert.js";

/** Every ChatService method is for signed-in users; ownership is checked per conversation. */
export const CHAT_AUTH_RULES: MethodRules = { "luna.chat.v1.ChatService": "user" };

export interface RouteDeps {
  config: ChatRouterConfig;
  engine: ChatEngine;
  conversations: Conversations;
}

type StreamResponse<T extends string> = { $typeName: T; event: ChatEvent };

/**
 * Sends a reply stream to the client: `started`, then each event as the reply produces it. A client that goes away
 * closes its reader (the reply then stops after CHAT_DISCONNECT_GRACE unless someone resumes it). With
 * `unavailableOnWarmUpTimeout` (SendMessage, RegenerateMessage, EditMessage), a reply whose model did not wake in time ends the
 * RPC with UNAVAILABLE (its hold is already released) rather than an error event: the request may simply be retried.
 */
async function* relay<T extends string>(typeName: T, stream: ReplyStream, ctx: HandlerContext, unavailableOnWarmUpTimeout = false): AsyncGenerator<StreamResponse<T>> {
  const onAbort = () => stream.close();
  if (ctx.signal.aborted) stream.close();
  else ctx.signal.addEventListener("abort", onAbort, { once: true });
  const wrap = (event: ReplyEvent): StreamResponse<T> => ({ $typeName: typeName, event: { $typeName: "luna.chat.v1.ChatEvent", event } });
  try {
    yield wrap({ case: "started", value: stream.started });
    for (;;) {
      const ev = await stream.next();
      if (!ev) return;
      if (unavailableOnWarmUpTimeout && ev.case === "error" && ev.value.code === WARM_UP_TIMEOUT) throw new ConnectError(ev.value.message, Code.Unavailable);
      yield wrap(ev);
      if (ev.case === "finished" || ev.case === "error") return;
    }
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    stream.close();
  }
}

export function chatRoutes(deps: RouteDeps): (router: ConnectRouter) => void {
  const { config: cfg, engine, conversations } = deps;
  return (router) => {
    router.service(ChatService, {
      async createConversation(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        const modelId = checkModelId("model_id", req.modelId);
        const title = checkTitle("title", req.title, false);
        const systemPrompt = checkOptionalText("system_prompt", req.systemPrompt, cfg.CHAT_MAX_SYSTEM_PROMPT_CHARS);
        const row = await conversations.create(p, { modelId, title, systemPrompt: systemPrompt.trim() === "" ? "" : systemPrompt });
        return { conversation: conversationToProto(row) };
      },
      async listConversations(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        const size = checkPageSize("page.page_size", req.page?.pageSize ?? 0, CONVERSATIONS_PAGE.default, CONVERSATIONS_PAGE.max);
        const r = await conversations.list(p, size, req.page?.pageToken ?? "");
        return { conversations: r.items.map(conversationToProto), page: { nextPageToken: r.next } };
      },
      async getConversation(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        const id = checkId("conversation_id", req.conversationId);
        const size = checkPageSize("messages_page.page_size", req.messagesPage?.pageSize ?? 0, MESSAGES_PAGE.default, MESSAGES_PAGE.max);
        const r = await conversations.get(p, id, size, req.messagesPage?.pageToken ?? "");
        return { conversation: conversationToProto(r.conversation), messages: r.messages.map(messageToProto), messagesPage: { nextPageToken: r.next } };
      },
      async renameConversation(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        const id = checkId("conversation_id", req.conversationId);
        const title = checkTitle("title", req.title, true);
        return { conversation: conversationToProto(await conversations.rename(p, id, title)) };
      },
      async deleteConversation(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        await conversations.delete(p, checkId("conversation_id", req.conversationId));
        return {};
      },
      async *sendMessage(req, ctx) {
        const startedAt = performance.now();
        const p = requirePrincipal(ctx, "user");
        const conversationId = checkId("conversation_id", req.conversationId);
        const text = checkText("text", req.text, cfg.CHAT_MAX_MESSAGE_CHARS);
        const clientMessageId = checkClientMessageId("client_message_id", req.clientMessageId);
        const maxOutputTokens = checkMaxOutputTokens("max_output_tokens", req.maxOutputTokens);
        const stream = await engine.send(p, { conversationId, text, clientMessageId, maxOutputTokens }, startedAt);
        yield* relay("luna.chat.v1.SendMessageResponse", stream, ctx, true);
      },
      async stopGeneration(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        return { stopped: await engine.stopGeneration(p, checkId("message_id", req.messageId)) };
      },
      async *regenerateMessage(req, ctx) {
        const startedAt = performance.now();
        const p = requirePrincipal(ctx, "user");
        const messageId = checkId("message_id", req.messageId);
        const maxOutputTokens = checkMaxOutputTokens("max_output_tokens", req.maxOutputTokens);
        const stream = await engine.regenerate(p, { messageId, maxOutputTokens }, startedAt);
        yield* relay("luna.chat.v1.RegenerateMessageResponse", stream, ctx, true);
      },
      async *editMessage(req, ctx) {
        const startedAt = performance.now();
        const p = requirePrincipal(ctx, "user");
        const messageId = checkId("message_id", req.messageId);
        const text = checkText("text", req.text, cfg.CHAT_MAX_MESSAGE_CHARS);
        const clientMessageId = checkClientMessageId("client_message_id", req.clientMessageId);
        const maxOutputTokens = checkMaxOutputTokens("max_output_tokens", req.maxOutputTokens);
        const stream = await engine.edit(p, { messageId, text, clientMessageId, maxOutputTokens }, startedAt);
        yield* relay("luna.chat.v1.EditMessageResponse", stream, ctx, true);
      },
      async *resumeStream(req, ctx) {
        const p = requirePrincipal(ctx, "user");
        const messageId = checkId("message_id", req.messageId);
        const offset = checkOffset("offset", req.offset);
        const stream = await engine.resume(p, { messageId, offset });
        yield* relay("luna.chat.v1.ResumeStreamResponse", stream, ctx);
      },
    });
  };
}
