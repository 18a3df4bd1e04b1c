import type { Duration } from "@bufbuild/protobuf/wkt";
import { invalidArgument, invalidPageSize, invalidPageToken, isUuid } from "@luna/kit";
import type { PageRequest } from "@luna/contracts/luna/common/v1/common_pb.js";
import { Role as RoleProto } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { normalizeEmail, MAX_EMAIL_LENGTH } from "../domain/email.js";
import { normalizeDisplayName, MAX_DISPLAY_NAME_LENGTH } from "../domain/display-name.js";
import { passwordProblem, type PasswordPolicy } from "../domain/password-policy.js";
import { canonicalInviteCode, INVITE_CODE_SYMBOLS } from "../domain/invite-code.js";
import { looksLikeRefreshToken, REFRESH_TOKEN_PREFIX } from "../domain/refresh-token.js";
import { decodePageToken, pageSize, type Cursor } from "../domain/page-token.js";
import type { Role } from "../accounts.js";
import { AUDIT_KINDS } from "../data/audit.js";

/**
 * Request validation: every field is checked before anything is written, and a bad one is reported as
 * INVALID_ARGUMENT naming it. Oversized strings are refused before any normalisation work.
 */
export function email(field: string, raw: string): string {
  if (raw.length > MAX_EMAIL_LENGTH * 4) throw invalidArgument(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  const r = normalizeEmail(raw);
  if (!r.ok) throw invalidArgument(field, r.reason);
  return r.email;
}

/** A new password: length and the common-password list. */
export function newPassword(field: string, raw: string, policy: PasswordPolicy): string {
  // Two UTF-16 units per code point at most, so a longer string is over the limit whatever it contains.
  if (raw.length > policy.maxLength * 2) throw invalidArgument(field, `must be at most ${policy.maxLength} characters`);
  const problem = passwordProblem(raw, policy);
  if (problem) throw invalidArgument(field, problem);
  return raw;
}

/** A password being checked (sign-in, confirmation): only present and not absurdly long (bounds hashing work). */
export function existingPassword(field: string, raw: string, policy: PasswordPolicy): string {
  if (raw.length === 0) throw invalidArgument(field, "is required");
  if (raw.length > policy.maxLength * 2) throw invalidArgument(field, `must be at most ${policy.maxLength} characters`);
  return raw;
}

export function displayName(field: string, raw: string): string {
  if (raw.length > MAX_DISPLAY_NAME_LENGTH * 8) throw invalidArgument(field, `must be at most ${MAX_DISPLAY_NAME_LENGTH} characters`);
  const r = normalizeDisplayName(raw);
  if (!r.ok) throw invalidArgument(field, r.reason);
  return r.displayName;
}

/** The canonical code, or undefined when none was given and none is required. */
export function inviteCode(field: string, raw: string, required: boolean): string | undefined {
  if (raw.trim() === "") {
    if (required) throw invalidArgument(field, "is required (sign-up is by invitation)");
    return undefined;
  }
  const canonical = raw.length <= 64 ? canonicalInviteCode(raw) : undefined;
  if (!canonical) throw invalidArgument(field, `is not an invite code (${INVITE_CODE_SYMBOLS} letters and digits, like ABCDE-FGHJK-MNPQR-STVWX)`);
  return canonical;
}

export function refreshToken(field: string, raw: string): string {
  if (raw.length === 0) throw invalidArgument(field, "is required");
  if (!looksLikeRefreshToken(raw)) throw invalidArgument(field, `is not a refresh token (expected ${REFRESH_TOKEN_PREFIX}…)`);
  return raw;
}

export function uuid(field: string, raw: string): string {
  if (raw.length === 0) throw invalidArgument(field, "is required");
  if (!isUuid(raw)) throw invalidArgument(field, "must be a UUID");
  return raw.toLowerCase();
}

export function intInRange(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw invalidArgument(field, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

export const MAX_INVITE_EXPIRY_MS = 366 * 24 * 3_600_000;
const MIN_INVITE_EXPIRY_MS = 60_000;

/** An optional duration in milliseconds: unset or zero = none. */
export function expiresIn(field: string, d: Duration | undefined, maxMs = MAX_INVITE_EXPIRY_MS): number | undefined {
  if (!d || (d.seconds === 0n && d.nanos === 0)) return undefined;
  if (d.seconds < 0n || d.nanos < 0) throw invalidArgument(field, "must not be negative");
  const ms = Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
  if (ms < MIN_INVITE_EXPIRY_MS || ms > maxMs) {
    throw invalidArgument(field, `must be between 1 minute and ${Math.round(maxMs / 86_400_000)} days`);
  }
  return ms;
}

/** API keys may live up to 10 years (or forever, when unset). */
export const MAX_API_KEY_EXPIRY_MS = 3653 * 24 * 3_600_000;

/** An API key's name: 1 to 64 characters, no control characters. */
export function apiKeyName(field: string, raw: string): string {
  const s = raw.normalize("NFC").trim();
  if (s === "") throw invalidArgument(field, "is required");
  if ([...s].length > 64) throw invalidArgument(field, "must be at most 64 characters");
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/u.test(s)) throw invalidArgument(field, "must not contain control characters");
  return s;
}

export const MAX_NOTE_LENGTH = 200;

export function note(field: string, raw: string): string {
  const s = raw.normalize("NFC").trim();
  if ([...s].length > MAX_NOTE_LENGTH) throw invalidArgument(field, `must be at most ${MAX_NOTE_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/u.test(s)) throw invalidArgument(field, "must not contain control characters");
  return s;
}

export function page(field: string, p: PageRequest | undefined): { limit: number; cursor?: Cursor } {
  const size = p?.pageSize ?? 0;
  if (size < 0) throw invalidPageSize(`${field}.page_size`, size);
  const token = p?.pageToken ?? "";
  if (token === "") return { limit: pageSize(size) };
  const cursor = decodePageToken(token);
  if (!cursor) throw invalidPageToken(`${field}.page_token`);
  return { limit: pageSize(size), cursor };
}

export function emailPrefix(field: string, raw: string): string {
  const s = raw.normalize("NFC").trim().toLowerCase();
  if (s.length > MAX_EMAIL_LENGTH) throw invalidArgument(field, `must be at most ${MAX_EMAIL_LENGTH} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/u.test(s)) throw invalidArgument(field, "must not contain control characters");
  return s;
}

export function role(field: string, r: RoleProto): Role {
  if (r === RoleProto.USER) return "user";
  if (r === RoleProto.ADMIN) return "admin";
  throw invalidArgument(field, "must be ROLE_USER or ROLE_ADMIN");
}

/** ListAuditEvents' kinds filter: each one a known kind (a typo would otherwise silently match nothing). */
export function auditKinds(field: string, raw: string[]): string[] {
  if (raw.length > AUDIT_KINDS.length) throw invalidArgument(field, `must list at most ${AUDIT_KINDS.length} kinds`);
  for (const k of raw) {
    if (!(AUDIT_KINDS as readonly string[]).includes(k)) throw invalidArgument(field, `unknown kind "${k.slice(0, 40)}"; known: ${AUDIT_KINDS.join(", ")}`);
  }
  return [...new Set(raw)];
}
