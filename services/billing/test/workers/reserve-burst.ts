// A separate billing process for the concurrency test: its own Postgres pool, the real ledger code. Connects, says
// "ready", waits for "go" on stdin (so every process fires at once), sends COUNT 1-credit reserves concurrently and
// prints the tally as JSON. Concurrent reserves on different accounts share statements (the store coalesces them).
import pg from "pg";
import { loadConfig } from "@luna/kit";
import { billingConfigSchema } from "../../src/config.js";
import { replicaLedgerStore } from "../../src/data/ledger-store.js";
import { BillingError } from "../../src/domain/errors.js";

const { DATABASE_URL, ACCOUNT, COUNT, WORKER, POOL_SIZE } = process.env;
/** ACCOUNT may list several accounts (comma-separated): reserve i goes to account i mod n. */
const accounts = ACCOUNT!.split(",");
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: Number(POOL_SIZE ?? 10) });
// Built as a replica builds it (BILLING_LEDGER_BATCH_* from the environment, else the defaults).
let largestStatement = 0;
const store = replicaLedgerStore(pool, loadConfig(billingConfigSchema, process.env), (_statement, size) => {
  largestStatement = Math.max(largestStatement, size);
});
// Open every connection before the start signal so the burst measures the ledger, not connection setup.
await Promise.all(Array.from({ length: Number(POOL_SIZE ?? 10) }, () => pool.query("SELECT 1")));
process.stdout.write("ready\n");
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));

const tally = { ok: 0, exhausted: 0, other: [] as string[], holds: [] as string[] };
await Promise.all(
  Array.from({ length: Number(COUNT) }, async (_, i) => {
    try {
      const r = await store.reserve({
        accountId: accounts[i % accounts.length]!,
        amount: 1n,
        reason: "chat",
        reference: `w${WORKER}-${i}`,
        idempotencyKey: `w${WORKER}-${i}`,
        ttlMs: 600_000,
      });
      tally.ok++;
      tally.holds.push(r.result.holdId);
    } catch (err) {
      if (err instanceof BillingError && err.kind === "resource_exhausted") tally.exhausted++;
      else tally.other.push(String(err));
    }
  }),
);
await pool.end();
process.stdout.write(`${JSON.stringify({ ...tally, largestStatement })}\n`);
