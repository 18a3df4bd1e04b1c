// The ledger as replicas run it under load: concurrent reserves (and, apart, commits) coalesced into multi-row
// statements (src/data/batcher.ts). Each call must get exactly the answer it would get alone: its own hold or its own
// error, replays and idempotency conflicts included, with the accounts exact and the trial balance holding after.
import { afterAll, beforeAll, expect, it } from "vitest";
import { replicaLedgerStore, type LedgerStore } from "../src/data/ledger-store.js";
import { InsufficientCreditsError, type BillingError } from "../src/domain/errors.js";
import { fundedAccount, openLedgerDb, reserveInput, type LedgerDb } from "./helpers.js";

let t: LedgerDb;
/** A store that coalesces (one statement of each kind in flight, as the defaults) and records statement sizes. */
let store: LedgerStore;
const sizes: Array<{ statement: string; size: number }> = [];
const largest = (statement: string) => Math.max(0, ...sizes.filter((s) => s.statement === statement).map((s) => s.size));

beforeAll(async () => {
  t = await openLedgerDb({ poolSize: 8 });
  store = replicaLedgerStore(t.pool, { BILLING_LEDGER_BATCH_SIZE: 64, BILLING_LEDGER_BATCH_IN_FLIGHT: 1 }, (statement, size) =>
    sizes.push({ statement, size }),
  );
});
afterAll(async () => {
  await t?.close();
});

const settle = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (err: unknown) => ({ ok: false as const, err }),
  );

it("coalesced reserves and commits over many accounts leave every account exact", async () => {
  sizes.length = 0;
  const accounts = await Promise.all(Array.from({ length: 40 }, () => fundedAccount(t.store, 100n)));
  // Five 7-credit reserves per account, all at once.
  const reserves = await Promise.all(
    accounts.flatMap((a, i) => Array.from({ length: 5 }, (_, j) => store.reserve(reserveInput(a, 7n, `r-${i}-${j}`)))),
  );
  expect(reserves.every((r) => !r.replayed)).toBe(true);
  expect(new Set(reserves.map((r) => r.result.holdId)).size).toBe(200);
  for (const a of accounts) expect(await store.getAccount(a)).toMatchObject({ balance: 100n, held: 35n, openHolds: 5 });

  // Commit them all at once: 5 credits each, or 0 for every fifth (no charge booked).
  const commits = await Promise.all(
    reserves.map((r, i) =>
      store.commit({ holdId: r.result.holdId, amount: i % 5 === 4 ? 0n : 5n, usage: { model: "m", feature: "chat", inputTokens: 3n, outputTokens: 4n, images: 0 } }),
    ),
  );
  expect(commits.every((c) => !c.replayed && c.result.hold.status === "committed")).toBe(true);
  expect(commits.filter((c) => c.result.transferId !== "")).toHaveLength(160);
  for (const a of accounts) expect(await store.getAccount(a)).toMatchObject({ balance: 80n, held: 0n, openHolds: 0 });

  // The charges read as the single-row path writes them.
  const history = await store.listHistory(accounts[0]!, 10);
  expect(history.filter((h) => h.kind === "charge").map((h) => h.description)).toEqual(
    Array(4).fill("chat · m · 3 in / 4 out tokens"),
  );
  expect(largest("reserve")).toBeGreaterThan(1);
  expect(largest("commit")).toBeGreaterThan(1);
  await t.assertInvariants();
});

it("a statement's calls meet their own outcomes: some succeed, some lack credits, some are replays or conflicts", async () => {
  sizes.length = 0;
  const rich = await Promise.all(Array.from({ length: 6 }, () => fundedAccount(t.store, 100n)));
  const poor = await Promise.all(Array.from({ length: 6 }, () => fundedAccount(t.store, 5n)));
  const earlier = await store.reserve(reserveInput(rich[0]!, 10n, "earlier"));

  const calls = [
    ...rich.slice(1).map((a) => store.reserve(reserveInput(a, 10n, "fresh"))),
    ...poor.map((a) => store.reserve(reserveInput(a, 10n, "fresh"))),
    // The same account twice with one key: never in one statement; the second is a replay of the first.
    store.reserve(reserveInput(rich[1]!, 10n, "twice")),
    store.reserve(reserveInput(rich[1]!, 10n, "twice")),
    // A retry of an earlier reserve, and the same key asking for something else.
    store.reserve(reserveInput(rich[0]!, 10n, "earlier")),
    store.reserve(reserveInput(rich[2]!, 10n, "fresh", { reference: "other" })),
  ].map(settle);
  const out = await Promise.all(calls);

  for (const o of out.slice(0, 5)) expect(o).toMatchObject({ ok: true, value: { replayed: false } });
  for (const o of out.slice(5, 11)) {
    expect(o.ok).toBe(false);
    const err = (o as { err: unknown }).err;
    expect(err).toBeInstanceOf(InsufficientCreditsError);
    expect((err as InsufficientCreditsError).available).toBe(5n);
  }
  const [first, second, retry, conflict] = out.slice(11);
  expect(first).toMatchObject({ ok: true, value: { replayed: false } });
  expect(second).toMatchObject({ ok: true, value: { replayed: true } });
  expect((second as { value: { result: { holdId: string } } }).value.result.holdId).toBe(
    (first as { value: { result: { holdId: string } } }).value.result.holdId,
  );
  expect(retry).toMatchObject({ ok: true, value: { replayed: true, result: { holdId: earlier.result.holdId } } });
  expect(conflict?.ok).toBe(false);
  expect((conflict as { err: unknown }).err).toMatchObject({ kind: "failed_precondition" });
  expect(largest("reserve")).toBeGreaterThan(1);

  expect(await store.getAccount(rich[1]!)).toMatchObject({ held: 20n, openHolds: 2 });
  for (const a of poor) expect(await store.getAccount(a)).toMatchObject({ held: 0n, openHolds: 0 });
  await t.assertInvariants();
});

it("coalesced commits: duplicates resolve once, a mismatched amount and an expired hold are refused alone", async () => {
  sizes.length = 0;
  const a = await fundedAccount(t.store, 1000n);
  const b = await fundedAccount(t.store, 1000n);
  const holds = await Promise.all([
    ...Array.from({ length: 6 }, (_, i) => store.reserve(reserveInput(i % 2 ? a : b, 50n, `h${i}`))),
  ]);
  const expired = await store.reserve(reserveInput(a, 50n, "short", { ttlMs: 1 }));
  await new Promise((res) => setTimeout(res, 20));
  const [h0, h1, h2, h3, h4, h5] = holds.map((h) => h.result.holdId) as [string, string, string, string, string, string];

  const out = await Promise.all(
    [
      store.commit({ holdId: h0, amount: 10n }),
      store.commit({ holdId: h0, amount: 10n }),
      store.commit({ holdId: h1, amount: 20n }),
      store.commit({ holdId: h1, amount: 30n }),
      store.commit({ holdId: h2, amount: 50n }),
      store.commit({ holdId: h3, amount: 51n }),
      store.commit({ holdId: h4, amount: 0n }),
      store.commit({ holdId: h5, amount: 40n }),
      store.commit({ holdId: expired.result.holdId, amount: 10n }),
    ].map(settle),
  );
  expect(out[0]).toMatchObject({ ok: true, value: { replayed: false, result: { hold: { charged: 10n } } } });
  expect(out[1]).toMatchObject({ ok: true, value: { replayed: true, result: { hold: { charged: 10n } } } });
  expect(out[2]).toMatchObject({ ok: true, value: { replayed: false, result: { hold: { charged: 20n } } } });
  expect(out[3]?.ok).toBe(false);
  expect((out[3] as { err: BillingError }).err.message).toMatch(/already committed with amount 20/);
  expect(out[4]).toMatchObject({ ok: true, value: { result: { hold: { charged: 50n, released: 0n } } } });
  expect((out[5] as { err: BillingError }).err.message).toMatch(/exceeds the hold's 50 credits/);
  expect(out[6]).toMatchObject({ ok: true, value: { result: { hold: { charged: 0n }, transferId: "" } } });
  expect(out[7]).toMatchObject({ ok: true, value: { result: { hold: { charged: 40n, released: 10n } } } });
  expect((out[8] as { err: BillingError }).err.message).toMatch(/past its deadline/);
  expect(largest("commit")).toBeGreaterThan(1);

  // a: h1 (20) + h3 (open, 50) + h5 (40) + the expired hold (still open until swept, 50); b: h0 (10) + h2 (50) + h4 (0).
  expect(await store.getAccount(a)).toMatchObject({ balance: 940n, held: 100n, openHolds: 2 });
  expect(await store.getAccount(b)).toMatchObject({ balance: 940n, held: 0n, openHolds: 0 });
  await t.assertInvariants();
});

it("two replicas coalescing the same retried reserves reserve each key once", async () => {
  const other = replicaLedgerStore(t.pool, { BILLING_LEDGER_BATCH_SIZE: 64, BILLING_LEDGER_BATCH_IN_FLIGHT: 1 });
  const accounts = await Promise.all(Array.from({ length: 20 }, () => fundedAccount(t.store, 100n)));
  const send = (s: LedgerStore) => Promise.all(accounts.map((a) => s.reserve(reserveInput(a, 30n, "same-key"))));
  const [x, y] = await Promise.all([send(store), send(other)]);
  accounts.forEach((_, i) => {
    expect(x[i]!.result.holdId).toBe(y[i]!.result.holdId);
    expect([x[i]!.replayed, y[i]!.replayed].sort()).toEqual([false, true]);
  });
  for (const a of accounts) expect(await store.getAccount(a)).toMatchObject({ held: 30n, openHolds: 1 });
  await t.assertInvariants();
});
