// The audit log (issue 20; DESIGN.md "Audit"). Writers pass the transaction of the change they record, so an event
// exists exactly when its change committed. The table refuses UPDATE/DELETE (migration 20261206030000_audit_events).
import { currentRequestId } from "@luna/kit";
import type { AuditEvent, Prisma } from "../generated/prisma/client.js";
import type { Db } from "./db.js";
import type { Tx } from "./store.js";

export type { AuditEvent };

/**
 * Admin actions other services record through `luna.events.audit.<service>` (events/audit-events.ts): billing's
 * grants and reversals, model-registry's catalog changes.
 */
export const REMOTE_AUDIT_KINDS = [
  "credits.granted", "credits.reversed", "model.created", "model.updated", "model.enabled", "model.disabled",
  "workflow.created", "workflow.updated", "workflow.enabled", "workflow.disabled",
] as const;
export type RemoteAuditKind = (typeof REMOTE_AUDIT_KINDS)[number];

export const AUDIT_KINDS = [
  "sign_up", "sign_in.failed", "sign_in.locked", "password.changed", "session.revoked", "account.deleted",
  "account.disabled", "account.enabled", "role.changed", "invites.created", "invite.revoked", "api_key.created",
  "api_key.revoked", ...REMOTE_AUDIT_KINDS,
] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];

export type AuditEntry = {
  kind: AuditKind;
  actorId?: string | null;
  subjectId?: string | null;
  subjectEmail?: string | null;
  /** The client address (RequestOrigin.ip). */
  source: string;
  details?: Record<string, unknown>;
  now: Date;
  /** The row id; default a new UUID (an event from another service uses its event id). */
  id?: string;
  /** Default: the current RPC's request id (another service's event carries its own). */
  requestId?: string | null;
};

/** Appends one event in `tx`; the request id is the current RPC's (the kit's request scope) unless given. */
export async function recordAudit(tx: Tx | Db, e: AuditEntry): Promise<void> {
  await tx.auditEvent.create({
    data: {
      ...(e.id ? { id: e.id } : {}),
      kind: e.kind, actorId: e.actorId ?? null, subjectId: e.subjectId ?? null, subjectEmail: e.subjectEmail ?? null,
      requestId: e.requestId !== undefined ? e.requestId : currentRequestId() ?? null, source: e.source, details: (e.details ?? {}) as Prisma.InputJsonObject, createdAt: e.now,
    },
  });
}

/**
 * Account deletion's personal-data rule: the account's email leaves the log (rows about the account, and sign-in
 * failures or lockouts that named the email without an account id); the account id (subject_id) stays.
 */
export async function forgetAuditEmail(tx: Tx, userId: string, email: string | null): Promise<void> {
  const named = email ? [{ subjectEmail: email }] : [];
  await tx.auditEvent.updateMany({ where: { subjectEmail: { not: null }, OR: [{ subjectId: userId }, ...named] }, data: { subjectEmail: null } });
}

export type AuditListFilter = { userId?: string; kinds: string[]; limit: number; before?: { createdAt: Date; id: string } };

/** Newest first; keyset pagination on (created_at, id). `userId` matches the actor or the subject. */
export function listAuditEvents(db: Db, f: AuditListFilter): Promise<AuditEvent[]> {
  const where: Prisma.AuditEventWhereInput[] = [];
  if (f.userId) where.push({ OR: [{ actorId: f.userId }, { subjectId: f.userId }] });
  if (f.kinds.length > 0) where.push({ kind: { in: f.kinds } });
  if (f.before) where.push({ OR: [{ createdAt: { lt: f.before.createdAt } }, { createdAt: f.before.createdAt, id: { lt: f.before.id } }] });
  return db.auditEvent.findMany({ where: { AND: where }, orderBy: [{ createdAt: "desc" }, { id: "desc" }], take: f.limit });
}
