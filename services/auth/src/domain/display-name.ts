/** Display names: shown to other people, so trimmed, NFC-normalised, 1 to 64 characters, no control characters. */
export const MAX_DISPLAY_NAME_LENGTH = 64;

// Cc (controls) plus bidi overrides and zero-width characters that let a name masquerade as another.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/u;

export type DisplayNameResult = { ok: true; displayName: string } | { ok: false; reason: string };

export function normalizeDisplayName(raw: string): DisplayNameResult {
  const name = raw.normalize("NFC").trim();
  const length = [...name].length; // code points, so an emoji counts as one
  if (length === 0) return { ok: false, reason: "is required" };
  if (length > MAX_DISPLAY_NAME_LENGTH) return { ok: false, reason: `must be at most ${MAX_DISPLAY_NAME_LENGTH} characters` };
  if (FORBIDDEN.test(name)) return { ok: false, reason: "must not contain control or invisible formatting characters" };
  return { ok: true, displayName: name };
}
