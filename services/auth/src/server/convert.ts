import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ApiKeySchema, InviteSchema, Role, TokensSchema, UserSchema, type ApiKey as ApiKeyMessage, type Invite as InviteMessage, type Tokens, type User as UserMessage } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import type { ApiKey, Invite, User } from "../data/store.js";
import type { IssuedTokens } from "../accounts.js";
import type { AuditEvent } from "../data/audit.js";
import { AuditEventSchema, type AuditEvent as AuditEventMessage } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";

export function userMessage(u: User): UserMessage {
  return create(UserSchema, {
    id: u.id,
    email: u.email ?? "",
    displayName: u.displayName,
    role: u.role === "admin" ? Role.ADMIN : Role.USER,
    disabled: u.disabledAt !== null,
    createdAt: timestampFromDate(u.createdAt),
  });
}

export function tokensMessage(t: IssuedTokens): Tokens {
  return create(TokensSchema, {
    accessToken: t.accessToken,
    accessTokenExpiresAt: timestampFromDate(t.accessTokenExpiresAt),
    refreshToken: t.refreshToken,
    refreshTokenExpiresAt: timestampFromDate(t.refreshTokenExpiresAt),
    tokenType: "Bearer",
  });
}

/** `code` only when just created (the database keeps only its hash). */
export function inviteMessage(i: Invite, code = ""): InviteMessage {
  return create(InviteSchema, {
    id: i.id,
    code,
    codeHint: i.codeHint,
    usesTotal: i.usesTotal,
    usesLeft: i.usesLeft,
    expiresAt: i.expiresAt ? timestampFromDate(i.expiresAt) : undefined,
    note: i.note,
    createdAt: timestampFromDate(i.createdAt),
    createdByUserId: i.createdByUserId ?? "",
    revokedAt: i.revokedAt ? timestampFromDate(i.revokedAt) : undefined,
  });
}

/** `key` only when just created (the database keeps only its hash). */
export function apiKeyMessage(k: ApiKey, key = ""): ApiKeyMessage {
  return create(ApiKeySchema, {
    id: k.id,
    userId: k.userId,
    name: k.name,
    key,
    keyHint: k.keyHint,
    createdAt: timestampFromDate(k.createdAt),
    expiresAt: k.expiresAt ? timestampFromDate(k.expiresAt) : undefined,
    lastUsedAt: k.lastUsedAt ? timestampFromDate(k.lastUsedAt) : undefined,
    revokedAt: k.revokedAt ? timestampFromDate(k.revokedAt) : undefined,
  });
}

export function auditEventMessage(e: AuditEvent): AuditEventMessage {
  return create(AuditEventSchema, {
    id: e.id,
    kind: e.kind,
    actorId: e.actorId ?? "",
    subjectId: e.subjectId ?? "",
    subjectEmail: e.subjectEmail ?? "",
    time: timestampFromDate(e.createdAt),
    requestId: e.requestId ?? "",
    source: e.source,
    detailsJson: JSON.stringify(e.details ?? {}),
  });
}
