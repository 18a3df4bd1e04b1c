/**
 * The trial balance: every ledger invariant of RELIABILITY.md checked over the whole database from one consistent
 * snapshot (a REPEATABLE READ, READ ONLY transaction), so concurrent traffic cannot produce false alarms.
 *
 * 1. debits = credits: a transfer is one row that debits one account and credits another by the same positive
 *    amount, so the check is that every row is such a transfer, and that each has the shape of its kind (a grant
 *    comes from system:grants, a charge goes to system:revenue, a reversal mirrors the transfer it reverses);
 * 2. a user account's cached balance = its credits - its debits; system accounts cache nothing;
 * 3. held = the sum of the account's open holds; available = balance - held >= 0;
 * 4. each hold resolved exactly once and never over-charged: status/resolved_at/charged agree, a committed hold has
 *    exactly one charge transfer of `charged` credits from its account, any other hold has none;
 * 5. one reserve idempotency key → one hold (the hold carries its key); transfers and holds reference existing
 *    accounts (no foreign keys: checked here); transfers are append-only (trigger present).
 */
import type pg from "pg";
import type { InvariantReport, InvariantViolation } from "../domain/ledger.js";
import { GRANTS_ACCOUNT, REVENUE_ACCOUNT } from "../domain/ledger.js";
import { micros } from "./sql.js";

/** Violations listed per invariant at most (a broken ledger should not produce a gigantic response). */
const MAX_PER_CHECK = 50;

interface Check {
  invariant: string;
  sql: string;
}

const CHECKS: Check[] = [
  {
    invariant: "debits_equal_credits",
    sql: `SELECT id::text AS subject, 'moves ' || amount || ' from ' || debit_account_id || ' to ' || credit_account_id AS detail
          FROM ledger_transfers WHERE amount <= 0 OR debit_account_id = credit_account_id`,
  },
  {
    invariant: "transfer_well_formed",
    sql: `SELECT t.id::text AS subject,
            t.kind || ' of ' || t.amount || ' from ' || t.debit_account_id || ' to ' || t.credit_account_id
              || coalesce(', reversing ' || o.kind || ' of ' || o.amount || ' from ' || o.debit_account_id || ' to ' || o.credit_account_id, '') AS detail
          FROM ledger_transfers t LEFT JOIN ledger_transfers o ON o.id = t.reverses_transfer_id
          WHERE (CASE t.kind
                   WHEN 'grant' THEN t.debit_account_id = '${GRANTS_ACCOUNT}'
                   WHEN 'charge' THEN t.credit_account_id = '${REVENUE_ACCOUNT}'
                   WHEN 'reversal' THEN o.kind <> 'reversal' AND o.amount = t.amount
                     AND o.debit_account_id = t.credit_account_id AND o.credit_account_id = t.debit_account_id
                 END) IS NOT TRUE`,
  },
  {
    invariant: "account_balance_matches_entries",
    sql: `SELECT a.id AS subject, 'cached balance ' || a.balance || ', credits - debits = ' || coalesce(e.total, 0) AS detail
          FROM accounts a LEFT JOIN (
            SELECT account_id, sum(delta) AS total FROM (
              SELECT credit_account_id AS account_id, amount AS delta FROM ledger_transfers
              UNION ALL
              SELECT debit_account_id, -amount FROM ledger_transfers) x
            GROUP BY account_id) e ON e.account_id = a.id
          WHERE a.kind = 'user' AND a.balance <> coalesce(e.total, 0)`,
  },
  {
    invariant: "system_account_caches_nothing",
    sql: `SELECT id AS subject, 'balance ' || balance || ', held ' || held AS detail
          FROM accounts WHERE kind = 'system' AND (balance <> 0 OR held <> 0)`,
  },
  {
    invariant: "held_matches_open_holds",
    sql: `SELECT a.id AS subject, 'held ' || a.held || ', open holds sum to ' || coalesce(h.total, 0) AS detail
          FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) AS total FROM holds WHERE status = 'open' GROUP BY account_id) h
            ON h.account_id = a.id
          WHERE a.held <> coalesce(h.total, 0)`,
  },
  {
    invariant: "available_non_negative",
    sql: `SELECT id AS subject, 'balance ' || balance || ' - held ' || held || ' = ' || (balance - held) AS detail
          FROM accounts WHERE kind = 'user' AND (balance - held < 0 OR held < 0)`,
  },
  {
    invariant: "hold_resolved_once",
    sql: `SELECT id::text AS subject, 'status ' || status || ', resolved_at ' || coalesce(resolved_at::text, 'null') || ', charged ' || charged AS detail
          FROM holds
          WHERE status NOT IN ('open', 'committed', 'released', 'expired')
             OR (status = 'open') <> (resolved_at IS NULL)
             OR (status <> 'committed' AND charged <> 0)`,
  },
  {
    invariant: "commit_within_hold",
    sql: `SELECT id::text AS subject, 'charged ' || charged || ' of a ' || amount || '-credit hold' AS detail
          FROM holds WHERE charged < 0 OR charged > amount`,
  },
  {
    invariant: "charge_matches_hold",
    sql: `SELECT h.id::text AS subject,
            'status ' || h.status || ', charged ' || h.charged || ', charge transfers ' || coalesce(c.transfers, 0)
              || coalesce(' of ' || c.total || ' from ' || array_to_string(c.debited, ', '), '') AS detail
          FROM holds h LEFT JOIN (
            SELECT hold_id, count(*) AS transfers, sum(amount) AS total, array_agg(DISTINCT debit_account_id) AS debited
            FROM ledger_transfers WHERE kind = 'charge' GROUP BY hold_id) c ON c.hold_id = h.id
          WHERE (h.status = 'committed' AND h.charged > 0
                 AND (c.transfers IS DISTINCT FROM 1 OR c.total <> h.charged OR c.debited <> ARRAY[h.account_id]))
             OR ((h.status <> 'committed' OR h.charged = 0) AND c.transfers IS NOT NULL)`,
  },
  {
    invariant: "charge_has_hold",
    sql: `SELECT t.id::text AS subject, 'charge without an existing hold' AS detail
          FROM ledger_transfers t LEFT JOIN holds h ON h.id = t.hold_id
          WHERE t.kind = 'charge' AND h.id IS NULL`,
  },
  {
    invariant: "entry_account_exists",
    sql: `SELECT x.account_id AS subject, 'transfers for an unknown account' AS detail
          FROM (SELECT debit_account_id AS account_id FROM ledger_transfers
                UNION SELECT credit_account_id FROM ledger_transfers) x
          LEFT JOIN accounts a ON a.id = x.account_id WHERE a.id IS NULL`,
  },
  {
    invariant: "hold_account_exists",
    sql: `SELECT DISTINCT h.account_id AS subject, 'holds for an unknown account' AS detail
          FROM holds h LEFT JOIN accounts a ON a.id = h.account_id WHERE a.id IS NULL`,
  },
  {
    // The unique (account_id, idempotency_key) index makes this structural; the check proves the index is there.
    invariant: "idempotent_reserve_single_hold",
    sql: `SELECT account_id || '/' || idempotency_key AS subject, count(*) || ' holds share this reserve key' AS detail
          FROM holds GROUP BY account_id, idempotency_key HAVING count(*) > 1
          UNION ALL
          SELECT 'holds' AS subject, 'unique index on (account_id, idempotency_key) missing or not valid' AS detail
          WHERE NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            WHERE c.relname = 'holds_account_id_idempotency_key_key' AND i.indisunique AND i.indisvalid)`,
  },
  {
    invariant: "entries_append_only",
    sql: `SELECT 'ledger_transfers' AS subject, 'append-only trigger missing or disabled' AS detail
          WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'ledger_transfers_append_only'
                              AND tgrelid = 'ledger_transfers'::regclass AND tgenabled <> 'D')`,
  },
];

/** Runs every check in one snapshot. */
export async function checkInvariants(pool: pg.Pool): Promise<InvariantReport> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const violations: InvariantViolation[] = [];
    for (const check of CHECKS) {
      const r = await client.query<{ subject: string; detail: string }>(`${check.sql} LIMIT ${MAX_PER_CHECK}`);
      for (const row of r.rows) violations.push({ invariant: check.invariant, subject: row.subject ?? "", detail: row.detail });
    }
    // "entries" counts debits and credits: each transfer row is one of each (as two rows were before 2026-11).
    const counts = await client.query<{ accounts: string; entries: string; holds: string; now_us: string }>(
      `SELECT (SELECT count(*) FROM accounts)::text AS accounts, (SELECT 2 * count(*) FROM ledger_transfers)::text AS entries,
              (SELECT count(*) FROM holds)::text AS holds, ${micros("now()")}::text AS now_us`,
    );
    await client.query("COMMIT");
    const c = counts.rows[0]!;
    return {
      ok: violations.length === 0,
      violations,
      checkedAt: BigInt(c.now_us),
      accountsChecked: BigInt(c.accounts),
      entriesChecked: BigInt(c.entries),
      holdsChecked: BigInt(c.holds),
    };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** The invariants' names, for metrics (a gauge per invariant, 0 when it holds). */
export const INVARIANT_NAMES = CHECKS.map((c) => c.invariant);
