// Request field checks. Each failure is INVALID_ARGUMENT naming the field (kit `invalidArgument`), raised before
// anything is written.
import { invalidArgument, invalidPageSize, isUuid } from "@luna/kit";

const MODEL_ID_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
const CLIENT_ID_RE = /^[\x21-\x7e]{1,100}$/;

/** Longest conversation title, in characters. */
export const MAX_TITLE_CHARS = 200;

/** Characters of a message kept as the conversation's preview. */
export const PREVIEW_CHARS = 200;

/** A UUID (lower-cased); `what` names it in the error. */
export function checkId(field: string, value: string): string {
  if (value.length === 0) throw invalidArgument(field, "is required");
  if (!isUuid(value)) throw invalidArgument(field, "must be a UUID");
  return value.toLowerCase();
}

export function checkModelId(field: string, value: string): string {
  if (value.length === 0) throw invalidArgument(field, "is required");
  if (!MODEL_ID_RE.test(value)) throw invalidArgument(field, "must be a model id ([a-z0-9.-], 1-64 characters)");
  return value;
}

/** Whether a string holds a control character other than tab, newline and carriage return, or a lone surrogate. */
function hasBadChars(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 9 && c !== 10 && c !== 13) || c === 0x7f) return true;
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = v.charCodeAt(i + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) return true;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return true;
    }
  }
  return false;
}

/** Message text: required, not only whitespace, at most `max` characters, no control characters. */
export function checkText(field: string, value: string, max: number): string {
  if (value.trim().length === 0) throw invalidArgument(field, "must not be empty");
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters (got ${value.length})`);
  if (hasBadChars(value)) throw invalidArgument(field, "must not contain control characters");
  return value;
}

/** Optional free text (may be empty). */
export function checkOptionalText(field: string, value: string, max: number): string {
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters (got ${value.length})`);
  if (hasBadChars(value)) throw invalidArgument(field, "must not contain control characters");
  return value;
}

/** A title: one line, trimmed; `required` rejects an empty one. */
export function checkTitle(field: string, value: string, required: boolean): string {
  const t = value.trim();
  if (t.length === 0) {
    if (required) throw invalidArgument(field, "must not be empty");
    return "";
  }
  if (t.length > MAX_TITLE_CHARS) throw invalidArgument(field, `must be at most ${MAX_TITLE_CHARS} characters (got ${t.length})`);
  if (/[\r\n]/.test(t) || hasBadChars(t)) throw invalidArgument(field, "must be one line without control characters");
  return t;
}

export function checkClientMessageId(field: string, value: string): string {
  if (value.length === 0) throw invalidArgument(field, "is required (a client-chosen id, e.g. a UUID, reused on retries)");
  if (!CLIENT_ID_RE.test(value)) throw invalidArgument(field, "must be 1-100 printable ASCII characters without spaces");
  return value;
}

/** 0 = the model's maximum; otherwise at least 1. */
export function checkMaxOutputTokens(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw invalidArgument(field, `must be 0 (the model's maximum) or a positive number (got ${value})`);
  return value;
}

export function checkOffset(field: string, value: bigint): number {
  if (value < 0n) throw invalidArgument(field, `must not be negative (got ${value})`);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(field, "is too large");
  return Number(value);
}

/** A page size: 0 = `def`, clamped to `max`, never negative. */
export function checkPageSize(field: string, value: number, def: number, max: number): number {
  if (value < 0) throw invalidPageSize(field, value);
  return value === 0 ? def : Math.min(value, max);
}

/** The first `PREVIEW_CHARS` characters of a message on one line. */
export function previewOf(text: string): string {
  const oneLine = text.replace(/\s+/g, " ").trim();
  if (oneLine.length <= PREVIEW_CHARS) return oneLine;
  let cut = oneLine.slice(0, PREVIEW_CHARS);
  // Never end on half a surrogate pair.
  const last = cut.charCodeAt(cut.length - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1);
  return cut;
}
