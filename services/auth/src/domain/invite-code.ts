import { createHash, randomBytes } from "node:crypto";

/**
 * Invite codes: 20 symbols of Crockford's base32 (no I, L, O, U: nothing to misread or misspell), 100 random bits,
 * shown in groups of five: `7KQ2M-XD9RT-...`. Input is forgiving: case, spaces and dashes are ignored, and the
 * look-alikes O→0, I/L→1 are mapped. Only a SHA-256 of the canonical code is stored (codes are 100-bit random, so no
 * salt or slow hash is needed to make a stolen table useless).
 */
export const INVITE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
export const INVITE_CODE_SYMBOLS = 20;
export const INVITE_CODE_BITS = INVITE_CODE_SYMBOLS * 5;
/** Symbols shown to admins to recognise a code; 80 unknown bits remain. */
export const INVITE_HINT_SYMBOLS = 4;
const GROUP = 5;

/** A fresh code in display form (grouped with dashes). */
export function generateInviteCode(): string {
  const bytes = randomBytes(INVITE_CODE_SYMBOLS);
  let code = "";
  // 256 is a multiple of 32, so `byte & 31` is uniform.
  for (const b of bytes) code += INVITE_ALPHABET[b & 31];
  return formatInviteCode(code);
}

export function formatInviteCode(canonical: string): string {
  return canonical.match(new RegExp(`.{1,${GROUP}}`, "g"))!.join("-");
}

/** Canonical form (20 upper-case symbols, no dashes) or undefined when the input cannot be a code. */
export function canonicalInviteCode(input: string): string | undefined {
  const s = input.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
  if (s.length !== INVITE_CODE_SYMBOLS) return undefined;
  for (const ch of s) if (!INVITE_ALPHABET.includes(ch)) return undefined;
  return s;
}

export function hashInviteCode(canonical: string): string {
  return createHash("sha256").update(canonical, "utf8").digest("hex");
}

export function inviteCodeHint(canonical: string): string {
  return canonical.slice(0, INVITE_HINT_SYMBOLS);
}
