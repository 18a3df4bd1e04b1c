/**
 * The credits ledger in Postgres. Every money operation is ONE SQL statement whose conditional UPDATE is the gate:
 *
 * - reserve: `UPDATE accounts ... WHERE balance - held >= $amount` + hold insert, one statement; the hold is also the
 *   idempotency record (unique (account_id, idempotency_key)), so a reserve writes two rows. Concurrent reserves
 *   serialize on the account row and each re-checks the condition (no read-then-write race);
 * - commit/release/expire: `UPDATE holds ... WHERE status = 'open'` first, so a hold resolves exactly once, then the
 *   account and the charge's transfer row in the same statement; the charge's transfer id is the hold id, so the
 *   transfers' primary key also allows one charge per hold;
 * - grants and reversals: the account update + one transfer row (+ idempotency row) in one statement.
 *
 * A transfer is ONE row: `amount` (> 0) moves from `debit_account_id` to `credit_account_id`, so debits = credits
 * by construction; an account's history is its debits (shown negative) plus its credits. Only the user's side is
 * indexed (a charge's debit, a grant's credit, both sides of a reversal).
 *
 * Lock order is always hold rows → account rows, accounts in id order when a statement touches several (reserve and
 * grant lock only accounts), so statements cannot deadlock. System accounts are never updated (their balances are
 * derived from their transfers), so no hot row serializes charges across users. When a statement changes nothing, a
 * follow-up read explains why (replay, not found, insufficient credits, ...). Under load, concurrent reserves (and,
 * apart, commits) share one multi-row statement with the same rules (see batcher.ts and `reserveMany`/`commitMany`).
 */
import { randomUUID } from "node:crypto";
import {
  InsufficientCreditsError,
  notFound,
  precondition,
} from "../domain/errors.js";
import {
  GRANTS_ACCOUNT,
  REVENUE_ACCOUNT,
  describeUsage,
  grantFingerprint,
  type Account,
  type CommitInput,
  type CommitResult,
  type GrantInput,
  type GrantResult,
  type HistoryItem,
  type Hold,
  type HoldStatus,
  type ReserveInput,
  type ReserveResult,
  type ReversalResult,
  type Usage,
} from "../domain/ledger.js";
import { OUTBOX_INSERT, outboxRow, outboxValuesSql, type OutboxEvent, type OutboxRow } from "@luna/kit";
import { Batcher } from "./batcher.js";
import { PG_UNIQUE_VIOLATION, big, bigOrNull, micros, named, pgCode, type Sql } from "./sql.js";

const HOLD_COLUMNS = `h.id, h.account_id, h.amount::text, h.status, h.charged::text, h.reason, h.reference,
  ${micros("h.created_at")}::text AS created_us, ${micros("h.expires_at")}::text AS expires_us,
  ${micros("h.resolved_at")}::text AS resolved_us`;

interface HoldRow {
  id: string;
  account_id: string;
  amount: string;
  status: HoldStatus;
  charged: string;
  reason: string;
  reference: string;
  created_us: string;
  expires_us: string;
  resolved_us: string | null;
}

function toHold(r: HoldRow): Hold {
  const amount = BigInt(r.amount);
  const charged = BigInt(r.charged);
  return {
    id: r.id,
    accountId: r.account_id,
    amount,
    status: r.status,
    charged,
    released: r.status === "open" ? 0n : amount - charged,
    reason: r.reason,
    reference: r.reference,
    createdAt: BigInt(r.created_us),
    expiresAt: BigInt(r.expires_us),
    resolvedAt: bigOrNull(r.resolved_us),
  };
}

/** The columns of a hold that make up its reserve's response (replayed as is on a retry with the same key). */
const RESERVE_COLUMNS = `id, amount::text, ${micros("expires_at")}::text AS expires_us, available_after::text`;

interface ReserveRow {
  id: string;
  amount: string;
  expires_us: string;
  available_after: string;
}

const toReserveResult = (r: ReserveRow): ReserveResult => ({
  holdId: r.id,
  amount: BigInt(r.amount),
  expiresAt: BigInt(r.expires_us),
  available: BigInt(r.available_after),
});

interface GrantResponseJson {
  transferId: string;
  amount: string;
  balance: string;
  createdAt: string;
}

const toGrantResult = (j: GrantResponseJson): GrantResult => ({
  transferId: j.transferId,
  amount: BigInt(j.amount),
  balance: BigInt(j.balance),
  createdAt: BigInt(j.createdAt),
});

function usageJson(u: Usage | undefined): string | null {
  if (!u) return null;
  return JSON.stringify({
    model: u.model,
    feature: u.feature,
    inputTokens: u.inputTokens.toString(),
    outputTokens: u.outputTokens.toString(),
    images: u.images,
  });
}

function usageFromJson(v: unknown): Usage | null {
  if (!v || typeof v !== "object") return null;
  const o = v as Record<string, unknown>;
  return {
    model: String(o.model ?? ""),
    feature: String(o.feature ?? ""),
    inputTokens: big(o.inputTokens ?? 0),
    outputTokens: big(o.outputTokens ?? 0),
    images: Number(o.images ?? 0),
  };
}

/** Guards the multi-row statements: two calls on one row in a statement would update it once for both. */
function assertDistinct(keys: string[], message: string): void {
  if (new Set(keys).size !== keys.length) throw new Error(message);
}

/** A charge is booked as transfer `hold.id`; a commit of 0 credits books none. */
const chargeTransferId = (hold: Hold): string => (hold.charged > 0n ? hold.id : "");

/** What a reversal's audit event needs to know before the statement runs. */
export interface ReversalAudit {
  /** The reversal's own transfer id. */
  reversalId: string;
  /** The user account of the reversed transfer ("" when neither side is a user account). */
  accountId: string;
  amount: bigint;
}

/** Outcome flags so callers (metrics, replay headers) can tell a first effect from a replay. */
export interface Outcome<T> {
  result: T;
  replayed: boolean;
}

export interface LedgerStoreOptions {
  /** Generates hold and transfer ids; injectable for tests. */
  newId?: () => string;
  /**
   * Coalesce concurrent reserves and commits into multi-row statements (see batcher.ts). Only for a store over a
   * pool: a store bound to one client (inside a transaction) runs every call on its own.
   */
  batching?: {
    /** Statements of each kind (reserve, commit) in flight at once. */
    maxInFlight: number;
    /** Calls per statement at most; 1 turns batching off. */
    maxSize: number;
    /** Each statement's number of calls as it starts (metrics). */
    onBatch?(statement: "reserve" | "commit", size: number): void;
  };
}

/** The coalescing settings of a billing replica (config.ts). */
export interface LedgerBatchConfig {
  BILLING_LEDGER_BATCH_SIZE: number;
  BILLING_LEDGER_BATCH_IN_FLIGHT: number;
}

/** The store as every billing replica builds it over its pool: coalescing as configured. */
export function replicaLedgerStore(
  pool: Sql,
  config: LedgerBatchConfig,
  onBatch?: (statement: "reserve" | "commit", size: number) => void,
): LedgerStore {
  return new LedgerStore(pool, {
    batching: { maxSize: config.BILLING_LEDGER_BATCH_SIZE, maxInFlight: config.BILLING_LEDGER_BATCH_IN_FLIGHT, onBatch },
  });
}

export class LedgerStore {
  private readonly newId: () => string;
  private readonly reserves?: Batcher<ReserveInput, Outcome<ReserveResult>>;
  private readonly commits?: Batcher<CommitInput, Outcome<CommitResult>>;

  constructor(
    private readonly sql: Sql,
    opts: LedgerStoreOptions = {},
  ) {
    this.newId = opts.newId ?? randomUUID;
    if (opts.batching && opts.batching.maxSize > 1) {
      const { maxInFlight, maxSize, onBatch } = opts.batching;
      this.reserves = new Batcher({
        maxInFlight,
        maxSize,
        key: (input) => input.accountId,
        runOne: (input) => this.reserveOne(input),
        runMany: (inputs) => this.reserveMany(inputs),
        onBatch: onBatch && ((size) => onBatch("reserve", size)),
      });
      this.commits = new Batcher({
        maxInFlight,
        maxSize,
        key: (input) => input.holdId,
        runOne: (input) => this.commitOne(input),
        runMany: (inputs) => this.commitMany(inputs),
        onBatch: onBatch && ((size) => onBatch("commit", size)),
      });
    }
  }

  // ---- accounts -------------------------------------------------------------------------------------------------

  /** Creates a user account if missing (idempotent). Returns true when it was created now. */
  async openAccount(accountId: string): Promise<boolean> {
    const r = await this.sql.query(
      `INSERT INTO accounts (id, kind) VALUES ($1, 'user') ON CONFLICT (id) DO NOTHING`,
      [accountId],
    );
    return r.rowCount === 1;
  }

  /**
   * Marks a user account closed (creating it closed when unknown, so a late `user.created` cannot reopen it): no new
   * holds or grants from now on. Its open holds are released by {@link releaseOpenHolds}, in separate statements
   * (same lock order as every other statement).
   */
  async markAccountClosed(accountId: string): Promise<void> {
    await this.sql.query(
      `INSERT INTO accounts (id, kind, status, closed_at) VALUES ($1, 'user', 'closed', now())
       ON CONFLICT (id) DO UPDATE SET status = 'closed', closed_at = now()
       WHERE accounts.kind = 'user' AND accounts.status = 'open'`,
      [accountId],
    );
  }

  /** Releases every open hold of an account; returns those released now. */
  async releaseOpenHolds(accountId: string): Promise<Hold[]> {
    const open = await this.sql.query<{ id: string }>(
      `SELECT id FROM holds WHERE account_id = $1 AND status = 'open' ORDER BY created_at`,
      [accountId],
    );
    const released: Hold[] = [];
    for (const { id } of open.rows) {
      const h = await this.resolveWithoutCharge(id, "released", false);
      if (h) released.push(h);
    }
    return released;
  }

  /** Closes the account and releases its open holds. Idempotent: a repeat releases whatever is still open. */
  async closeAccount(accountId: string): Promise<Hold[]> {
    await this.markAccountClosed(accountId);
    return this.releaseOpenHolds(accountId);
  }

  async getAccount(accountId: string): Promise<Account | null> {
    const r = await this.sql.query<{
      id: string;
      kind: "user" | "system";
      status: "open" | "closed";
      balance: string;
      held: string;
      open_holds: string;
      created_us: string;
      closed_us: string | null;
    }>(
      `SELECT a.id, a.kind, a.status,
         (CASE WHEN a.kind = 'user' THEN a.balance
               ELSE (SELECT coalesce(sum(t.amount), 0) FROM ledger_transfers t WHERE t.credit_account_id = a.id)
                  - (SELECT coalesce(sum(t.amount), 0) FROM ledger_transfers t WHERE t.debit_account_id = a.id) END)::text AS balance,
         a.held::text,
         (SELECT count(*) FROM holds h WHERE h.account_id = a.id AND h.status = 'open')::text AS open_holds,
         ${micros("a.created_at")}::text AS created_us, ${micros("a.closed_at")}::text AS closed_us
       FROM accounts a WHERE a.id = $1`,
      [accountId],
    );
    const row = r.rows[0];
    if (!row) return null;
    const balance = BigInt(row.balance);
    const held = BigInt(row.held);
    return {
      id: row.id,
      kind: row.kind,
      status: row.status,
      balance,
      held,
      available: balance - held,
      openHolds: Number(row.open_holds),
      createdAt: BigInt(row.created_us),
      closedAt: bigOrNull(row.closed_us),
    };
  }

  // ---- holds ----------------------------------------------------------------------------------------------------

  /** Holds `amount` credits if available. Throws InsufficientCreditsError, not_found or failed_precondition. */
  reserve(input: ReserveInput): Promise<Outcome<ReserveResult>> {
    return this.reserves ? this.reserves.run(input) : this.reserveOne(input);
  }

  private async reserveOne(input: ReserveInput): Promise<Outcome<ReserveResult>> {
    try {
      const r = await this.sql.query<ReserveRow>(
        named("ledger_reserve", `WITH acct AS (
           UPDATE accounts SET held = held + $2
           WHERE id = $1 AND kind = 'user' AND status = 'open' AND balance - held >= $2
             AND NOT EXISTS (SELECT 1 FROM holds k WHERE k.account_id = $1 AND k.idempotency_key = $5)
           RETURNING balance - held AS available
         )
         INSERT INTO holds (id, account_id, amount, reason, reference, idempotency_key, available_after, created_at, expires_at)
         SELECT $6::uuid, $1, $2, $3, $4, $5, acct.available, now(), now() + make_interval(secs => $7::double precision / 1000)
         FROM acct
         RETURNING ${RESERVE_COLUMNS}`),
        [input.accountId, input.amount, input.reason, input.reference, input.idempotencyKey, this.newId(), input.ttlMs],
      );
      const row = r.rows[0];
      if (row) return { result: toReserveResult(row), replayed: false };
    } catch (err) {
      // A concurrent request with the same key committed first: our whole statement was rolled back; replay theirs.
      if (pgCode(err) !== PG_UNIQUE_VIOLATION) throw err;
    }
    return { result: await this.explainReserveMiss(input), replayed: true };
  }

  /**
   * Several reserves (distinct accounts) in one statement: the single-row statement's conditional UPDATE per row.
   * The accounts are locked in id order first, so two batches (or a batch and a commit) never wait on each other in
   * a cycle. A call without a row (a replay, insufficient credits, ...) is left unsettled: it runs alone and is
   * explained there. A unique violation (a concurrent retry's key) rolls the batch back; every call then runs alone.
   */
  private async reserveMany(inputs: ReserveInput[]): Promise<(Outcome<ReserveResult> | undefined)[]> {
    assertDistinct(inputs.map((i) => i.accountId), "reserveMany: one call per account");
    const ids = inputs.map(() => this.newId());
    const r = await this.sql.query<ReserveRow>(
      named("ledger_reserve_many", `WITH req AS MATERIALIZED (
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::double precision[])
           AS r(account_id, amount, reason, reference, idempotency_key, hold_id, ttl_ms)
       ), locked AS MATERIALIZED (
         SELECT a.id FROM accounts a WHERE a.id IN (SELECT account_id FROM req) ORDER BY a.id FOR NO KEY UPDATE
       ), acct AS (
         UPDATE accounts a SET held = a.held + r.amount
         FROM req r JOIN locked l ON l.id = r.account_id
         WHERE a.id = r.account_id AND a.kind = 'user' AND a.status = 'open' AND a.balance - a.held >= r.amount
           AND NOT EXISTS (SELECT 1 FROM holds k WHERE k.account_id = r.account_id AND k.idempotency_key = r.idempotency_key)
         RETURNING a.id, a.balance - a.held AS available
       )
       INSERT INTO holds (id, account_id, amount, reason, reference, idempotency_key, available_after, created_at, expires_at)
       SELECT r.hold_id, r.account_id, r.amount, r.reason, r.reference, r.idempotency_key, acct.available, now(),
              now() + make_interval(secs => r.ttl_ms / 1000)
       FROM req r JOIN acct ON acct.id = r.account_id
       RETURNING ${RESERVE_COLUMNS}`),
      [
        inputs.map((i) => i.accountId),
        inputs.map((i) => i.amount),
        inputs.map((i) => i.reason),
        inputs.map((i) => i.reference),
        inputs.map((i) => i.idempotencyKey),
        ids,
        inputs.map((i) => i.ttlMs),
      ],
    );
    const byId = new Map(r.rows.map((row) => [row.id, row]));
    return ids.map((id) => {
      const row = byId.get(id);
      return row ? { result: toReserveResult(row), replayed: false } : undefined;
    });
  }

  /** Why a reserve changed nothing: a replay (returns the original response) or an error (throws). */
  private async explainReserveMiss(input: ReserveInput): Promise<ReserveResult> {
    const r = await this.sql.query<{
      kind: string | null;
      status: string | null;
      available: string | null;
      hold: (ReserveRow & { reason: string; reference: string }) | null;
    }>(
      `SELECT a.kind, a.status, (a.balance - a.held)::text AS available,
         (SELECT row_to_json(k) FROM (SELECT ${RESERVE_COLUMNS}, reason, reference FROM holds
            WHERE account_id = $1 AND idempotency_key = $2) k) AS hold
       FROM (SELECT 1) one LEFT JOIN accounts a ON a.id = $1`,
      [input.accountId, input.idempotencyKey],
    );
    const row = r.rows[0]!;
    if (row.hold !== null) {
      // The key's hold is the original request: the same key must ask for the same thing (the ttl is left out on
      // purpose: a retry recomputes it and keeps the original deadline).
      const h = row.hold;
      if (BigInt(h.amount) !== input.amount || h.reason !== input.reason || h.reference !== input.reference) {
        throw precondition(
          `idempotency_key "${input.idempotencyKey}" was already used for a different reserve (amount, reason or reference differ)`,
        );
      }
      return toReserveResult(h);
    }
    if (row.kind !== "user") throw notFound(`account "${input.accountId}"`);
    if (row.status !== "open") throw precondition(`account "${input.accountId}" is closed`);
    throw new InsufficientCreditsError(input.amount, big(row.available));
  }

  /** Charges `amount` ≤ the hold and releases the rest, exactly once. Replays return the committed hold. */
  commit(input: CommitInput): Promise<Outcome<CommitResult>> {
    return this.commits ? this.commits.run(input) : this.commitOne(input);
  }

  private async commitOne(input: CommitInput): Promise<Outcome<CommitResult>> {
    const r = await this.sql.query<HoldRow>(
      named("ledger_commit", `WITH h AS (
         UPDATE holds SET status = 'committed', charged = $2, resolved_at = now()
         WHERE id = $1 AND status = 'open' AND expires_at > now() AND amount >= $2
         RETURNING *
       ), acct AS (
         UPDATE accounts a SET held = a.held - h.amount, balance = a.balance - h.charged
         FROM h WHERE a.id = h.account_id
         RETURNING a.id
       ), charge AS (
         INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, hold_id, reason, reference, description, usage, created_at)
         SELECT h.id, h.account_id, '${REVENUE_ACCOUNT}', h.charged, 'charge', h.id, h.reason, h.reference,
                coalesce(nullif($3, ''), h.reason) || $4, $5::jsonb, h.resolved_at
         FROM h WHERE h.charged > 0
       )
       SELECT ${HOLD_COLUMNS} FROM h`),
      [input.holdId, input.amount, input.usage?.feature ?? "", describeUsage(input.usage), usageJson(input.usage)],
    );
    const row = r.rows[0];
    if (row) {
      const hold = toHold(row);
      return { result: { hold, transferId: chargeTransferId(hold) }, replayed: false };
    }
    return { result: await this.explainCommitMiss(input), replayed: true };
  }

  /**
   * Several commits (distinct holds) in one statement: each hold resolves as in the single-row statement; the
   * accounts are then locked in id order and updated once each with the sum of their holds. A hold without a row
   * (a replay, past its deadline, ...) is left unsettled: it runs alone and is explained there.
   */
  private async commitMany(inputs: CommitInput[]): Promise<(Outcome<CommitResult> | undefined)[]> {
    assertDistinct(inputs.map((i) => i.holdId), "commitMany: one call per hold");
    const r = await this.sql.query<HoldRow>(
      named("ledger_commit_many", `WITH req AS MATERIALIZED (
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[]) AS r(hold_id, charged, feature, details, usage)
       ), h AS (
         UPDATE holds SET status = 'committed', charged = r.charged, resolved_at = now()
         FROM req r
         WHERE holds.id = r.hold_id AND holds.status = 'open' AND holds.expires_at > now() AND holds.amount >= r.charged
         RETURNING holds.*, r.feature AS charge_feature, r.details AS charge_details, r.usage AS charge_usage
       ), locked AS MATERIALIZED (
         SELECT a.id FROM accounts a WHERE a.id IN (SELECT account_id FROM h) ORDER BY a.id FOR NO KEY UPDATE
       ), per_account AS (
         SELECT h.account_id, sum(h.amount) AS held, sum(h.charged) AS charged FROM h GROUP BY h.account_id
       ), acct AS (
         UPDATE accounts a SET held = a.held - p.held, balance = a.balance - p.charged
         FROM per_account p JOIN locked l ON l.id = p.account_id WHERE a.id = p.account_id
         RETURNING a.id
       ), charge AS (
         INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, hold_id, reason, reference, description, usage, created_at)
         SELECT h.id, h.account_id, '${REVENUE_ACCOUNT}', h.charged, 'charge', h.id, h.reason, h.reference,
                coalesce(nullif(h.charge_feature, ''), h.reason) || h.charge_details, h.charge_usage, h.resolved_at
         FROM h WHERE h.charged > 0
       )
       SELECT ${HOLD_COLUMNS} FROM h`),
      [
        inputs.map((i) => i.holdId),
        inputs.map((i) => i.amount),
        inputs.map((i) => i.usage?.feature ?? ""),
        inputs.map((i) => describeUsage(i.usage)),
        inputs.map((i) => usageJson(i.usage)),
      ],
    );
    const byId = new Map(r.rows.map((row) => [row.id, row]));
    return inputs.map((input) => {
      const row = byId.get(input.holdId);
      if (!row) return undefined;
      const hold = toHold(row);
      return { result: { hold, transferId: chargeTransferId(hold) }, replayed: false };
    });
  }

  private async explainCommitMiss(input: CommitInput): Promise<CommitResult> {
    const r = await this.sql.query<HoldRow & { past_deadline: boolean }>(
      `SELECT ${HOLD_COLUMNS}, h.expires_at <= now() AS past_deadline FROM holds h WHERE h.id = $1`,
      [input.holdId],
    );
    const row = r.rows[0];
    if (!row) throw notFound(`hold "${input.holdId}"`);
    const hold = toHold(row);
    switch (hold.status) {
      case "committed":
        if (hold.charged !== input.amount) {
          throw precondition(`hold "${hold.id}" was already committed with amount ${hold.charged} (not ${input.amount})`);
        }
        return { hold, transferId: chargeTransferId(hold) };
      case "released":
        throw precondition(`hold "${hold.id}" was released; it can no longer be committed`);
      case "expired":
        throw precondition(`hold "${hold.id}" expired; it can no longer be committed`);
      case "open":
        if (input.amount > hold.amount) {
          throw precondition(`amount ${input.amount} exceeds the hold's ${hold.amount} credits`);
        }
        if (row.past_deadline) throw precondition(`hold "${hold.id}" is past its deadline; it can no longer be committed`);
        // Open, in range, before the deadline, yet not updated: cannot happen; fail loudly rather than guess.
        throw new Error(`commit of hold ${hold.id} changed nothing for an unknown reason`);
    }
  }

  /**
   * Releases an open hold. Releasing a released or expired hold returns it as is (idempotent); a committed hold
   * cannot be released.
   */
  async release(holdId: string): Promise<Outcome<Hold>> {
    const released = await this.resolveWithoutCharge(holdId, "released", false);
    if (released) return { result: released, replayed: false };
    const hold = await this.getHold(holdId);
    if (!hold) throw notFound(`hold "${holdId}"`);
    if (hold.status === "committed") throw precondition(`hold "${holdId}" was committed; it can no longer be released`);
    return { result: hold, replayed: true };
  }

  /**
   * Expires open holds past their deadline, at most `limit` per call (oldest first), each in its own statement so
   * the sweeper never holds more than one account lock. Several sweepers may run at once: a hold resolves once.
   */
  async releaseExpiredHolds(limit: number): Promise<Hold[]> {
    const due = await this.sql.query<{ id: string }>(
      `SELECT id FROM holds WHERE status = 'open' AND expires_at <= now() ORDER BY expires_at LIMIT $1`,
      [limit],
    );
    const expired: Hold[] = [];
    for (const { id } of due.rows) {
      const h = await this.resolveWithoutCharge(id, "expired", true);
      if (h) expired.push(h);
    }
    return expired;
  }

  /** Holds still open although their account is closed (a close interrupted before its releases). */
  async releaseHoldsOfClosedAccounts(limit: number): Promise<Hold[]> {
    const due = await this.sql.query<{ id: string }>(
      `SELECT h.id FROM holds h JOIN accounts a ON a.id = h.account_id
       WHERE h.status = 'open' AND a.status = 'closed' LIMIT $1`,
      [limit],
    );
    const released: Hold[] = [];
    for (const { id } of due.rows) {
      const h = await this.resolveWithoutCharge(id, "released", false);
      if (h) released.push(h);
    }
    return released;
  }

  async countOpenHolds(): Promise<number> {
    const r = await this.sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM holds WHERE status = 'open'`);
    return Number(r.rows[0]?.n ?? 0);
  }

  // ---- grants and reversals ---------------------------------------------------------------------------------------

  /**
   * Moves credits from system:grants to a user account. Idempotent per (account, key). `audit` builds the event the
   * grant's outbox row carries (an admin's grant): written by the same statement only when the grant happens, so a
   * replay writes none and a failed grant leaves none.
   */
  async grant(input: GrantInput, audit?: (transferId: string) => OutboxEvent): Promise<Outcome<GrantResult>> {
    const fp = grantFingerprint(input);
    const transferId = this.newId();
    const event = audit && outboxRow(audit(transferId));
    try {
      const r = await this.sql.query<{ response: GrantResponseJson }>(
        named(event ? "ledger_grant_audited" : "ledger_grant", `WITH acct AS (
           UPDATE accounts SET balance = balance + $2
           WHERE id = $1 AND kind = 'user' AND status = 'open'
             AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.account_id = $1 AND k.scope = 'grant' AND k.key = $4)
           RETURNING balance
         ), transfer AS (
           INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, reason, reference, description, created_at)
           SELECT $5::uuid, '${GRANTS_ACCOUNT}', $1, $2, 'grant', $3, $4, $3, now()
           FROM acct
         )${event ? `, audit AS (${OUTBOX_INSERT} SELECT ${outboxValuesSql(7)} FROM acct)` : ""}
         INSERT INTO idempotency_keys (account_id, scope, key, fingerprint, response)
         SELECT $1, 'grant', $4, $6, jsonb_build_object('transferId', $5::text, 'amount', $2::text,
           'balance', acct.balance::text, 'createdAt', ${micros("now()")}::text)
         FROM acct
         RETURNING response`),
        [input.accountId, input.amount, input.reason, input.idempotencyKey, transferId, fp,
          ...(event ? [event.id, event.subject, event.payload, event.headers] : [])],
      );
      const row = r.rows[0];
      if (row) return { result: toGrantResult(row.response), replayed: false };
    } catch (err) {
      if (pgCode(err) !== PG_UNIQUE_VIOLATION) throw err;
    }
    const r = await this.sql.query<{ kind: string | null; status: string | null; fingerprint: string | null; response: GrantResponseJson | null }>(
      `SELECT a.kind, a.status, k.fingerprint, k.response
       FROM (SELECT 1) one
       LEFT JOIN accounts a ON a.id = $1
       LEFT JOIN idempotency_keys k ON k.account_id = $1 AND k.scope = 'grant' AND k.key = $2`,
      [input.accountId, input.idempotencyKey],
    );
    const row = r.rows[0]!;
    if (row.fingerprint !== null && row.response !== null) {
      if (row.fingerprint !== fp) {
        throw precondition(`idempotency_key "${input.idempotencyKey}" was already used for a different grant (amount or reason differ)`);
      }
      return { result: toGrantResult(row.response), replayed: true };
    }
    if (row.kind !== "user") throw notFound(`account "${input.accountId}"`);
    throw precondition(`account "${input.accountId}" is closed`);
  }

  /**
   * Books the mirror image of a grant or charge. A transfer is reversed at most once (unique index): reversing it
   * again returns the existing reversal. Reversing a grant takes the credits back, so they must be available.
   */
  async reverse(transferId: string, reason: string, audit?: (r: ReversalAudit) => OutboxEvent): Promise<Outcome<ReversalResult>> {
    const reversalId = this.newId();
    // The audit event (an admin's reversal) names the account and amount: read from the transfer, which never
    // changes; its outbox row is written by the reversal's own statement, only when the reversal happens.
    let event: OutboxRow | undefined;
    if (audit) {
      const o = await this.sql.query<{ amount: string; account_id: string | null }>(
        `SELECT o.amount::text, a.id AS account_id FROM ledger_transfers o
         LEFT JOIN accounts a ON a.id IN (o.debit_account_id, o.credit_account_id) AND a.kind = 'user'
         WHERE o.id = $1 LIMIT 1`,
        [transferId],
      );
      const orig = o.rows[0];
      if (orig) event = outboxRow(audit({ reversalId, accountId: orig.account_id ?? "", amount: BigInt(orig.amount) }));
    }
    try {
      const r = await this.sql.query<{ amount: string; created_us: string }>(
        `WITH orig AS (
           SELECT id, debit_account_id, credit_account_id, amount, kind FROM ledger_transfers WHERE id = $1
         ), usr AS (
           -- the user side of the transfer gives back what it received, or gets back what it paid
           SELECT a.id AS account_id, CASE WHEN a.id = o.credit_account_id THEN -o.amount ELSE o.amount END AS delta
           FROM orig o JOIN accounts a ON a.id IN (o.debit_account_id, o.credit_account_id) AND a.kind = 'user'
         ), acct AS (
           UPDATE accounts a SET balance = a.balance + usr.delta FROM usr
           WHERE a.id = usr.account_id AND a.balance - a.held + usr.delta >= 0
             AND NOT EXISTS (SELECT 1 FROM orig WHERE kind = 'reversal')
             AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.reverses_transfer_id = $1)
           RETURNING a.id
         ), ins AS (
           INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, reverses_transfer_id, reason, reference, description, created_at)
           SELECT $2::uuid, o.credit_account_id, o.debit_account_id, o.amount, 'reversal', o.id, $3, $1::text, 'Reversal: ' || $3, now()
           FROM orig o WHERE EXISTS (SELECT 1 FROM acct)
           RETURNING amount
         )${event ? `, audit AS (${OUTBOX_INSERT} SELECT ${outboxValuesSql(4)} FROM ins)` : ""}
         SELECT amount::text, ${micros("now()")}::text AS created_us FROM ins`,
        [transferId, reversalId, reason, ...(event ? [event.id, event.subject, event.payload, event.headers] : [])],
      );
      const row = r.rows[0];
      if (row) {
        return { result: { transferId: reversalId, amount: BigInt(row.amount), createdAt: BigInt(row.created_us) }, replayed: false };
      }
    } catch (err) {
      if (pgCode(err) !== PG_UNIQUE_VIOLATION) throw err;
    }
    const r = await this.sql.query<{ kind: string; amount: string; user_available: string | null; reversal_id: string | null; reversal_us: string | null }>(
      `SELECT o.kind, o.amount::text AS amount, (a.balance - a.held)::text AS user_available,
         r.id::text AS reversal_id, ${micros("r.created_at")}::text AS reversal_us
       FROM ledger_transfers o
       LEFT JOIN accounts a ON a.id IN (o.debit_account_id, o.credit_account_id) AND a.kind = 'user'
       LEFT JOIN ledger_transfers r ON r.reverses_transfer_id = o.id
       WHERE o.id = $1 LIMIT 1`,
      [transferId],
    );
    const row = r.rows[0];
    if (!row) throw notFound(`transfer "${transferId}"`);
    if (row.reversal_id !== null) {
      return { result: { transferId: row.reversal_id, amount: BigInt(row.amount), createdAt: BigInt(row.reversal_us!) }, replayed: true };
    }
    if (row.kind === "reversal") throw precondition(`transfer "${transferId}" is itself a reversal; grant again instead`);
    throw precondition(
      `reversing transfer "${transferId}" needs ${row.amount} available credits, the account has ${row.user_available ?? 0}`,
    );
  }

  // ---- history ----------------------------------------------------------------------------------------------------

  /**
   * An account's history, newest first: its transfers (debits negative, credits positive) plus the released part of
   * every resolved hold. Keyset pagination on (created_at, id); `after` is the last item of the previous page.
   */
  async listHistory(accountId: string, limit: number, after?: { at: bigint; id: string }): Promise<HistoryItem[]> {
    const r = await this.sql.query<{
      id: string; kind: HistoryItem["kind"]; amount: string; balance_delta: string; transfer_id: string | null;
      hold_id: string | null; reason: string; reference: string; description: string; usage: unknown; at_us: string;
    }>(
      `SELECT * FROM (
         SELECT 'e' || t.id::text AS id, t.kind, t.amount::text AS amount,
                (CASE WHEN t.credit_account_id = $1 THEN t.amount ELSE -t.amount END)::text AS balance_delta,
                t.id::text AS transfer_id, t.hold_id::text, t.reason, t.reference, t.description, t.usage, ${micros("t.created_at")} AS at_us
         -- (the kinds repeat the partial indexes' predicates: only the user's side of a transfer is indexed)
         FROM ledger_transfers t
         WHERE (t.debit_account_id = $1 AND t.kind IN ('charge', 'reversal'))
            OR (t.credit_account_id = $1 AND t.kind IN ('grant', 'reversal'))
         UNION ALL
         SELECT 'r' || h.id::text, 'release', (h.amount - h.charged)::text, '0', NULL, h.id::text, h.reason, h.reference,
                CASE h.status WHEN 'expired' THEN 'Hold expired' WHEN 'committed' THEN 'Unused part of the hold released'
                     ELSE 'Hold released' END, NULL, ${micros("h.resolved_at")}
         FROM holds h WHERE h.account_id = $1 AND h.status <> 'open' AND h.amount > h.charged
       ) x
       WHERE $3::bigint IS NULL OR (x.at_us, x.id COLLATE "C") < ($3::bigint, $4::text COLLATE "C")
       ORDER BY x.at_us DESC, x.id COLLATE "C" DESC
       LIMIT $2`,
      [accountId, limit, after?.at ?? null, after?.id ?? null],
    );
    return r.rows.map((row) => ({
      id: row.id,
      kind: row.kind,
      amount: BigInt(row.amount),
      balanceDelta: BigInt(row.balance_delta),
      transferId: row.transfer_id ?? "",
      holdId: row.hold_id ?? "",
      reason: row.reason,
      reference: row.reference,
      description: row.description,
      usage: usageFromJson(row.usage),
      createdAt: BigInt(row.at_us),
    }));
  }

  /** Resolves an open hold without charging (release or expiry). Returns null when it was not open. */
  private async resolveWithoutCharge(holdId: string, status: "released" | "expired", onlyIfExpired: boolean): Promise<Hold | null> {
    const r = await this.sql.query<HoldRow>(
      named(onlyIfExpired ? "ledger_expire" : "ledger_release", `WITH h AS (
         UPDATE holds SET status = $2, resolved_at = now()
         WHERE id = $1 AND status = 'open' ${onlyIfExpired ? "AND expires_at <= now()" : ""}
         RETURNING *
       ), acct AS (
         UPDATE accounts a SET held = a.held - h.amount FROM h WHERE a.id = h.account_id RETURNING a.id
       )
       SELECT ${HOLD_COLUMNS} FROM h`),
      [holdId, status],
    );
    const row = r.rows[0];
    return row ? toHold(row) : null;
  }

  async getHold(holdId: string): Promise<Hold | null> {
    const r = await this.sql.query<HoldRow>(`SELECT ${HOLD_COLUMNS} FROM holds h WHERE h.id = $1`, [holdId]);
    const row = r.rows[0];
    return row ? toHold(row) : null;
  }

  /**
   * The holds of one reference and reason, whatever their status, newest first before the keyset `before` (a page's
   * last hold). Two partial indexes bound the scan: the open holds' (few: work in progress) and the resolved holds'
   * by reference (holds_resolved_reference_idx); each branch repeats its index's predicate so the planner can use it.
   */
  async listHolds(q: { reason: string; reference: string; limit: number; before?: { at: bigint; id: string } }): Promise<Hold[]> {
    const r = await this.sql.query<HoldRow>(
      `SELECT ${HOLD_COLUMNS} FROM (
          SELECT * FROM holds WHERE status = 'open' AND reference = $1 AND reason = $2
          UNION ALL
          SELECT * FROM holds WHERE status <> 'open' AND reference = $1 AND reason = $2
        ) h
        WHERE ($3::bigint IS NULL OR (${micros("h.created_at")}, h.id::text COLLATE "C") < ($3::bigint, $4::text COLLATE "C"))
        ORDER BY ${micros("h.created_at")} DESC, h.id::text COLLATE "C" DESC
        LIMIT $5`,
      [q.reference, q.reason, q.before?.at.toString() ?? null, q.before?.id ?? null, q.limit],
    );
    return r.rows.map(toHold);
  }

  /**
   * Open holds of one reason (and reference), created in [`sinceUs`, `beforeUs`), oldest first after the keyset
   * `after`. Open holds are few (work in progress): the `status = 'open'` partial index bounds the scan.
   */
  async listOpenHolds(q: { reason: string; reference?: string; beforeUs?: bigint; sinceUs?: bigint; limit: number; after?: { at: bigint; id: string } }): Promise<Hold[]> {
    const r = await this.sql.query<HoldRow>(
      `SELECT ${HOLD_COLUMNS} FROM holds h
        WHERE h.status = 'open' AND h.reason = $1 AND ($2::text IS NULL OR h.reference = $2)
          AND ($3::bigint IS NULL OR ${micros("h.created_at")} < $3::bigint)
          AND ($7::bigint IS NULL OR ${micros("h.created_at")} >= $7::bigint)
          AND ($4::bigint IS NULL OR (${micros("h.created_at")}, h.id::text COLLATE "C") > ($4::bigint, $5::text COLLATE "C"))
        ORDER BY ${micros("h.created_at")}, h.id::text COLLATE "C"
        LIMIT $6`,
      [q.reason, q.reference ?? null, q.beforeUs?.toString() ?? null, q.after?.at.toString() ?? null, q.after?.id ?? null, q.limit,
        q.sinceUs?.toString() ?? null],
    );
    return r.rows.map(toHold);
  }
}

