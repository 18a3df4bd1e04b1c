// RELIABILITY.md, ledger: 1,000 concurrent 1-credit reserves on an account holding 500, through 4 separate billing
// processes (each its own Postgres pool) against one database: exactly 500 succeed, 500 get RESOURCE_EXHAUSTED,
// nothing goes negative, and the trial balance holds. The same over 25 accounts, where each process coalesces
// reserves of different accounts into shared statements that race the other processes' statements.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, expect, it } from "vitest";
import { fundedAccount, openLedgerDb, workerArgs, type LedgerDb } from "./helpers.js";

const PROCESSES = 4;
const PER_PROCESS = 250;

let t: LedgerDb;
beforeAll(async () => {
  t = await openLedgerDb();
});
afterAll(async () => {
  await t?.close();
});

async function burst(accounts: string[]) {
  const workers = Array.from({ length: PROCESSES }, (_, i) =>
    startWorker({ DATABASE_URL: t.db.url, ACCOUNT: accounts.join(","), COUNT: String(PER_PROCESS), WORKER: String(i), POOL_SIZE: "10" }),
  );
  await Promise.all(workers.map((w) => w.ready));
  for (const w of workers) w.child.stdin.write("go\n");
  return (await Promise.all(workers.map((w) => w.result))).map((l) => JSON.parse(l) as { ok: number; exhausted: number; other: string[]; holds: string[]; largestStatement: number });
}

function startWorker(env: Record<string, string>): { child: ChildProcessWithoutNullStreams; ready: Promise<void>; result: Promise<string> } {
  const child = spawn(process.execPath, workerArgs("reserve-burst.ts"), { env: { ...process.env, ...env }, stdio: "pipe" });
  const lines = createInterface({ input: child.stdout });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  let onReady: () => void;
  const ready = new Promise<void>((res) => (onReady = res));
  const result = new Promise<string>((resolve, reject) => {
    lines.on("line", (line) => (line === "ready" ? onReady() : resolve(line)));
    child.on("exit", (code) => reject(new Error(`worker exited with ${code} before reporting:\n${stderr}`)));
  });
  return { child, ready: Promise.race([ready, result.then(() => undefined)]), result };
}

it(`${PROCESSES * PER_PROCESS} concurrent 1-credit reserves on a 500-credit account through ${PROCESSES} processes`, async () => {
  const account = await fundedAccount(t.store, 500n);
  const tallies = await burst([account]);

  const ok = tallies.reduce((n, x) => n + x.ok, 0);
  const exhausted = tallies.reduce((n, x) => n + x.exhausted, 0);
  console.log(`reserve race: ${ok} succeeded, ${exhausted} RESOURCE_EXHAUSTED (per process: ${tallies.map((x) => `${x.ok}/${x.exhausted}`).join(", ")})`);
  expect(tallies.flatMap((x) => x.other)).toEqual([]);
  expect(ok).toBe(500);
  expect(exhausted).toBe(500);
  expect(new Set(tallies.flatMap((x) => x.holds)).size).toBe(500);
  expect(await t.store.getAccount(account)).toMatchObject({ balance: 500n, held: 500n, available: 0n });
  await t.assertInvariants();
}, 120_000);

it(`${PROCESSES * PER_PROCESS} concurrent 1-credit reserves over 25 accounts of 20 credits through ${PROCESSES} processes`, async () => {
  const accounts = await Promise.all(Array.from({ length: 25 }, () => fundedAccount(t.store, 20n)));
  const tallies = await burst(accounts);

  expect(tallies.flatMap((x) => x.other)).toEqual([]);
  expect(tallies.reduce((n, x) => n + x.ok, 0)).toBe(500);
  expect(tallies.reduce((n, x) => n + x.exhausted, 0)).toBe(500);
  expect(new Set(tallies.flatMap((x) => x.holds)).size).toBe(500);
  for (const a of accounts) expect(await t.store.getAccount(a)).toMatchObject({ balance: 20n, held: 20n, available: 0n, openHolds: 20 });
  // The reserves did share statements (else this would only repeat the single-row race above).
  expect(Math.max(...tallies.map((x) => x.largestStatement))).toBeGreaterThan(1);
  await t.assertInvariants();
}, 120_000);
