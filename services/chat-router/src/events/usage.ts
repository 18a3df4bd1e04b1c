/** `luna.events.usage.recorded`, written to the outbox by the same statement as the reply's final state. */
import { randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { outboxRow, type OutboxRow } from "@luna/kit";

export type { OutboxRow } from "@luna/kit";

export const USAGE_RECORDED_SUBJECT = "luna.events.usage.recorded";

export interface ReplyUsage {
  userId: string;
  modelId: string;
  promptTokens: number;
  completionTokens: number;
  creditsCharged: bigint;
  /** The assistant message id. */
  messageId: string;
}

/**
 * The usage event of a reply as an outbox row (`luna.events.usage.recorded`, feature "chat"). The reply's final
 * state and this row are written by one statement (`ChatStore.finishReply`) instead of a transaction of several, so
 * the row is built here with what `enqueueEvent` would add: a UUID id, the constant subject, the trace headers.
 */
export function usageOutboxRow(u: ReplyUsage): OutboxRow {
  const id = randomUUID();
  return outboxRow({ id, subject: USAGE_RECORDED_SUBJECT, payload: toBinary(UsageRecordedSchema, usageEvent(id, u)) });
}

function usageEvent(id: string, u: ReplyUsage): UsageRecorded {
  return {
    $typeName: "luna.events.v1.UsageRecorded",
    meta: { $typeName: "luna.events.v1.EventMeta", eventId: id, occurredAt: timestampNow(), subjectId: u.userId },
    userId: u.userId,
    modelId: u.modelId,
    feature: "chat",
    promptTokens: BigInt(u.promptTokens),
    completionTokens: BigInt(u.completionTokens),
    images: 0n,
    creditsCharged: u.creditsCharged,
    reference: u.messageId,
  };
}
