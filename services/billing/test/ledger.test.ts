// The ledger against real Postgres: holds, grants, idempotency, deadlines, closing, reversals, history — with the
// full trial balance asserted after every test.
import { assertSchemaMatchesDatabase } from "@luna/kit/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BillingError, InsufficientCreditsError } from "../src/domain/errors.js";
import { fundedAccount, newAccountId, openLedgerDb, reserveInput, SCHEMA_PATH, type LedgerDb } from "./helpers.js";

let t: LedgerDb;

beforeAll(async () => {
  t = await openLedgerDb();
});
afterEach(async () => {
  await t.assertInvariants();
});
afterAll(async () => {
  await t?.close();
});

async function balanceOf(id: string) {
  const a = await t.store.getAccount(id);
  if (!a) throw new Error(`no account ${id}`);
  return { balance: a.balance, held: a.held, available: a.available };
}

async function rejection(p: Promise<unknown>): Promise<BillingError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof BillingError)) throw new Error(`expected a BillingError, got ${String(err)}`);
  return err;
}

describe("schema", () => {
  it("matches prisma/schema.prisma", async () => {
    // Partial indexes, which Prisma cannot model (the kit's outbox scan and five of the ledger's).
    await assertSchemaMatchesDatabase({
      schemaPath: SCHEMA_PATH,
      databaseUrl: t.db.url,
      ignoreIndexes: [
        "outbox_events_unpublished_seq_idx",
        "holds_open_expires_at_idx",
        "holds_resolved_reference_idx",
        "ledger_transfers_reversal_once_key",
        "ledger_transfers_debit_account_id_created_at_idx",
        "ledger_transfers_credit_account_id_created_at_idx",
      ],
    });
  });

  it("lists an account's history through the user-side partial indexes", async () => {
    const id = await fundedAccount(t.store, 10n);
    // (the test table is tiny: without seq scans the planner shows whether the partial indexes can serve the query)
    const client = await t.pool.connect();
    let text: string;
    try {
      await client.query("BEGIN");
      await client.query("SET LOCAL enable_seqscan = off");
      const plan = await client.query<{ "QUERY PLAN": string }>(
        `EXPLAIN (COSTS OFF) SELECT 1 FROM ledger_transfers t
         WHERE (t.debit_account_id = $1 AND t.kind IN ('charge', 'reversal'))
            OR (t.credit_account_id = $1 AND t.kind IN ('grant', 'reversal'))`,
        [id],
      );
      text = plan.rows.map((r) => r["QUERY PLAN"]).join("\n");
    } finally {
      await client.query("ROLLBACK");
      client.release();
    }
    expect(text).toMatch(/ledger_transfers_debit_account_id_created_at_idx/);
    expect(text).toMatch(/ledger_transfers_credit_account_id_created_at_idx/);
    // a grant must come from system:grants and a charge go to system:revenue, so the user's side is always indexed
    await expect(
      t.pool.query(`INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, reason, reference, description)
                    VALUES (gen_random_uuid(), 'system:revenue', $1, 1, 'grant', 'x', 'x', 'x')`, [id]),
    ).rejects.toThrow(/ledger_transfers_grant_check/);
  });

  it("keeps ledger transfers append-only", async () => {
    const id = await fundedAccount(t.store, 10n);
    await expect(t.pool.query(`UPDATE ledger_transfers SET amount = amount + 1 WHERE credit_account_id = $1`, [id])).rejects.toThrow(/append-only/);
    await expect(t.pool.query(`DELETE FROM ledger_transfers WHERE credit_account_id = $1`, [id])).rejects.toThrow(/append-only/);
  });

  it("refuses a negative available balance even if the application forgot to check", async () => {
    const id = await fundedAccount(t.store, 10n);
    await expect(t.pool.query(`UPDATE accounts SET held = 11 WHERE id = $1`, [id])).rejects.toThrow(/accounts_available_check/);
  });
});

describe("reserve, commit, release", () => {
  it("holds credits, charges the actual amount and releases the rest", async () => {
    const id = await fundedAccount(t.store, 1000n);
    const r = await t.store.reserve(reserveInput(id, 300n, "k1"));
    expect(r.replayed).toBe(false);
    expect(r.result.amount).toBe(300n);
    expect(r.result.available).toBe(700n);
    expect(await balanceOf(id)).toEqual({ balance: 1000n, held: 300n, available: 700n });

    const c = await t.store.commit({ holdId: r.result.holdId, amount: 120n });
    expect(c.result.hold).toMatchObject({ status: "committed", charged: 120n, released: 180n });
    expect(c.result.transferId).not.toBe("");
    expect(await balanceOf(id)).toEqual({ balance: 880n, held: 0n, available: 880n });
    expect((await t.store.getAccount("system:revenue"))!.balance).toBeGreaterThanOrEqual(120n);
  });

  it("rejects a reserve above the available amount with the available amount in the message", async () => {
    const id = await fundedAccount(t.store, 100n);
    await t.store.reserve(reserveInput(id, 60n, "a"));
    const err = await rejection(t.store.reserve(reserveInput(id, 41n, "b")));
    expect(err).toBeInstanceOf(InsufficientCreditsError);
    expect(err.kind).toBe("resource_exhausted");
    expect(err.message).toBe("not enough credits: the request needs 41 credits, 40 available");
    expect(await balanceOf(id)).toEqual({ balance: 100n, held: 60n, available: 40n });
    // exactly the available amount still passes
    await t.store.reserve(reserveInput(id, 40n, "c"));
    expect(await balanceOf(id)).toEqual({ balance: 100n, held: 100n, available: 0n });
  });

  it("does not keep the idempotency key of a rejected reserve, so the same key works once credits arrive", async () => {
    const id = await fundedAccount(t.store, 10n);
    await rejection(t.store.reserve(reserveInput(id, 20n, "later")));
    await t.store.grant({ accountId: id, amount: 10n, reason: "top up", idempotencyKey: "top-up" });
    const r = await t.store.reserve(reserveInput(id, 20n, "later"));
    expect(r.replayed).toBe(false);
  });

  it("answers not found for an unknown account and for system accounts", async () => {
    expect((await rejection(t.store.reserve(reserveInput("nobody-here", 1n, "k")))).kind).toBe("not_found");
    expect((await rejection(t.store.reserve(reserveInput("system:grants", 1n, "k")))).kind).toBe("not_found");
  });

  it("commits with 0 (nothing charged, everything released) and writes no ledger entry", async () => {
    const id = await fundedAccount(t.store, 50n);
    const r = await t.store.reserve(reserveInput(id, 50n, "z"));
    const c = await t.store.commit({ holdId: r.result.holdId, amount: 0n });
    expect(c.result.transferId).toBe("");
    expect(c.result.hold).toMatchObject({ status: "committed", charged: 0n, released: 50n });
    const entries = await t.pool.query(`SELECT 1 FROM ledger_transfers WHERE hold_id = $1`, [r.result.holdId]);
    expect(entries.rowCount).toBe(0);
  });

  it("never commits more than the hold", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 30n, "x"));
    const err = await rejection(t.store.commit({ holdId: r.result.holdId, amount: 31n }));
    expect(err.kind).toBe("failed_precondition");
    expect(err.message).toMatch(/exceeds the hold's 30 credits/);
    expect((await t.store.getHold(r.result.holdId))!.status).toBe("open");
  });

  it("resolves a hold exactly once: commit replays, a different amount or a release after it is refused", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 30n, "once"));
    const first = await t.store.commit({ holdId: r.result.holdId, amount: 10n });
    const again = await t.store.commit({ holdId: r.result.holdId, amount: 10n });
    expect(again.replayed).toBe(true);
    expect(again.result).toEqual(first.result);
    expect((await rejection(t.store.commit({ holdId: r.result.holdId, amount: 11n }))).message).toMatch(/already committed with amount 10/);
    expect((await rejection(t.store.release(r.result.holdId))).kind).toBe("failed_precondition");
    expect(await balanceOf(id)).toEqual({ balance: 90n, held: 0n, available: 90n });
  });

  it("releases once; a second release returns the released hold; a commit after release is refused", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 30n, "rel"));
    const a = await t.store.release(r.result.holdId);
    const b = await t.store.release(r.result.holdId);
    expect(a.replayed).toBe(false);
    expect(b.replayed).toBe(true);
    expect(b.result).toEqual(a.result);
    expect(a.result).toMatchObject({ status: "released", charged: 0n, released: 30n });
    expect((await rejection(t.store.commit({ holdId: r.result.holdId, amount: 1n }))).message).toMatch(/was released/);
    expect(await balanceOf(id)).toEqual({ balance: 100n, held: 0n, available: 100n });
  });

  it("answers not found for unknown holds", async () => {
    const unknown = "00000000-0000-4000-8000-000000000000";
    expect((await rejection(t.store.commit({ holdId: unknown, amount: 1n }))).kind).toBe("not_found");
    expect((await rejection(t.store.release(unknown))).kind).toBe("not_found");
    expect(await t.store.getHold(unknown)).toBeNull();
  });

  it("concurrent commit and release of one hold: exactly one wins", async () => {
    const id = await fundedAccount(t.store, 1000n);
    for (let i = 0; i < 20; i++) {
      const r = await t.store.reserve(reserveInput(id, 10n, `race-${i}`));
      const results = await Promise.allSettled([
        t.store.commit({ holdId: r.result.holdId, amount: 7n }),
        t.store.release(r.result.holdId),
        t.store.commit({ holdId: r.result.holdId, amount: 7n }),
      ]);
      const hold = (await t.store.getHold(r.result.holdId))!;
      expect(["committed", "released"]).toContain(hold.status);
      const fresh = results.filter((x) => x.status === "fulfilled" && !x.value.replayed);
      expect(fresh).toHaveLength(1);
    }
  });
});

describe("idempotency", () => {
  it("one key sent 50 times concurrently: one hold, 50 identical responses", async () => {
    const id = await fundedAccount(t.store, 1000n);
    const results = await Promise.all(Array.from({ length: 50 }, () => t.store.reserve(reserveInput(id, 7n, "same-key"))));
    expect(new Set(results.map((r) => JSON.stringify(r.result, (_k, v) => (typeof v === "bigint" ? v.toString() : v)))).size).toBe(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    const holds = await t.pool.query(`SELECT count(*)::int AS n FROM holds WHERE account_id = $1`, [id]);
    expect(holds.rows[0].n).toBe(1);
    expect(await balanceOf(id)).toEqual({ balance: 1000n, held: 7n, available: 993n });
  });

  it("the same key with a different amount, reason or reference is rejected and changes nothing", async () => {
    const id = await fundedAccount(t.store, 1000n);
    await t.store.reserve(reserveInput(id, 5n, "k", { reason: "chat", reference: "m1" }));
    for (const other of [
      reserveInput(id, 6n, "k", { reason: "chat", reference: "m1" }),
      reserveInput(id, 5n, "k", { reason: "image", reference: "m1" }),
      reserveInput(id, 5n, "k", { reason: "chat", reference: "m2" }),
    ]) {
      const err = await rejection(t.store.reserve(other));
      expect(err.kind).toBe("failed_precondition");
      expect(err.message).toMatch(/idempotency_key "k" was already used for a different reserve/);
    }
    // a different ttl is the same request (a retry recomputes its deadline)
    expect((await t.store.reserve(reserveInput(id, 5n, "k", { reason: "chat", reference: "m1", ttlMs: 5_000 }))).replayed).toBe(true);
    expect(await balanceOf(id)).toEqual({ balance: 1000n, held: 5n, available: 995n });
  });

  it("different keys with different bodies raced 50 times each: one effect per key", async () => {
    const id = await fundedAccount(t.store, 10_000n);
    const calls = [];
    for (let k = 0; k < 5; k++) for (let i = 0; i < 50; i++) calls.push(t.store.reserve(reserveInput(id, BigInt(k + 1), `key-${k}`)));
    const results = await Promise.all(calls);
    expect(new Set(results.map((r) => r.result.holdId)).size).toBe(5);
    expect(await balanceOf(id)).toEqual({ balance: 10_000n, held: 15n, available: 9_985n });
  });

  it("a replay returns the original response even after the hold was resolved", async () => {
    const id = await fundedAccount(t.store, 100n);
    const first = await t.store.reserve(reserveInput(id, 40n, "orig"));
    await t.store.commit({ holdId: first.result.holdId, amount: 40n });
    const again = await t.store.reserve(reserveInput(id, 40n, "orig"));
    expect(again).toEqual({ result: first.result, replayed: true });
    expect(await balanceOf(id)).toEqual({ balance: 60n, held: 0n, available: 60n });
  });

  it("grants are idempotent per key; a different amount under the same key is rejected", async () => {
    const id = newAccountId();
    await t.store.openAccount(id);
    const results = await Promise.all(
      Array.from({ length: 20 }, () => t.store.grant({ accountId: id, amount: 500n, reason: "bonus", idempotencyKey: "g1" })),
    );
    expect(new Set(results.map((r) => r.result.transferId)).size).toBe(1);
    expect((await rejection(t.store.grant({ accountId: id, amount: 501n, reason: "bonus", idempotencyKey: "g1" }))).kind).toBe("failed_precondition");
    expect(await balanceOf(id)).toEqual({ balance: 500n, held: 0n, available: 500n });
  });
});

describe("deadlines and the sweeper", () => {
  it("a hold past its deadline cannot be committed and is released by the sweeper", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 25n, "late", { ttlMs: 1 }));
    await new Promise((res) => setTimeout(res, 20));
    expect((await rejection(t.store.commit({ holdId: r.result.holdId, amount: 1n }))).message).toMatch(/past its deadline/);
    const swept = await t.ledger.sweepExpiredHolds(100);
    expect(swept).toBeGreaterThanOrEqual(1);
    expect((await t.store.getHold(r.result.holdId))!).toMatchObject({ status: "expired", released: 25n });
    expect(await balanceOf(id)).toEqual({ balance: 100n, held: 0n, available: 100n });
    expect((await rejection(t.store.commit({ holdId: r.result.holdId, amount: 1n }))).message).toMatch(/expired/);
    // releasing an expired hold is harmless and reports it as it is
    expect((await t.store.release(r.result.holdId)).result.status).toBe("expired");
  });

  it("sweeps in batches until nothing is due, and leaves live holds alone", async () => {
    const id = await fundedAccount(t.store, 1000n);
    for (let i = 0; i < 25; i++) await t.store.reserve(reserveInput(id, 1n, `due-${i}`, { ttlMs: 1 }));
    const live = await t.store.reserve(reserveInput(id, 5n, "live"));
    await new Promise((res) => setTimeout(res, 20));
    expect(await t.ledger.sweepExpiredHolds(4)).toBeGreaterThanOrEqual(25);
    expect(await balanceOf(id)).toEqual({ balance: 1000n, held: 5n, available: 995n });
    expect((await t.store.getHold(live.result.holdId))!.status).toBe("open");
  });
});

describe("closing an account", () => {
  it("releases open holds and refuses new reserves and grants; history and balance stay", async () => {
    const id = await fundedAccount(t.store, 100n);
    const a = await t.store.reserve(reserveInput(id, 10n, "a"));
    const b = await t.store.reserve(reserveInput(id, 20n, "b"));
    await t.store.commit({ holdId: a.result.holdId, amount: 10n });
    const released = await t.ledger.closeAccount(id);
    expect(released.map((h) => h.id)).toEqual([b.result.holdId]);
    expect(await t.store.getAccount(id)).toMatchObject({ status: "closed", balance: 90n, held: 0n });
    expect((await rejection(t.store.reserve(reserveInput(id, 1n, "c")))).message).toMatch(/is closed/);
    expect((await rejection(t.store.grant({ accountId: id, amount: 1n, reason: "x", idempotencyKey: "x" }))).message).toMatch(/is closed/);
    expect(await t.ledger.closeAccount(id)).toEqual([]);
  });

  it("a close for an unknown user creates it closed, so a late sign-up cannot reopen it", async () => {
    const id = newAccountId();
    await t.store.markAccountClosed(id);
    await t.ledger.openAccountWithSignupGrant(id);
    expect(await t.store.getAccount(id)).toMatchObject({ status: "closed", balance: 0n });
  });
});

describe("sign-up grant", () => {
  it("grants the configured credits once per user", async () => {
    const id = newAccountId();
    await t.ledger.openAccountWithSignupGrant(id);
    await t.ledger.openAccountWithSignupGrant(id);
    expect(await balanceOf(id)).toEqual({ balance: 1000n, held: 0n, available: 1000n });
  });
});

describe("reversals", () => {
  it("reverses a charge once; reversing again returns the same reversal", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 30n, "rv"));
    const c = await t.store.commit({ holdId: r.result.holdId, amount: 30n });
    const [x, y] = await Promise.all([t.store.reverse(c.result.transferId, "refund"), t.store.reverse(c.result.transferId, "refund")]);
    expect(x.result.transferId).toBe(y.result.transferId);
    expect(x.result.amount).toBe(30n);
    expect(await balanceOf(id)).toEqual({ balance: 100n, held: 0n, available: 100n });
    expect((await rejection(t.store.reverse(x.result.transferId, "again"))).message).toMatch(/itself a reversal/);
    // One row per transfer: the charge went from the user to revenue, the reversal brings it back.
    const rows = await t.pool.query(
      `SELECT kind, debit_account_id AS debit, credit_account_id AS credit, amount::int FROM ledger_transfers WHERE id = ANY($1) ORDER BY created_at`,
      [[c.result.transferId, x.result.transferId]],
    );
    expect(rows.rows).toEqual([
      { kind: "charge", debit: id, credit: "system:revenue", amount: 30 },
      { kind: "reversal", debit: "system:revenue", credit: id, amount: 30 },
    ]);
    expect((await t.store.listHistory(id, 10)).map((i) => [i.kind, i.amount, i.balanceDelta, i.transferId])).toEqual([
      ["reversal", 30n, 30n, x.result.transferId],
      ["charge", 30n, -30n, c.result.transferId],
      ["grant", 100n, 100n, expect.any(String)],
    ]);
  });

  it("reversing a grant needs the credits available", async () => {
    const id = newAccountId();
    await t.store.openAccount(id);
    const g = await t.store.grant({ accountId: id, amount: 50n, reason: "oops", idempotencyKey: "g" });
    await t.store.reserve(reserveInput(id, 30n, "spend"));
    expect((await rejection(t.store.reverse(g.result.transferId, "mistake"))).message).toMatch(/needs 50 available credits, the account has 20/);
    expect(await balanceOf(id)).toEqual({ balance: 50n, held: 30n, available: 20n });
    // once the credits are back, the grant is reversed: the user pays system:grants back
    await t.store.releaseOpenHolds(id);
    const r = await t.store.reverse(g.result.transferId, "mistake");
    expect(r).toMatchObject({ replayed: false, result: { amount: 50n } });
    expect(await balanceOf(id)).toEqual({ balance: 0n, held: 0n, available: 0n });
    expect((await t.store.listHistory(id, 1))[0]).toMatchObject({ kind: "reversal", amount: 50n, balanceDelta: -50n, description: "Reversal: mistake" });
  });

  it("answers not found for an unknown transfer", async () => {
    expect((await rejection(t.store.reverse("00000000-0000-4000-8000-000000000001", "x"))).kind).toBe("not_found");
  });
});

describe("history", () => {
  it("lists grants, charges with usage, and releases, newest first, across pages", async () => {
    const id = await fundedAccount(t.store, 1000n);
    const r1 = await t.store.reserve(reserveInput(id, 100n, "m1"));
    await t.store.commit({
      holdId: r1.result.holdId,
      amount: 40n,
      usage: { model: "llama-3.1-8b", feature: "chat", inputTokens: 120n, outputTokens: 340n, images: 0 },
    });
    const r2 = await t.store.reserve(reserveInput(id, 100n, "j1", { reason: "image" }));
    await t.store.commit({ holdId: r2.result.holdId, amount: 100n, usage: { model: "flux", feature: "", inputTokens: 0n, outputTokens: 0n, images: 2 } });
    const r3 = await t.store.reserve(reserveInput(id, 5n, "m3"));
    await t.store.release(r3.result.holdId);

    const all = await t.store.listHistory(id, 100);
    expect(all.map((i) => [i.kind, i.amount, i.balanceDelta])).toEqual([
      ["release", 5n, 0n],
      ["charge", 100n, -100n],
      ["release", 60n, 0n],
      ["charge", 40n, -40n],
      ["grant", 1000n, 1000n],
    ]);
    expect(all[1]!.description).toBe("image · flux · 2 images");
    expect(all[3]!.description).toBe("chat · llama-3.1-8b · 120 in / 340 out tokens");
    expect(all[3]!.usage).toEqual({ model: "llama-3.1-8b", feature: "chat", inputTokens: 120n, outputTokens: 340n, images: 0 });

    const paged = [];
    let after: { at: bigint; id: string } | undefined;
    for (;;) {
      const page = await t.store.listHistory(id, 2, after);
      paged.push(...page);
      if (page.length < 2) break;
      after = { at: page[1]!.createdAt, id: page[1]!.id };
    }
    expect(paged.map((i) => i.id)).toEqual(all.map((i) => i.id));
  });
});

describe("trial balance", () => {
  it("reports each kind of corruption it is meant to catch", async () => {
    const id = await fundedAccount(t.store, 100n);
    const r = await t.store.reserve(reserveInput(id, 10n, "c"));
    const corrupt = async (sql: string, undo: string, invariant: string) => {
      await t.pool.query("ALTER TABLE accounts DROP CONSTRAINT accounts_available_check");
      try {
        await t.pool.query(sql, [id]);
        const report = await t.ledger.checkInvariants();
        expect(report.ok).toBe(false);
        expect(report.violations.map((v) => v.invariant)).toContain(invariant);
        await t.pool.query(undo, [id]);
      } finally {
        await t.pool.query(`ALTER TABLE accounts ADD CONSTRAINT "accounts_available_check" CHECK (
          ("kind" = 'user' AND "held" >= 0 AND "balance" - "held" >= 0) OR ("kind" = 'system' AND "held" = 0 AND "balance" = 0))`);
      }
    };
    await corrupt(`UPDATE accounts SET balance = balance + 1 WHERE id = $1`, `UPDATE accounts SET balance = balance - 1 WHERE id = $1`, "account_balance_matches_entries");
    await corrupt(`UPDATE accounts SET held = held + 1 WHERE id = $1`, `UPDATE accounts SET held = held - 1 WHERE id = $1`, "held_matches_open_holds");
    await corrupt(`UPDATE accounts SET held = 200 WHERE id = $1`, `UPDATE accounts SET held = 10 WHERE id = $1`, "available_non_negative");
    await t.pool.query(`ALTER TABLE ledger_transfers DISABLE TRIGGER ledger_transfers_append_only`);
    try {
      const report = await t.ledger.checkInvariants();
      expect(report.violations.map((v) => v.invariant)).toEqual(["entries_append_only"]);
      // A "reversal" of 1 of the 100-credit grant: balanced, but not the mirror of what it reverses.
      await t.pool.query(`UPDATE accounts SET balance = balance - 1 WHERE id = $1`, [id]);
      const odd = await t.pool.query<{ id: string }>(
        `INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, reverses_transfer_id, reason, reference, description)
         SELECT gen_random_uuid(), $1, 'system:grants', 1, 'reversal', g.id, 'x', 'x', 'x'
         FROM ledger_transfers g WHERE g.credit_account_id = $1 AND g.kind = 'grant' RETURNING id`,
        [id],
      );
      const shape = await t.ledger.checkInvariants();
      expect(shape.violations).toEqual([
        {
          invariant: "transfer_well_formed",
          subject: odd.rows[0]!.id,
          detail: `reversal of 1 from ${id} to system:grants, reversing grant of 100 from system:grants to ${id}`,
        },
        expect.objectContaining({ invariant: "entries_append_only" }),
      ]);
      await t.pool.query(`DELETE FROM ledger_transfers WHERE id = $1`, [odd.rows[0]!.id]);
      await t.pool.query(`UPDATE accounts SET balance = balance + 1 WHERE id = $1`, [id]);
    } finally {
      await t.pool.query(`ALTER TABLE ledger_transfers ENABLE TRIGGER ledger_transfers_append_only`);
    }
    // Holds have no foreign key to accounts (it cost a query per reserve): the trial balance is the guard.
    const orphan = await t.pool.query<{ id: string }>(
      `INSERT INTO holds (id, account_id, amount, reason, reference, idempotency_key, available_after, expires_at)
       VALUES (gen_random_uuid(), 'nobody-' || $1, 1, 'chat', 'x', 'x', 0, now() + interval '1 hour') RETURNING id`,
      [id],
    );
    try {
      const report = await t.ledger.checkInvariants();
      expect(report.violations).toEqual([{ invariant: "hold_account_exists", subject: `nobody-${id}`, detail: "holds for an unknown account" }]);
    } finally {
      await t.pool.query(`DELETE FROM holds WHERE id = $1`, [orphan.rows[0]!.id]);
    }
    await t.store.release(r.result.holdId);
    const metric = await t.registry.getSingleMetricAsString("luna_billing_invariant_checks_total");
    expect(metric).toMatch(/result="violated"} [1-9]/);
  });
});
