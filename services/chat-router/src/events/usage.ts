/** `luna.events.usage.recorded`, written to the outbox in the same transaction as the reply's final state. */
import { randomUUID } from "node:crypto";
import { toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { UsageRecordedSchema, type UsageRecorded } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import { enqueueEvent, type SqlTx } from "@luna/kit";

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

/** Enqueues one usage event for a reply (feature "chat"). */
export async function enqueueUsage(tx: SqlTx, u: ReplyUsage): Promise<void> {
  const id = randomUUID();
  const ev: UsageRecorded = {
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
  await enqueueEvent(tx, { id, subject: USAGE_RECORDED_SUBJECT, payload: toBinary(UsageRecordedSchema, ev) });
}
