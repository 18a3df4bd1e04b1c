/**
 * Consumer of `luna.events.user.deleted` (durable `chat-router-user-events` on LUNA_EVENTS): deletes the user's
 * conversations and messages, once per event (inbox in the same transaction), and stops their replies in progress.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { EVENTS_STREAM, recordInbox, runConsumer, type ConsumedMessage, type ConsumerHandle, type HandlerResult, type MinimalLogger } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { ChatStore } from "../data/store.js";

export const USER_DELETED_SUBJECT = "luna.events.user.deleted";
export const USER_EVENTS_DURABLE = "chat-router-user-events";
const INBOX_CONSUMER = "chat-router.user-deleted";

export interface UserDeletedDeps {
  store: ChatStore;
  /** Stops a reply streaming anywhere. */
  stopReply(messageId: string): void;
  /** Drops the user's cached conversations. */
  forgetUser(userId: string): void;
  log: MinimalLogger & { error(obj: object, msg?: string): void };
}

/** Applies one user.deleted event; exported for tests. */
export async function handleUserDeleted(deps: UserDeletedDeps, msg: Pick<ConsumedMessage, "subject" | "data" | "msgId">): Promise<HandlerResult> {
  if (msg.subject !== USER_DELETED_SUBJECT) return "ack";
  let userId: string;
  let eventId: string;
  try {
    const ev = fromBinary(UserDeletedSchema, msg.data);
    userId = ev.userId;
    eventId = ev.meta?.eventId || msg.msgId || "";
  } catch (err) {
    deps.log.error({ err }, "undecodable user.deleted event; dead-lettering");
    return "term";
  }
  if (!userId || !eventId) {
    deps.log.error({ userId, eventId }, "user.deleted without user id or event id; dead-lettering");
    return "term";
  }
  const streaming = await deps.store.transaction(async (tx) => {
    if (!(await recordInbox(tx, INBOX_CONSUMER, eventId))) return [];
    return await deps.store.deleteUserConversations(tx, userId);
  });
  deps.forgetUser(userId);
  for (const id of streaming) deps.stopReply(id);
  return "ack";
}

export function startUserDeletedConsumer(deps: UserDeletedDeps & { js: JetStreamClient }): ConsumerHandle {
  return runConsumer({
    js: deps.js,
    stream: EVENTS_STREAM,
    durable: USER_EVENTS_DURABLE,
    filterSubject: USER_DELETED_SUBJECT,
    handle: (msg) => handleUserDeleted(deps, msg),
    log: deps.log,
  });
}
