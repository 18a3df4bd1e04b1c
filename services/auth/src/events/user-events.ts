import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { enqueueEvent, type SqlTx } from "@luna/kit";
import { EventMetaSchema } from "@luna/contracts/luna/events/v1/envelope_pb.js";
import { UserCreatedSchema, UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";

/** Subjects on LUNA_EVENTS; billing (signup credits) and others consume them. */
export const USER_CREATED_SUBJECT = "luna.events.user.created";
export const USER_DELETED_SUBJECT = "luna.events.user.deleted";

function meta(userId: string, now: Date) {
  return create(EventMetaSchema, { eventId: randomUUID(), occurredAt: timestampFromDate(now), subjectId: userId });
}

/** Writes `user.created` into the outbox inside the transaction that creates the account. */
export async function enqueueUserCreated(tx: SqlTx, user: { id: string; email: string; role: string }, now: Date): Promise<string> {
  const event = create(UserCreatedSchema, { meta: meta(user.id, now), userId: user.id, email: user.email, role: user.role });
  await enqueueEvent(tx, { id: event.meta!.eventId, subject: USER_CREATED_SUBJECT, payload: toBinary(UserCreatedSchema, event) });
  return event.meta!.eventId;
}

/** Writes `user.deleted` into the outbox inside the transaction that scrubs the account. */
export async function enqueueUserDeleted(tx: SqlTx, userId: string, now: Date): Promise<string> {
  const event = create(UserDeletedSchema, { meta: meta(userId, now), userId });
  await enqueueEvent(tx, { id: event.meta!.eventId, subject: USER_DELETED_SUBJECT, payload: toBinary(UserDeletedSchema, event) });
  return event.meta!.eventId;
}
