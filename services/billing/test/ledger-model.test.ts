// Model-based test of the ledger (fast-check `commands`): random sequences of reserve / commit / release / expire /
// grant / close / retry (idempotent replay) / crash (connection killed mid-reserve, then retried) / orphan (caller
// dies after reserving) run against the real database and against a tiny in-memory model; every response and every
// account and hold must agree with the model after every command, and the full trial balance must hold.
//
// Runs: LEDGER_MODEL_RUNS (default 10000). Each run uses its own accounts, so no reset is needed between runs
// (faster than TRUNCATE and it keeps earlier runs' data in the trial balance).
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { notEnoughCreditsMessage } from "@luna/kit";
import { LedgerStore } from "../src/data/ledger-store.js";
import { micros, named } from "../src/data/sql.js";
import { BillingError } from "../src/domain/errors.js";
import type { Hold, ReserveResult } from "../src/domain/ledger.js";
import { openLedgerDb, reserveInput, type LedgerDb } from "./helpers.js";

const RUNS = Number(process.env.LEDGER_MODEL_RUNS ?? 10_000);
/** Independent chains of sequences run at once (each its own accounts), to use the database's concurrency. */
const CHAINS = 4;
const TRIAL_BALANCE_EVERY = 1000;

let t: LedgerDb;
beforeAll(async () => {
  t = await openLedgerDb({ poolSize: 2 * CHAINS });
});
afterAll(async () => {
  await t?.close();
});

// ---- the model ----------------------------------------------------------------------------------------------------

interface MAccount { balance: bigint; held: bigint; closed: boolean }
interface MHold { account: string; amount: bigint; status: Hold["status"]; charged: bigint }
interface SentReserve { account: number; amount: bigint; key: number; reason: number; reference: number }

class Model {
  accounts: MAccount[] = [];
  holds = new Map<string, MHold>();
  reserveKeys = new Map<string, { request: SentReserve; result: ReserveResult }>();
  grantKeys = new Map<string, bigint>();
  /** Holds the caller knows about (commit/release targets). */
  visible: string[] = [];
  /** Every hold, orphans included (expiry targets). */
  all: string[] = [];
  sent: SentReserve[] = [];
  available(i: number): bigint {
    const a = this.accounts[i]!;
    return a.balance - a.held;
  }
}

interface Real {
  store: LedgerStore;
  ids: string[];
}

type Outcome<T> = { ok: true; value: T } | { ok: false; kind: string; message: string };

async function outcome<T>(p: Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    if (err instanceof BillingError) return { ok: false, kind: err.kind, message: err.message };
    throw err;
  }
}

const REASONS = ["chat", "image"];
const request = (real: Real, s: SentReserve) =>
  reserveInput(real.ids[s.account]!, s.amount, `k${s.key}`, { reason: REASONS[s.reason]!, reference: `r${s.reference}` });

/** What the model says a reserve must answer, applied to the model. */
function modelReserve(m: Model, s: SentReserve): { expect: "replay"; result: ReserveResult } | { expect: "new" } | { expect: "error"; kind: string; message?: string } {
  const k = `${s.account}|${s.key}`;
  const prior = m.reserveKeys.get(k);
  if (prior) {
    const same = prior.request.amount === s.amount && prior.request.reason === s.reason && prior.request.reference === s.reference;
    return same ? { expect: "replay", result: prior.result } : { expect: "error", kind: "failed_precondition" };
  }
  const a = m.accounts[s.account]!;
  if (a.closed) return { expect: "error", kind: "failed_precondition" };
  const available = m.available(s.account);
  if (available < s.amount) {
    return { expect: "error", kind: "resource_exhausted", message: notEnoughCreditsMessage("the request", s.amount, available) };
  }
  return { expect: "new" };
}

function applyNewHold(m: Model, s: SentReserve, r: ReserveResult, visible: boolean): void {
  m.accounts[s.account]!.held += s.amount;
  m.holds.set(r.holdId, { account: String(s.account), amount: s.amount, status: "open", charged: 0n });
  m.reserveKeys.set(`${s.account}|${s.key}`, { request: s, result: r });
  m.all.push(r.holdId);
  if (visible) m.visible.push(r.holdId);
}

function checkReserve(m: Model, s: SentReserve, got: Outcome<{ result: ReserveResult; replayed: boolean }>, visible = true, checkReplayFlag = true): void {
  const want = modelReserve(m, s);
  if (want.expect === "error") {
    expect(got).toMatchObject({ ok: false, kind: want.kind, ...(want.message ? { message: want.message } : {}) });
    return;
  }
  if (!got.ok) throw new Error(`reserve ${JSON.stringify(s, (_k, v) => (typeof v === "bigint" ? String(v) : v))} failed: ${got.kind}: ${got.message}`);
  if (want.expect === "replay") {
    expect(got.value.result).toEqual(want.result);
    if (checkReplayFlag) expect(got.value.replayed).toBe(true);
    return;
  }
  if (checkReplayFlag) expect(got.value.replayed).toBe(false);
  expect(got.value.result.amount).toBe(s.amount);
  expect(got.value.result.available).toBe(m.available(s.account) - s.amount);
  applyNewHold(m, s, got.value.result, visible);
}

// ---- commands -------------------------------------------------------------------------------------------------------

class ReserveCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly s: SentReserve) {}
  check = () => true;
  async run(m: Model, r: Real) {
    m.sent.push(this.s);
    checkReserve(m, this.s, await outcome(r.store.reserve(request(r, this.s))));
  }
  toString = () => `reserve(a${this.s.account}, ${this.s.amount}, k${this.s.key}, ${REASONS[this.s.reason]}, r${this.s.reference})`;
}

/** The caller retries a request it sent before, verbatim (its response was lost). */
class RetryCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.sent.length > 0;
  async run(m: Model, r: Real) {
    const s = m.sent[this.pick % m.sent.length]!;
    checkReserve(m, s, await outcome(r.store.reserve(request(r, s))));
  }
  toString = () => `retry(#${this.pick})`;
}

/** Billing's connection dies mid-reserve (statement applied or not: unknown); the caller retries the same key. */
class CrashCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly s: SentReserve, readonly delayMs: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    m.sent.push(this.s);
    const client = new pg.Client({ connectionString: t.db.url });
    client.on("error", () => undefined);
    await client.connect();
    const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
    const doomed = outcome(new LedgerStore(client).reserve(request(r, this.s))).catch(() => undefined);
    await new Promise((res) => setTimeout(res, this.delayMs));
    await t.pool.query("SELECT pg_terminate_backend($1)", [pid]);
    await doomed;
    await client.end().catch(() => undefined);
    // The retry's answer is authoritative, whether the crashed attempt applied or not.
    checkReserve(m, this.s, await outcome(r.store.reserve(request(r, this.s))), true, false);
  }
  toString = () => `crash-reserve(a${this.s.account}, ${this.s.amount}, k${this.s.key}, after ${this.delayMs}ms)`;
}

/** The caller reserves and dies before commit: only the deadline (expire) can resolve its hold. */
class OrphanCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly s: SentReserve) {}
  check = () => true;
  async run(m: Model, r: Real) {
    checkReserve(m, this.s, await outcome(r.store.reserve(request(r, this.s))), false);
  }
  toString = () => `orphan-reserve(a${this.s.account}, ${this.s.amount}, k${this.s.key})`;
}

class CommitCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number, readonly mode: 0 | 1 | 2 | 3) {}
  check = (m: Readonly<Model>) => m.visible.length > 0;
  async run(m: Model, r: Real) {
    const id = m.visible[this.pick % m.visible.length]!;
    const h = m.holds.get(id)!;
    const amount = [0n, h.amount / 2n, h.amount, h.amount + 1n][this.mode]!;
    const got = await outcome(r.store.commit({ holdId: id, amount }));
    if (h.status === "open") {
      if (amount > h.amount) {
        expect(got).toMatchObject({ ok: false, kind: "failed_precondition" });
        return;
      }
      expect(got).toMatchObject({ ok: true, value: { replayed: false, result: { hold: { status: "committed", charged: amount, released: h.amount - amount } } } });
      const a = m.accounts[Number(h.account)]!;
      a.held -= h.amount;
      a.balance -= amount;
      h.status = "committed";
      h.charged = amount;
    } else if (h.status === "committed" && h.charged === amount) {
      expect(got).toMatchObject({ ok: true, value: { replayed: true, result: { hold: { status: "committed", charged: amount } } } });
    } else {
      expect(got).toMatchObject({ ok: false, kind: "failed_precondition" });
    }
  }
  toString = () => `commit(#${this.pick}, mode ${this.mode})`;
}

class ReleaseCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.visible.length > 0;
  async run(m: Model, r: Real) {
    const id = m.visible[this.pick % m.visible.length]!;
    const h = m.holds.get(id)!;
    const got = await outcome(r.store.release(id));
    if (h.status === "open") {
      expect(got).toMatchObject({ ok: true, value: { replayed: false, result: { status: "released", released: h.amount } } });
      m.accounts[Number(h.account)]!.held -= h.amount;
      h.status = "released";
    } else if (h.status === "committed") {
      expect(got).toMatchObject({ ok: false, kind: "failed_precondition" });
    } else {
      expect(got).toMatchObject({ ok: true, value: { replayed: true, result: { status: h.status } } });
    }
  }
  toString = () => `release(#${this.pick})`;
}

/** Time passes beyond a hold's deadline (its deadline is moved into the past) and the sweeper runs. */
class ExpireCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly pick: number) {}
  check = (m: Readonly<Model>) => m.all.length > 0;
  async run(m: Model, r: Real) {
    const id = m.all[this.pick % m.all.length]!;
    const h = m.holds.get(id)!;
    const moved = await t.pool.query<{ expires_us: string }>(
      `UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = $1 AND status = 'open'
       RETURNING ${micros("expires_at")}::text AS expires_us`,
      [id],
    );
    // A reserve's replay is read from its hold, so it shows the moved deadline. Only this test moves a deadline
    // (to simulate time passing); no ledger statement ever updates expires_at.
    for (const rec of m.reserveKeys.values()) {
      if (rec.result.holdId === id && moved.rows[0]) rec.result = { ...rec.result, expiresAt: BigInt(moved.rows[0].expires_us) };
    }
    // the sweeper's expiry statement (its metrics and closed-account pass are covered by ledger/sweeper tests)
    const swept = await t.store.releaseExpiredHolds(100);
    // (sequences run in parallel chains: another chain's sweeper may have expired this hold first)
    expect(swept.every((x) => x.status === "expired")).toBe(true);
    if (h.status === "open") {
      m.accounts[Number(h.account)]!.held -= h.amount;
      h.status = "expired";
    }
    void r;
  }
  toString = () => `expire(#${this.pick})`;
}

class GrantCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly account: number, readonly amount: bigint, readonly key: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const got = await outcome(r.store.grant({ accountId: r.ids[this.account]!, amount: this.amount, reason: "model grant", idempotencyKey: `g${this.key}` }));
    const k = `${this.account}|${this.key}`;
    const prior = m.grantKeys.get(k);
    const a = m.accounts[this.account]!;
    if (prior !== undefined) {
      expect(got).toMatchObject(prior === this.amount ? { ok: true, value: { replayed: true } } : { ok: false, kind: "failed_precondition" });
    } else if (a.closed) {
      expect(got).toMatchObject({ ok: false, kind: "failed_precondition" });
    } else {
      expect(got).toMatchObject({ ok: true, value: { replayed: false, result: { amount: this.amount, balance: a.balance + this.amount } } });
      a.balance += this.amount;
      m.grantKeys.set(k, this.amount);
    }
  }
  toString = () => `grant(a${this.account}, ${this.amount}, g${this.key})`;
}

class CloseCmd implements fc.AsyncCommand<Model, Real> {
  constructor(readonly account: number) {}
  check = () => true;
  async run(m: Model, r: Real) {
    const released = await t.ledger.closeAccount(r.ids[this.account]!);
    const a = m.accounts[this.account]!;
    const open = [...m.holds.entries()].filter(([, h]) => h.account === String(this.account) && h.status === "open");
    expect(released.map((h) => h.id).sort()).toEqual(open.map(([id]) => id).sort());
    for (const [, h] of open) {
      h.status = "released";
      a.held -= h.amount;
    }
    a.closed = true;
  }
  toString = () => `close(a${this.account})`;
}

// ---- arbitraries ------------------------------------------------------------------------------------------------------

const sentReserve = fc.record({
  account: fc.integer({ min: 0, max: 1 }),
  amount: fc.bigInt({ min: 1n, max: 60n }),
  key: fc.integer({ min: 0, max: 4 }),
  reason: fc.integer({ min: 0, max: 1 }),
  reference: fc.integer({ min: 0, max: 1 }),
});

const commands = [
  sentReserve.map((s) => new ReserveCmd(s)),
  fc.nat().map((p) => new RetryCmd(p)),
  fc.tuple(fc.nat(), fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<0 | 1 | 2 | 3>).map(([p, mode]) => new CommitCmd(p, mode)),
  fc.tuple(fc.nat(), fc.constantFrom(1, 2) as fc.Arbitrary<0 | 1 | 2 | 3>).map(([p, mode]) => new CommitCmd(p, mode)),
  fc.nat().map((p) => new ReleaseCmd(p)),
  fc.nat().map((p) => new ExpireCmd(p)),
  fc.tuple(fc.integer({ min: 0, max: 1 }), fc.bigInt({ min: 1n, max: 100n }), fc.integer({ min: 0, max: 2 })).map(([a, amt, k]) => new GrantCmd(a, amt, k)),
  sentReserve.map((s) => new OrphanCmd(s)),
];
// Rare: each costs a fresh connection, or ends an account's useful life.
const rareCommands = [
  fc.tuple(sentReserve, fc.integer({ min: 0, max: 3 })).map(([s, d]) => new CrashCmd(s, d)),
  fc.integer({ min: 0, max: 1 }).map((a) => new CloseCmd(a)),
];

let runCounter = 0;

it(`the ledger agrees with its model over ${RUNS} random command sequences`, async () => {
  const started = Date.now();
  let commandsRun = 0;
  const property = fc.asyncProperty(
    fc.array(fc.bigInt({ min: 0n, max: 150n }), { minLength: 2, maxLength: 2 }),
    fc.commands([...commands, ...commands, ...rareCommands], { maxCommands: 14, size: "max" }),
    async (initial, cmds) => {
      const run = ++runCounter;
      const ids = [0, 1].map((i) => `m${process.pid}-${run}-a${i}`);
      const model = new Model();
      for (const [i, id] of ids.entries()) {
        await t.store.openAccount(id);
        if (initial[i]! > 0n) await t.store.grant({ accountId: id, amount: initial[i]!, reason: "initial", idempotencyKey: "initial" });
        model.accounts.push({ balance: initial[i]!, held: 0n, closed: false });
      }
      const real: Real = { store: t.store, ids };
      for (const cmd of cmds) {
        if (!cmd.check(model)) continue;
        await cmd.run(model, real);
        commandsRun++;
        // every account and hold of this run agrees with the model after every command (one round trip)
        const state = await t.pool.query<{ accounts: Array<{ balance: string; held: string; status: string }>; holds: Array<{ id: string; status: string; charged: string }> | null }>(
          named("model_state", `SELECT
             (SELECT json_agg(json_build_object('balance', balance::text, 'held', held::text, 'status', status) ORDER BY id)
                FROM accounts WHERE id = ANY($1)) AS accounts,
             (SELECT json_agg(json_build_object('id', id, 'status', status, 'charged', charged::text))
                FROM holds WHERE account_id = ANY($1)) AS holds`),
          [ids],
        );
        const { accounts, holds } = state.rows[0]!;
        expect(accounts.map((a) => [a.balance, a.held, a.status])).toEqual(
          model.accounts.map((a) => [String(a.balance), String(a.held), a.closed ? "closed" : "open"]),
        );
        expect((holds ?? []).length).toBe(model.holds.size);
        for (const h of holds ?? []) {
          const mh = model.holds.get(h.id)!;
          expect([h.status, h.charged]).toEqual([mh.status, String(mh.charged)]);
        }
      }
      if (run % TRIAL_BALANCE_EVERY === 0) await t.assertInvariants();
    },
  );
  // Each chain gets its share of the runs and its own seed; a failure reports the chain's seed and replay path.
  await Promise.all(
    Array.from({ length: CHAINS }, (_, i) =>
      fc.assert(property, { numRuns: Math.floor(RUNS / CHAINS) + (i < RUNS % CHAINS ? 1 : 0) }),
    ),
  );
  await t.assertInvariants();
  const seconds = (Date.now() - started) / 1000;
  console.log(`ledger model: ${RUNS} sequences, ${commandsRun} commands in ${seconds.toFixed(1)} s, 0 divergences`);
}, 900_000);
