// RELIABILITY.md, ledger: kill the caller between reserve and commit — the sweeper releases the hold after its
// deadline and nothing is lost.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startLoop } from "../src/ledger.js";
import { fundedAccount, openLedgerDb, workerArgs, type LedgerDb } from "./helpers.js";

let t: LedgerDb;
beforeAll(async () => {
  t = await openLedgerDb();
});
afterAll(async () => {
  await t?.close();
});

it("a caller killed (SIGKILL) between reserve and commit: the sweeper releases its hold after the deadline", async () => {
  const account = await fundedAccount(t.store, 100n);
  const child = spawn(process.execPath, workerArgs("reserve-and-hang.ts"), {
    env: { ...process.env, DATABASE_URL: t.db.url, ACCOUNT: account, TTL_MS: "1500" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [holdId] = (await once(createInterface({ input: child.stdout }), "line")) as [string];
  expect(await t.store.getAccount(account)).toMatchObject({ held: 40n, available: 60n });
  child.kill("SIGKILL");
  await once(child, "exit");

  const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const sweeper = startLoop("sweeper", 100, () => t.ledger.sweepExpiredHolds(100), log);
  try {
    // still open before its deadline
    expect((await t.store.getHold(holdId))!.status).toBe("open");
    const deadline = Date.now() + 10_000;
    while ((await t.store.getHold(holdId))!.status === "open" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  } finally {
    await sweeper.stop();
  }
  const hold = (await t.store.getHold(holdId))!;
  expect(hold).toMatchObject({ status: "expired", charged: 0n, released: 40n });
  // released no earlier than its deadline
  expect(hold.resolvedAt! >= hold.expiresAt).toBe(true);
  expect(await t.store.getAccount(account)).toMatchObject({ balance: 100n, held: 0n, available: 100n });
  expect(await t.registry.getSingleMetricAsString("luna_billing_credits_released_total")).toMatch(/how="expire"} 40/);
  expect(await t.registry.getSingleMetricAsString("luna_billing_open_holds")).toMatch(/luna_billing_open_holds 0/);
  await t.assertInvariants();
}, 60_000);
