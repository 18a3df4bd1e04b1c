// Ledger benchmark: reserve+commit pairs per second (spread over 10k accounts, and on one hot account) with p50/p99
// latency of a pair, next to pgbench's built-in "simple-update" (-N) on the same Postgres as the physical reference.
//
//   tsx --conditions=luna-source services/billing/bench/ledger.bench.ts
//
// Starts its own Postgres (durable: fsync and synchronous_commit on, like production) in a temp dir, runs, prints a
// table and exits. Tunables (env): BENCH_SECONDS (10), BENCH_CLIENTS (32: concurrent callers, and pgbench -c),
// BENCH_ACCOUNTS (10000), BENCH_POOL (32: Postgres connections of the ledger), BENCH_DURABLE (true).
// Each pair goes through the ledger's real statements (LedgerStore over a pg Pool) — what every billing replica
// runs per Reserve and Commit RPC, without the RPC hop.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findPgBinDir, startPostgres } from "@luna/kit/localstack";
import { applyMigrations } from "@luna/kit/migrate";
import pg from "pg";
import { checkInvariants } from "../src/data/invariants.js";
import { LedgerStore } from "../src/data/ledger-store.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const ACCOUNTS = Number(process.env.BENCH_ACCOUNTS ?? 10_000);
const POOL = Number(process.env.BENCH_POOL ?? 32);
const DURABLE = (process.env.BENCH_DURABLE ?? "true") !== "false";
const MIGRATIONS = fileURLToPath(new URL("../prisma/migrations", import.meta.url));

interface Result {
  name: string;
  ops: number;
  seconds: number;
  p50: number;
  p99: number;
  errors: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** CLIENTS closed loops for SECONDS: reserve then commit, each pair timed. */
async function runPairs(name: string, store: LedgerStore, pickAccount: () => string): Promise<Result> {
  const latencies: number[] = [];
  let errors = 0;
  let seq = 0;
  const started = performance.now();
  const deadline = started + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const key = `b${++seq}`;
        try {
          const r = await store.reserve({ accountId: pickAccount(), amount: 10n, reason: "chat", reference: key, idempotencyKey: key, ttlMs: 600_000 });
          await store.commit({ holdId: r.result.holdId, amount: 7n, usage: { model: "bench", feature: "chat", inputTokens: 100n, outputTokens: 600n, images: 0 } });
          latencies.push(performance.now() - t0);
        } catch {
          errors++;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { name, ops: latencies.length, seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors };
}

function pgbenchInit(binDir: string, port: number, user: string, db: string): void {
  const init = spawnSync(join(binDir, "pgbench"), ["-h", "127.0.0.1", "-p", String(port), "-U", user, "-i", "-q", "-s", "10", db], { encoding: "utf8" });
  if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
}

function pgbench(binDir: string, port: number, user: string, db: string): { tps: number; output: string } {
  const common = ["-h", "127.0.0.1", "-p", String(port), "-U", user];
  const run = spawnSync(join(binDir, "pgbench"), [...common, "-N", "-c", String(CLIENTS), "-j", "2", "-T", String(SECONDS), db], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`pgbench failed: ${run.stderr}`);
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(run.stdout) ?? /tps = ([\d.]+)/.exec(run.stdout);
  if (!m) throw new Error(`cannot read pgbench's tps from:\n${run.stdout}`);
  return { tps: Number(m[1]), output: run.stdout };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "luna-ledger-bench-"));
  const server = await startPostgres({ dataDir: dir, durable: DURABLE });
  try {
    const admin = new pg.Client({ connectionString: server.url("postgres") });
    await admin.connect();
    await admin.query("CREATE DATABASE ledger_bench");
    await admin.query("CREATE DATABASE pgbench_ref");
    await admin.end();
    const url = server.url("ledger_bench");
    await applyMigrations({ databaseUrl: url, migrationsDir: MIGRATIONS });

    const pool = new pg.Pool({ connectionString: url, max: POOL });
    // Fund every account with one balanced grant (bulk SQL: same rows the grant statement writes).
    await pool.query(
      `WITH ids AS (SELECT 'bench-' || g AS id, gen_random_uuid() AS t FROM generate_series(1, $1) g),
            acct AS (INSERT INTO accounts (id, kind, balance) SELECT id, 'user', 1000000000 FROM ids)
       INSERT INTO ledger_entries (transfer_id, account_id, amount, kind, reason, reference, description)
       SELECT t, side.account_id, side.amount, 'grant', 'bench', 'bench', 'bench'
       FROM ids CROSS JOIN LATERAL (VALUES (ids.id, 1000000000::bigint), ('system:grants', -1000000000::bigint)) side(account_id, amount)`,
      [ACCOUNTS],
    );
    await pool.query("ANALYZE");
    await Promise.all(Array.from({ length: POOL }, () => pool.query("SELECT 1")));
    const store = new LedgerStore(pool);

    const binDir = findPgBinDir({});
    if (!binDir) throw new Error("pgbench not found (install postgresql)");
    pgbenchInit(binDir, server.port, server.user, "pgbench_ref");

    process.stderr.write(`ledger bench: ${SECONDS}s per scenario, ${CLIENTS} clients, pool ${POOL}, durable ${DURABLE}\n`);
    // pgbench runs before and after the ledger scenarios; the reference is their mean, so a machine whose load
    // changes during the benchmark (shared CI cores) skews both sides alike.
    const before = pgbench(binDir, server.port, server.user, "pgbench_ref");
    const spread = await runPairs(`reserve+commit, ${ACCOUNTS} accounts`, store, () => `bench-${1 + Math.floor(Math.random() * ACCOUNTS)}`);
    const hot = await runPairs("reserve+commit, 1 hot account", store, () => "bench-1");
    const report = await checkInvariants(pool);
    await pool.end();
    const after = pgbench(binDir, server.port, server.user, "pgbench_ref");
    const ref = { tps: (before.tps + after.tps) / 2 };

    const rows = [spread, hot].map((r) => ({
      scenario: r.name,
      "pairs/s": (r.ops / r.seconds).toFixed(0),
      "p50 ms": r.p50.toFixed(2),
      "p99 ms": r.p99.toFixed(2),
      errors: String(r.errors),
      "vs pgbench": `${((r.ops / r.seconds / ref.tps) * 100).toFixed(0)}%`,
    }));
    rows.push({
      scenario: `pgbench -N (simple-update), -c ${CLIENTS}`,
      "pairs/s": `${ref.tps.toFixed(0)} tps (${before.tps.toFixed(0)} before, ${after.tps.toFixed(0)} after)`,
      "p50 ms": "",
      "p99 ms": "",
      errors: "",
      "vs pgbench": "100%",
    });
    console.table(rows);
    console.log(`invariants after the run: ${report.ok ? "ok" : `VIOLATED: ${JSON.stringify(report.violations)}`}`);
    if (!report.ok) process.exitCode = 1;
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
