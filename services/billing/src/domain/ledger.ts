/**
 * The ledger's vocabulary and rules that need no database: the shapes returned by the store, input validation, the
 * idempotency fingerprint and the history description of a charge.
 */
import { createHash } from "node:crypto";
import { isUuid } from "@luna/kit";
import { invalid } from "./errors.js";

/** The issuer of every grant (its balance is minus everything ever granted). */
export const GRANTS_ACCOUNT = "system:grants";
/** The receiver of every charge. */
export const REVENUE_ACCOUNT = "system:revenue";
export const SYSTEM_ACCOUNTS = [GRANTS_ACCOUNT, REVENUE_ACCOUNT] as const;

export type HoldStatus = "open" | "committed" | "released" | "expired";
export type EntryKind = "grant" | "charge" | "reversal";
export type HistoryKind = EntryKind | "release";

/** Times are microseconds since the epoch (Postgres precision), so a replayed response is bit-identical. */
export type Micros = bigint;

export interface Hold {
  id: string;
  accountId: string;
  amount: bigint;
  status: HoldStatus;
  charged: bigint;
  /** amount - charged once resolved; 0 while open. */
  released: bigint;
  reason: string;
  reference: string;
  createdAt: Micros;
  expiresAt: Micros;
  resolvedAt: Micros | null;
}

export interface Account {
  id: string;
  kind: "user" | "system";
  status: "open" | "closed";
  balance: bigint;
  held: bigint;
  available: bigint;
  openHolds: number;
  createdAt: Micros;
  closedAt: Micros | null;
}

export interface Usage {
  model: string;
  feature: string;
  inputTokens: bigint;
  outputTokens: bigint;
  images: number;
}

export interface ReserveInput {
  accountId: string;
  amount: bigint;
  reason: string;
  reference: string;
  idempotencyKey: string;
  ttlMs: number;
}

/** The original response of a reserve; replays return exactly this. */
export interface ReserveResult {
  holdId: string;
  amount: bigint;
  expiresAt: Micros;
  /** Available credits right after the hold was placed. */
  available: bigint;
}

export interface CommitInput {
  holdId: string;
  amount: bigint;
  usage?: Usage | undefined;
}

export interface CommitResult {
  hold: Hold;
  /** Empty when nothing was charged. */
  transferId: string;
}

export interface GrantInput {
  accountId: string;
  amount: bigint;
  reason: string;
  idempotencyKey: string;
}

export interface GrantResult {
  transferId: string;
  amount: bigint;
  balance: bigint;
  createdAt: Micros;
}

export interface ReversalResult {
  transferId: string;
  amount: bigint;
  createdAt: Micros;
}

/** One line of an account's history (a ledger entry of the account, or the release part of a resolved hold). */
export interface HistoryItem {
  id: string;
  kind: HistoryKind;
  amount: bigint;
  balanceDelta: bigint;
  transferId: string;
  holdId: string;
  reason: string;
  reference: string;
  description: string;
  usage: Usage | null;
  createdAt: Micros;
}

export interface InvariantViolation {
  invariant: string;
  subject: string;
  detail: string;
}

export interface InvariantReport {
  ok: boolean;
  violations: InvariantViolation[];
  checkedAt: Micros;
  accountsChecked: bigint;
  entriesChecked: bigint;
  holdsChecked: bigint;
}

// ---- validation -------------------------------------------------------------------------------------------------

/** Largest amount one request may move: far above any real use, far below int64 overflow when summed. */
export const MAX_AMOUNT = 1_000_000_000_000n;
const USER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const REASON_LABEL = /^[a-z0-9][a-z0-9._:-]{0,63}$/;
const PRINTABLE = /^[\x20-\x7e]+$/;

/** A user account id: the auth user id. Never contains ':' so it can never name a system account. */
export function checkUserAccountId(field: string, value: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (!USER_ID.test(value)) throw invalid(field, "must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit");
  return value;
}

/** Any account id: a user id or one of the system accounts. */
export function checkAnyAccountId(field: string, value: string): string {
  if ((SYSTEM_ACCOUNTS as readonly string[]).includes(value)) return value;
  return checkUserAccountId(field, value);
}

export function checkPositiveAmount(field: string, value: bigint): bigint {
  if (value <= 0n) throw invalid(field, `must be greater than 0 (got ${value})`);
  if (value > MAX_AMOUNT) throw invalid(field, `must be at most ${MAX_AMOUNT} (got ${value})`);
  return value;
}

export function checkNonNegativeAmount(field: string, value: bigint): bigint {
  if (value < 0n) throw invalid(field, `must not be negative (got ${value})`);
  if (value > MAX_AMOUNT) throw invalid(field, `must be at most ${MAX_AMOUNT} (got ${value})`);
  return value;
}

export function checkIdempotencyKey(field: string, value: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (value.length > 200) throw invalid(field, `must be at most 200 characters (got ${value.length})`);
  if (!PRINTABLE.test(value)) throw invalid(field, "must be printable ASCII");
  return value;
}

/** A short machine-friendly label such as "chat" or "image". */
export function checkReasonLabel(field: string, value: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (!REASON_LABEL.test(value)) throw invalid(field, "must be 1-64 characters of [a-z0-9._:-], starting with a letter or digit");
  return value;
}

/** Free text shown to people (grant reasons): 1-200 characters, no control characters. */
export function checkText(field: string, value: string, opts: { required: boolean; max: number }): string {
  if (value.length === 0) {
    if (opts.required) throw invalid(field, "is required");
    return value;
  }
  if (value.length > opts.max) throw invalid(field, `must be at most ${opts.max} characters (got ${value.length})`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) throw invalid(field, "must not contain control characters");
  return value;
}

/** Hold and transfer ids are UUIDs; anything else cannot exist, so it is bad input rather than "not found". */
export function checkUuid(field: string, value: string): string {
  if (value.length === 0) throw invalid(field, "is required");
  if (!isUuid(value)) throw invalid(field, "must be a UUID");
  return value.toLowerCase();
}

const MAX_TOKENS = 100_000_000n;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

export function checkUsage(field: string, usage: Usage | undefined): Usage | undefined {
  if (!usage) return undefined;
  if (usage.model !== "" && !LABEL.test(usage.model)) throw invalid(`${field}.model`, "must be 1-128 characters of [A-Za-z0-9._:/-]");
  if (usage.feature !== "" && !LABEL.test(usage.feature)) throw invalid(`${field}.feature`, "must be 1-128 characters of [A-Za-z0-9._:/-]");
  for (const [name, v] of [["input_tokens", usage.inputTokens], ["output_tokens", usage.outputTokens]] as const) {
    if (v < 0n) throw invalid(`${field}.${name}`, `must not be negative (got ${v})`);
    if (v > MAX_TOKENS) throw invalid(`${field}.${name}`, `must be at most ${MAX_TOKENS} (got ${v})`);
  }
  if (!Number.isInteger(usage.images) || usage.images < 0) throw invalid(`${field}.images`, `must not be negative (got ${usage.images})`);
  if (usage.images > 10_000) throw invalid(`${field}.images`, `must be at most 10000 (got ${usage.images})`);
  return usage;
}

// ---- idempotency ------------------------------------------------------------------------------------------------

/**
 * Fingerprint of what a grant asks for. Stored with the idempotency key: a retry with the same fingerprint replays
 * the original response; a different one under the same key is rejected. (A reserve needs none: its key lives on its
 * hold, whose amount, reason and reference are compared directly; the ttl is left out on purpose, a retry keeps the
 * original deadline.)
 */
export function fingerprint(parts: Record<string, string | bigint | number>): string {
  const canonical = Object.keys(parts)
    .sort()
    .map((k) => `${k}=${JSON.stringify(String(parts[k]))}`)
    .join("&");
  return createHash("sha256").update(canonical).digest("hex");
}

export const grantFingerprint = (i: GrantInput): string =>
  fingerprint({ op: "grant", account: i.accountId, amount: i.amount, reason: i.reason });

// ---- history ----------------------------------------------------------------------------------------------------

/** The part of a charge's description after its label: " · llama-3.1-8b · 120 in / 340 out tokens". */
export function describeUsage(usage: Usage | undefined): string {
  const parts: string[] = [];
  if (usage?.model) parts.push(usage.model);
  if (usage && (usage.inputTokens > 0n || usage.outputTokens > 0n)) {
    parts.push(`${usage.inputTokens} in / ${usage.outputTokens} out tokens`);
  }
  if (usage && usage.images > 0) parts.push(`${usage.images} image${usage.images === 1 ? "" : "s"}`);
  return parts.map((p) => ` · ${p}`).join("");
}

/** "chat · llama-3.1-8b · 120 in / 340 out tokens", "image · flux-schnell · 2 images" (label = feature or reason). */
export const describeCharge = (reason: string, usage: Usage | undefined): string =>
  (usage?.feature || reason) + describeUsage(usage);

export const microsToDate = (us: Micros): Date => new Date(Number(us / 1000n));
