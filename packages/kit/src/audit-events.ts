// Admin actions a service records in auth's audit log (`luna.events.audit.<service>`; contract:
// proto/luna/events/v1/audit_events.proto). The service writes the event into its outbox in the transaction of the
// change; auth's consumer appends it to the audit log once per event id.
import { randomUUID } from "node:crypto";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext } from "@connectrpc/connect";
import { AdminActionRecordedSchema } from "@luna/contracts/luna/events/v1/audit_events_pb.js";
import { requirePrincipal } from "./auth.js";
import { clientAddressKey } from "./client-address.js";
import { isUuid } from "./ids.js";
import { currentRequestId } from "./log.js";
import type { OutboxEvent } from "./outbox.js";

/** Subject prefix of admin-action audit events; the publishing service's name follows. */
export const AUDIT_SUBJECT_PREFIX = "luna.events.audit";

/** Subject a service publishes its admin actions on, e.g. `luna.events.audit.billing`. */
export const auditSubject = (service: string): string => `${AUDIT_SUBJECT_PREFIX}.${service}`;

/** Who made a change and from where: what every audit record carries besides the change itself. */
export interface AuditActor {
  /** The admin's user id, from the caller's verified access token. */
  userId: string;
  /** x-request-id of the RPC ("" when none). */
  requestId: string;
  /** Client address as the kit resolved it (trusted proxies), or "unknown". */
  source: string;
}

/** The acting admin of a handler call (refuses anyone else), with the request id and client address. */
export function auditActorOf(ctx: HandlerContext): AuditActor {
  const who = requirePrincipal(ctx, "admin");
  return { userId: who.userId, requestId: currentRequestId() ?? "", source: ctx.values.get(clientAddressKey) ?? "unknown" };
}

type Detail = MessageInitShape<typeof AdminActionRecordedSchema>["detail"];

export interface AdminActionInput {
  service: string;
  action: string;
  actor: AuditActor;
  /** meta.subject_id: the account id, model id or workflow id acted on. */
  target: string;
  /** The account acted on; kept when it is a user id (a UUID), else left to the detail. */
  subjectUserId?: string;
  detail: Detail;
  now?: Date;
}

/** Builds the outbox event of one admin action (write it in the change's transaction). */
export function adminActionEvent(input: AdminActionInput): OutboxEvent {
  const id = randomUUID();
  const event = create(AdminActionRecordedSchema, {
    meta: { eventId: id, occurredAt: timestampFromDate(input.now ?? new Date()), subjectId: input.target },
    action: input.action,
    actorUserId: input.actor.userId,
    subjectUserId: isUuid(input.subjectUserId) ? input.subjectUserId : "",
    requestId: input.actor.requestId,
    source: input.actor.source,
    service: input.service,
    detail: input.detail,
  });
  return { id, subject: auditSubject(input.service), payload: toBinary(AdminActionRecordedSchema, event) };
}
