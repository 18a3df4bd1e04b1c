// The one-row-per-transfer migration (20261124020000_one_row_per_transfer) against a database that holds a ledger in
// the previous shape (two ledger_entries rows per transfer): every transfer becomes one row, balances, holds and
// the history users see stay the same, and a ledger it cannot convert faithfully is refused and left untouched.
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { applyMigrations, MigrationError } from "@luna/kit/migrate";
import { createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import pg from "pg";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import { checkInvariants } from "../src/data/invariants.js";
import { LedgerStore } from "../src/data/ledger-store.js";
import { MIGRATIONS_DIR } from "./helpers.js";

const BEFORE = "20261124020000_one_row_per_transfer";
let previousDir: string;
const opened: Array<{ db: TestDatabase; pool: pg.Pool }> = [];

beforeAll(() => {
  // The migrations that came before this one, as a migrations folder of their own.
  previousDir = mkdtempSync(join(tmpdir(), "billing-previous-migrations-"));
  for (const name of readdirSync(MIGRATIONS_DIR).filter((n) => n < BEFORE)) {
    cpSync(join(MIGRATIONS_DIR, name), join(previousDir, name), { recursive: true });
  }
});
afterEach(async () => {
  for (const { db, pool } of opened.splice(0)) {
    await pool.end();
    await db.drop();
  }
});
afterAll(() => rmSync(previousDir, { recursive: true, force: true }));

async function previousLedger(): Promise<{ db: TestDatabase; pool: pg.Pool }> {
  const db = await createTestDatabase({ migrationsDir: previousDir, prefix: "billing_mig" });
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on("error", () => undefined);
  opened.push({ db, pool });
  return { db, pool };
}

const GRANT = "00000000-0000-4000-8000-0000000000a1";
const HOLD = "00000000-0000-4000-8000-0000000000b1";
const REVERSAL = "00000000-0000-4000-8000-0000000000c1";
const OPEN_HOLD = "00000000-0000-4000-8000-0000000000b2";

/** A ledger as the previous statements wrote it: a grant of 100, a charge of 30 (hold of 40), its reversal, an open hold. */
async function writePreviousShape(pool: pg.Pool, user: string): Promise<void> {
  await pool.query(`INSERT INTO accounts (id, kind, balance, held) VALUES ($1, 'user', 100, 5)`, [user]);
  await pool.query(
    `INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, reason, reference, description, created_at) VALUES
       ($1, $2, 100, 'grant', 'sign-up', 'signup', 'sign-up', '2026-01-01T00:00:00Z'),
       ($1, 'system:grants', -100, 'grant', 'sign-up', 'signup', 'sign-up', '2026-01-01T00:00:00Z')`,
    [GRANT, user],
  );
  await pool.query(
    `INSERT INTO holds (id, account_id, amount, status, charged, reason, reference, idempotency_key, available_after, created_at, expires_at, resolved_at)
     VALUES ($1, $2, 40, 'committed', 30, 'chat', 'm1', 'm1', 60, '2026-01-02T00:00:00Z', '2026-01-02T00:10:00Z', '2026-01-02T00:01:00Z'),
            ($3, $2, 5, 'open', 0, 'chat', 'm2', 'm2', 95, '2026-01-04T00:00:00Z', '2099-01-01T00:00:00Z', NULL)`,
    [HOLD, user, OPEN_HOLD],
  );
  await pool.query(
    `INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, hold_id, reason, reference, description, usage, created_at) VALUES
       ($1, $2, -30, 'charge', $1, 'chat', 'm1', 'chat · llama · 10 in / 20 out tokens',
        '{"model": "llama", "feature": "chat", "inputTokens": "10", "outputTokens": "20", "images": 0}', '2026-01-02T00:01:00Z'),
       ($1, 'system:revenue', 30, 'charge', $1, 'chat', 'm1', '', NULL, '2026-01-02T00:01:00Z')`,
    [HOLD, user],
  );
  await pool.query(
    `INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, reverses_transfer_id, reason, reference, description, created_at) VALUES
       ($1, $2, 30, 'reversal', $3::uuid, 'refund', $3::text, 'Reversal: refund', '2026-01-03T00:00:00Z'),
       ($1, 'system:revenue', -30, 'reversal', $3::uuid, 'refund', $3::text, 'Reversal: refund', '2026-01-03T00:00:00Z')`,
    [REVERSAL, user, HOLD],
  );
}

it("turns every two-entry transfer into one row; balances, holds and history stay the same", async () => {
  const { db, pool } = await previousLedger();
  const user = "u-migrated";
  await writePreviousShape(pool, user);
  const store = new LedgerStore(pool);

  // This migration and the ones after it.
  expect((await applyMigrations({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR })).applied).toEqual(readdirSync(MIGRATIONS_DIR).filter((n) => n >= BEFORE).sort());

  const rows = await pool.query(
    `SELECT id, debit_account_id, credit_account_id, amount::int, kind, hold_id, reverses_transfer_id, description, usage
     FROM ledger_transfers ORDER BY created_at`,
  );
  expect(rows.rows).toEqual([
    { id: GRANT, debit_account_id: "system:grants", credit_account_id: user, amount: 100, kind: "grant", hold_id: null, reverses_transfer_id: null, description: "sign-up", usage: null },
    {
      id: HOLD, debit_account_id: user, credit_account_id: "system:revenue", amount: 30, kind: "charge", hold_id: HOLD, reverses_transfer_id: null,
      description: "chat · llama · 10 in / 20 out tokens", usage: { model: "llama", feature: "chat", inputTokens: "10", outputTokens: "20", images: 0 },
    },
    { id: REVERSAL, debit_account_id: "system:revenue", credit_account_id: user, amount: 30, kind: "reversal", hold_id: null, reverses_transfer_id: HOLD, description: "Reversal: refund", usage: null },
  ]);
  expect(await pool.query(`SELECT to_regclass('ledger_entries') AS t`)).toMatchObject({ rows: [{ t: null }] });

  // The history users saw before (item ids are opaque and change with the row shape): newest first, the release of a
  // hold's unused part before the charge booked at the same instant.
  const at = (iso: string) => BigInt(Date.parse(iso)) * 1000n;
  expect((await store.listHistory(user, 100)).map(({ id: _id, ...item }) => item)).toEqual([
    { kind: "reversal", amount: 30n, balanceDelta: 30n, transferId: REVERSAL, holdId: "", reason: "refund", reference: HOLD, description: "Reversal: refund", usage: null, createdAt: at("2026-01-03T00:00:00Z") },
    { kind: "release", amount: 10n, balanceDelta: 0n, transferId: "", holdId: HOLD, reason: "chat", reference: "m1", description: "Unused part of the hold released", usage: null, createdAt: at("2026-01-02T00:01:00Z") },
    {
      kind: "charge", amount: 30n, balanceDelta: -30n, transferId: HOLD, holdId: HOLD, reason: "chat", reference: "m1", description: "chat · llama · 10 in / 20 out tokens",
      usage: { model: "llama", feature: "chat", inputTokens: 10n, outputTokens: 20n, images: 0 }, createdAt: at("2026-01-02T00:01:00Z"),
    },
    { kind: "grant", amount: 100n, balanceDelta: 100n, transferId: GRANT, holdId: "", reason: "sign-up", reference: "signup", description: "sign-up", usage: null, createdAt: at("2026-01-01T00:00:00Z") },
  ]);
  expect(await store.getAccount(user)).toMatchObject({ balance: 100n, held: 5n, available: 95n, openHolds: 1 });
  expect(await store.getAccount("system:revenue")).toMatchObject({ balance: 0n });
  expect(await store.getAccount("system:grants")).toMatchObject({ balance: -100n });
  const report = await checkInvariants(pool);
  expect(report.violations).toEqual([]);
  expect(report.entriesChecked).toBe(6n);

  // The migrated ledger keeps working: the open hold commits, the reversed charge cannot be reversed again.
  await store.commit({ holdId: OPEN_HOLD, amount: 5n });
  expect((await store.reverse(HOLD, "again")).result.transferId).toBe(REVERSAL);
  await expect(pool.query(`DELETE FROM ledger_transfers WHERE id = $1`, [GRANT])).rejects.toThrow(/append-only/);
  expect((await checkInvariants(pool)).ok).toBe(true);
});

it("refuses a ledger whose transfers are not one debit and one credit, and changes nothing", async () => {
  const { db, pool } = await previousLedger();
  await pool.query(`INSERT INTO accounts (id, kind, balance) VALUES ('u-odd', 'user', 7)`);
  // Three rows in one transfer: balanced, but not a debit and a credit.
  await pool.query(
    `INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, reason, reference, description) VALUES
       ($1, 'u-odd', 7, 'grant', 'x', 'x', 'x'), ($1, 'system:grants', -3, 'grant', 'x', 'x', 'x'),
       ($1, 'system:revenue', -4, 'grant', 'x', 'x', 'x')`,
    [GRANT],
  );
  const err = await applyMigrations({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR }).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(MigrationError);
  expect(String(err)).toMatch(/has 3 rows summing to 0, not one debit and one credit/);
  expect((await pool.query(`SELECT count(*)::int AS n FROM ledger_entries`)).rows[0].n).toBe(3);
  expect(await pool.query(`SELECT to_regclass('ledger_transfers') AS t`)).toMatchObject({ rows: [{ t: null }] });
});

it("refuses two entries of one transfer that disagree on what the transfer was", async () => {
  const { db, pool } = await previousLedger();
  await pool.query(`INSERT INTO accounts (id, kind, balance) VALUES ('u-odd', 'user', 7)`);
  await pool.query(
    `INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, reason, reference, description) VALUES
       ($1, 'u-odd', 7, 'grant', 'bonus', 'x', 'x'), ($1, 'system:grants', -7, 'grant', 'other reason', 'x', 'x')`,
    [GRANT],
  );
  const err = await applyMigrations({ databaseUrl: db.url, migrationsDir: MIGRATIONS_DIR }).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(MigrationError);
  expect(String(err)).toMatch(/2 rows became 0 transfers/);
  expect((await pool.query(`SELECT count(*)::int AS n FROM ledger_entries`)).rows[0].n).toBe(2);
});
