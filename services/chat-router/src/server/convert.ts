/** Database rows → protobuf messages of luna.chat.v1. */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ConversationSchema,
  FinishReason,
  MessageRole,
  MessageSchema,
  MessageStatus,
  type Conversation,
  type Message,
  type ReplyStarted,
} from "@luna/contracts/luna/chat/v1/chat_pb.js";
import type { ConversationRow, MessageRow } from "../data/store.js";
import type { ReplyEvent } from "../live/reply.js";

const STATUS: Record<MessageRow["status"], MessageStatus> = {
  streaming: MessageStatus.STREAMING,
  complete: MessageStatus.COMPLETE,
  stopped: MessageStatus.STOPPED,
  failed: MessageStatus.FAILED,
};

const FINISH: Record<string, FinishReason> = {
  stop: FinishReason.STOP,
  length: FinishReason.LENGTH,
  cancelled: FinishReason.CANCELLED,
  error: FinishReason.ERROR,
};

export function conversationToProto(c: ConversationRow): Conversation {
  return create(ConversationSchema, {
    id: c.id,
    modelId: c.modelId,
    title: c.title,
    systemPrompt: c.systemPrompt,
    createdAt: timestampFromDate(c.createdAt),
    lastActivityAt: timestampFromDate(c.lastActivityAt),
    lastMessagePreview: c.lastMessagePreview,
    messageCount: c.messageCount,
  });
}

export function messageToProto(m: MessageRow): Message {
  return create(MessageSchema, {
    id: m.id,
    conversationId: m.conversationId,
    role: m.role === "user" ? MessageRole.USER : MessageRole.ASSISTANT,
    content: m.content,
    status: STATUS[m.status],
    parentId: m.parentId ?? "",
    active: m.active,
    clientMessageId: m.clientMessageId ?? "",
    modelId: m.modelId,
    finishReason: FINISH[m.finishReason] ?? FinishReason.UNSPECIFIED,
    promptTokens: BigInt(m.promptTokens),
    completionTokens: BigInt(m.completionTokens),
    creditsCharged: m.creditsCharged,
    errorCode: m.errorCode,
    errorMessage: m.errorMessage,
    createdAt: timestampFromDate(m.createdAt),
    updatedAt: timestampFromDate(m.updatedAt),
  });
}

/** The `started` event of a stored reply (replays and ResumeStream). */
export function startedFromRow(m: MessageRow, replayed: boolean): ReplyStarted {
  return {
    $typeName: "luna.chat.v1.ReplyStarted",
    userMessageId: m.parentId ?? "",
    assistantMessageId: m.id,
    creditsHeld: m.creditsHeld,
    maxOutputTokens: m.maxOutputTokens,
    modelId: m.modelId,
    replayed,
  };
}

/** The final event of a stored, final reply. */
export function finalFromRow(m: MessageRow): ReplyEvent {
  const common = {
    promptTokens: BigInt(m.promptTokens),
    completionTokens: BigInt(m.completionTokens),
    creditsCharged: m.creditsCharged,
    balanceAfter: m.balanceAfter,
  };
  if (m.status === "failed") {
    return { case: "error", value: { $typeName: "luna.chat.v1.ReplyError", code: m.errorCode || "internal", message: m.errorMessage, ...common } };
  }
  return { case: "finished", value: { $typeName: "luna.chat.v1.ReplyFinished", finishReason: FINISH[m.finishReason] ?? FinishReason.STOP, ...common } };
}
