/**
 * Email addresses are account names, so two spellings of one mailbox must map to one account. Normalisation:
 * Unicode NFC, trim, and lower-case the whole address. RFC 5321 lets the local part be case-sensitive, but no
 * mainstream provider treats it so, and treating `Ann@x.io` and `ann@x.io` as two accounts invites confusion and
 * impersonation; dots and `+tags` are kept (they are real distinctions at many providers).
 */
export const MAX_EMAIL_LENGTH = 254; // RFC 5321 path limit minus the angle brackets
const MAX_LOCAL_PART_LENGTH = 64;

export type EmailResult = { ok: true; email: string } | { ok: false; reason: string };

// One "@", a non-empty local part, and a domain with at least one dot and no empty labels. Deliberately permissive
// beyond that: the only real test of an address is a mail to it.
const SHAPE = /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/u;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

export function normalizeEmail(raw: string): EmailResult {
  const email = raw.normalize("NFC").trim().toLowerCase();
  if (email.length === 0) return { ok: false, reason: "is required" };
  if (email.length > MAX_EMAIL_LENGTH) return { ok: false, reason: `must be at most ${MAX_EMAIL_LENGTH} characters` };
  if (CONTROL.test(email) || !SHAPE.test(email)) return { ok: false, reason: "is not a valid email address" };
  const local = email.slice(0, email.lastIndexOf("@"));
  if (local.length > MAX_LOCAL_PART_LENGTH) return { ok: false, reason: "has a local part longer than 64 characters" };
  return { ok: true, email };
}
