/**
 * Billing's consumer of auth's user events (durable `billing-user-events` on LUNA_EVENTS):
 * - `user.created`: open the account and grant the sign-up credits — once per user even under redelivery (the
 *   event id is recorded in the inbox in the same transaction, and the grant's idempotency key is per user);
 * - `user.deleted`: close the account (no new holds or grants) and release its open holds.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { UserCreatedSchema, UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { EVENTS_STREAM, recordInbox, runConsumer, sqlTxFromPg, type ConsumedMessage, type ConsumerHandle, type HandlerResult } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import type pg from "pg";
import { LedgerStore } from "../data/ledger-store.js";
import { checkUserAccountId } from "../domain/ledger.js";
import type { Ledger, MinimalLog } from "../ledger.js";

export const USER_CREATED_SUBJECT = "luna.events.user.created";
export const USER_DELETED_SUBJECT = "luna.events.user.deleted";
export const USER_EVENTS_DURABLE = "billing-user-events";
/** The inbox's consumer name. */
export const INBOX_CONSUMER = "billing.user-events";

export interface UserEventDeps {
  pool: pg.Pool;
  ledger: Ledger;
  log: MinimalLog;
}

type Decoded = { kind: "created" | "deleted"; eventId: string; userId: string } | { kind: "ignore" } | { kind: "poison"; why: string };

function decode(msg: Pick<ConsumedMessage, "subject" | "data" | "msgId">): Decoded {
  const schema = msg.subject === USER_CREATED_SUBJECT ? UserCreatedSchema : msg.subject === USER_DELETED_SUBJECT ? UserDeletedSchema : undefined;
  if (!schema) return { kind: "ignore" };
  let ev: { meta?: { eventId: string }; userId: string };
  try {
    ev = fromBinary(schema, msg.data);
  } catch (err) {
    return { kind: "poison", why: `undecodable payload: ${(err as Error).message}` };
  }
  const eventId = ev.meta?.eventId || msg.msgId || "";
  if (!eventId) return { kind: "poison", why: "no event id (meta.event_id or Nats-Msg-Id)" };
  try {
    checkUserAccountId("user_id", ev.userId);
  } catch (err) {
    return { kind: "poison", why: (err as Error).message };
  }
  return { kind: msg.subject === USER_CREATED_SUBJECT ? "created" : "deleted", eventId, userId: ev.userId };
}

/** Applies one user event; exported for tests (the consumer loop calls it per message). */
export async function handleUserEvent(deps: UserEventDeps, msg: Pick<ConsumedMessage, "subject" | "data" | "msgId">): Promise<HandlerResult> {
  const ev = decode(msg);
  if (ev.kind === "ignore") return "ack";
  if (ev.kind === "poison") {
    deps.log.error({ subject: msg.subject, why: ev.why }, "poison user event; dead-lettering");
    return "term";
  }
  const client = await deps.pool.connect();
  try {
    await client.query("BEGIN");
    const first = await recordInbox(sqlTxFromPg(client), INBOX_CONSUMER, ev.eventId);
    if (first) {
      const store = new LedgerStore(client);
      if (ev.kind === "created") await deps.ledger.openAccountWithSignupGrant(ev.userId, store);
      else await store.markAccountClosed(ev.userId);
    }
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
  // After the close committed, release the holds one statement each (never inside the close transaction: that
  // would take the account lock before hold locks, the reverse of commit's order). Repeats are harmless.
  if (ev.kind === "deleted") {
    const released = await deps.ledger.closeAccount(ev.userId);
    if (released.length > 0) deps.log.info({ userId: ev.userId, holds: released.length }, "released holds of a deleted user");
  }
  return "ack";
}

export function startUserEventConsumer(deps: UserEventDeps & { js: JetStreamClient; log: MinimalLog & { debug(o: object, m?: string): void } }): ConsumerHandle {
  return runConsumer({
    js: deps.js,
    stream: EVENTS_STREAM,
    durable: USER_EVENTS_DURABLE,
    filterSubject: "luna.events.user.>",
    handle: (msg) => handleUserEvent(deps, msg),
    log: deps.log,
  });
}
