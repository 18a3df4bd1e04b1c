/**
 * Auth's consumer of other services' admin actions (`luna.events.audit.<service>`, durable `auth-audit-events` on
 * LUNA_EVENTS): billing's credit grants and reversals, model-registry's catalog changes. Each event becomes one row
 * of the audit log, exactly once: the event id is recorded in the inbox in the same transaction as the row (whose id
 * is the event id too), so a redelivered or re-published event adds nothing.
 */
import { fromBinary, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  AdminActionRecordedSchema, CatalogEntryChangedSchema, CreditsGrantedSchema, CreditsReversedSchema, type AdminActionRecorded,
} from "@luna/contracts/luna/events/v1/audit_events_pb.js";
import {
  AUDIT_SUBJECT_PREFIX, EVENTS_STREAM, createPgPool, isUuid, recordInbox, runConsumer, startInboxPruner, type ConsumedMessage, type ConsumerHandle, type HandlerResult,
} from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import { recordAudit, REMOTE_AUDIT_KINDS, type AuditEntry, type RemoteAuditKind } from "../data/audit.js";
import type { AuthStore } from "../data/store.js";

export const AUDIT_EVENTS_DURABLE = "auth-audit-events";
/** The inbox's consumer name. */
export const AUDIT_INBOX_CONSUMER = "auth.audit-events";

type Log = {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
};

export interface AuditEventDeps {
  store: AuthStore;
  log: Log;
}

/** Which detail each action must carry. */
const DETAIL_OF: Record<RemoteAuditKind, NonNullable<AdminActionRecorded["detail"]["case"]>> = {
  "credits.granted": "creditsGranted",
  "credits.reversed": "creditsReversed",
  "model.created": "catalogEntryChanged",
  "model.updated": "catalogEntryChanged",
  "model.enabled": "catalogEntryChanged",
  "model.disabled": "catalogEntryChanged",
  "workflow.created": "catalogEntryChanged",
  "workflow.updated": "catalogEntryChanged",
  "workflow.enabled": "catalogEntryChanged",
  "workflow.disabled": "catalogEntryChanged",
};

const isRemoteKind = (s: string): s is RemoteAuditKind => (REMOTE_AUDIT_KINDS as readonly string[]).includes(s);

/** The detail as the audit row's JSON (int64 as decimal strings, every field present). */
function detailJson(d: AdminActionRecorded["detail"]): Record<string, unknown> {
  const opts = { alwaysEmitImplicit: true } as const;
  switch (d.case) {
    case "creditsGranted": return toJson(CreditsGrantedSchema, d.value, opts) as Record<string, unknown>;
    case "creditsReversed": return toJson(CreditsReversedSchema, d.value, opts) as Record<string, unknown>;
    case "catalogEntryChanged": return toJson(CatalogEntryChangedSchema, d.value, opts) as Record<string, unknown>;
    default: return {};
  }
}

type Decoded = { ok: true; entry: AuditEntry & { id: string } } | { ok: false; why: string };

/** Turns an event into its audit row, or says why it is poison (never retried: it can never become valid). */
export function auditEntryOf(msg: Pick<ConsumedMessage, "data" | "msgId">): Decoded {
  let ev: AdminActionRecorded;
  try {
    ev = fromBinary(AdminActionRecordedSchema, msg.data);
  } catch (err) {
    return { ok: false, why: `undecodable payload: ${(err as Error).message}` };
  }
  const id = ev.meta?.eventId || msg.msgId || "";
  const shownId = JSON.stringify(id.slice(0, 64));
  if (!isUuid(id)) return { ok: false, why: `event id must be a UUID, got ${shownId}` };
  const action = ev.action;
  if (!isRemoteKind(action)) return { ok: false, why: `unknown action ${JSON.stringify(ev.action.slice(0, 64))}` };
  if (ev.detail.case !== DETAIL_OF[action]) return { ok: false, why: `action ${action} carries detail ${String(ev.detail.case)}` };
  if (!isUuid(ev.actorUserId)) return { ok: false, why: "actor_user_id must be a UUID (the admin's user id)" };
  if (ev.subjectUserId !== "" && !isUuid(ev.subjectUserId)) return { ok: false, why: "subject_user_id must be empty or a UUID" };
  const at = ev.meta?.occurredAt ? timestampDate(ev.meta.occurredAt) : undefined;
  return {
    ok: true,
    entry: {
      id,
      kind: action,
      actorId: ev.actorUserId,
      subjectId: ev.subjectUserId || null,
      source: ev.source || "unknown",
      requestId: ev.requestId || null,
      details: { service: ev.service, ...detailJson(ev.detail) },
      // When the change happened (the list is ordered by it), not when auth heard of it.
      now: at && !Number.isNaN(at.getTime()) ? at : new Date(),
    },
  };
}

/** Applies one event; exported for tests (the consumer loop calls it per message). */
export async function handleAuditEvent(deps: AuditEventDeps, msg: Pick<ConsumedMessage, "subject" | "data" | "msgId">): Promise<HandlerResult> {
  const decoded = auditEntryOf(msg);
  if (!decoded.ok) {
    deps.log.error({ subject: msg.subject, msgId: msg.msgId, why: decoded.why }, "poison audit event; dead-lettering");
    return "term";
  }
  const { entry } = decoded;
  await deps.store.transaction(async (tx) => {
    if (await recordInbox(tx, AUDIT_INBOX_CONSUMER, entry.id)) await recordAudit(tx, entry);
  });
  return "ack";
}

/**
 * Starts the consumer and the pruner of its inbox rows (auth's only inbox), which deletes rows older than
 * `inboxPrune.retainMs` every `intervalMs` over a one-connection pool of its own (LUNA_INBOX_RETAIN,
 * LUNA_EVENT_PRUNE_INTERVAL).
 */
export function startAuditEventConsumer(
  deps: AuditEventDeps & { js: JetStreamClient; inboxPrune: { databaseUrl: string; retainMs: number; intervalMs: number } },
): ConsumerHandle {
  const consumer = runConsumer({
    js: deps.js,
    stream: EVENTS_STREAM,
    durable: AUDIT_EVENTS_DURABLE,
    filterSubject: `${AUDIT_SUBJECT_PREFIX}.>`,
    handle: (msg) => handleAuditEvent(deps, msg),
    log: deps.log,
  });
  const pool = createPgPool({ url: deps.inboxPrune.databaseUrl, max: 1, name: "auth-inbox-pruner", log: deps.log });
  const pruner = startInboxPruner({ pool, log: deps.log, retainMs: deps.inboxPrune.retainMs, intervalMs: deps.inboxPrune.intervalMs });
  let stopping: Promise<void> | undefined;
  return {
    ready: consumer.ready,
    stop(opts) {
      stopping ??= (async () => {
        await consumer.stop(opts);
        await pruner.stop();
        await pool.end();
      })();
      return stopping;
    },
  };
}
