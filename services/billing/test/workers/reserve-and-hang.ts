// A caller that reserves credits and then hangs forever (the test kills it before it can commit or release).
import pg from "pg";
import { LedgerStore } from "../../src/data/ledger-store.js";

const { DATABASE_URL, ACCOUNT, TTL_MS } = process.env;
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
const r = await new LedgerStore(pool).reserve({
  accountId: ACCOUNT!,
  amount: 40n,
  reason: "image",
  reference: "job-of-a-crashing-worker",
  idempotencyKey: "crash-1",
  ttlMs: Number(TTL_MS),
});
process.stdout.write(`${r.result.holdId}\n`);
setInterval(() => undefined, 60_000); // "working" until killed
