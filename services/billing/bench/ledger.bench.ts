// Ledger benchmark: reserve+commit pairs per second (spread over 10k accounts, and on one hot account) with p50/p99
// latency of a pair, next to pgbench's built-in "simple-update" (-N) on the same Postgres as the physical reference.
//
//   node --conditions=luna-source --import tsx services/billing/bench/ledger.bench.ts
//
// Starts its own Postgres in a temp dir (durable by default: fsync, synchronous_commit and full_page_writes on, as
// in production), and prints the server settings it measured under: pgbench and the ledger run against the same
// server, so the same settings. Fairness and stability:
// - the same concurrency on both sides: BENCH_CLIENTS concurrent callers over as many pooled connections for the
//   ledger, `pgbench -c BENCH_CLIENTS -j 2` for the reference (default 16: on 2 cores both are at their plateau —
//   8 leaves the ledger's two round trips per pair under-pipelined, 32 adds only queueing);
// - a fixed amount of work per measurement (BENCH_PAIRS pairs, BENCH_PGBENCH_TX transactions), after a warm-up of
//   both (connections open, statements prepared, caches hot); the pool never closes idle connections in between;
// - BENCH_ROUNDS rounds, each running pgbench and the spread scenario back to back (order alternating), and the
//   verdict is the median of the per-round ratios, so other load on the machine skews both sides of a ratio alike;
// - the load generator's own CPU is printed: the Node process shares the cores with Postgres (pgbench's client is
//   C and much cheaper), so the ratio slightly understates the ledger's database cost;
// - so is the WAL each side writes per operation (pg_waldump --stats over the LSN range of each measurement, read
//   after it): records and bytes, full-page images apart. It shows what each pair writes, not how fast.
// Each pair goes through the ledger's real statements (LedgerStore over a pg Pool, coalescing concurrent calls as
// configured by BILLING_LEDGER_BATCH_SIZE / _IN_FLIGHT) — what every billing replica runs per Reserve and Commit RPC,
// without the RPC hop. The mean number of calls per statement is printed with each scenario.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findPgBinDir, startPostgres } from "@luna/kit/localstack";
import { applyMigrations } from "@luna/kit/migrate";
import { median, percentile } from "@luna/kit/bench";
import pg from "pg";
import { loadConfig } from "@luna/kit";
import { billingConfigSchema } from "../src/config.js";
import { checkInvariants } from "../src/data/invariants.js";
import { replicaLedgerStore, type LedgerStore } from "../src/data/ledger-store.js";

function intEnv(name: string, def: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

/** Concurrent callers of the ledger = pooled connections = pgbench clients. */
const CLIENTS = intEnv("BENCH_CLIENTS", 16);
const ACCOUNTS = intEnv("BENCH_ACCOUNTS", 10_000);
const ROUNDS = intEnv("BENCH_ROUNDS", 5);
/** Resolved holds in the ledger before the run (a ledger in service has history; see below). */
const HISTORY_HOLDS = intEnv("BENCH_HISTORY_HOLDS", 200_000);
/** Reserve+commit pairs per spread measurement (and per warm-up). */
const PAIRS = intEnv("BENCH_PAIRS", 5_000);
/** Pairs of the hot-account measurement (run once, after the rounds). */
const HOT_PAIRS = intEnv("BENCH_HOT_PAIRS", 2_000);
/** pgbench transactions per measurement (split evenly over the clients). */
const PGBENCH_TX = intEnv("BENCH_PGBENCH_TX", 10_000);
const DURABLE = (process.env.BENCH_DURABLE ?? "true") !== "false";
const MIGRATIONS = fileURLToPath(new URL("../prisma/migrations", import.meta.url));
/** Settings reported with the result (read from the server, so they are what both sides actually ran with). */
const REPORTED_SETTINGS = ["server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "shared_buffers", "max_connections"];

interface PairsResult {
  pairs: number;
  seconds: number;
  p50: number;
  p99: number;
  errors: number;
  /** CPU time of this (Node) process per pair, ms: the load generator's share of the machine. */
  clientCpuMs: number;
  /** Mean reserves or commits per ledger statement (1 = no coalescing). */
  callsPerStatement: number;
}

interface PgbenchResult {
  tps: number;
  /** CPU time of the pgbench process per transaction, ms. */
  clientCpuMs: number;
}

/** WAL written between two LSNs (the whole server's: each measurement runs alone), from pg_waldump --stats. */
interface WalUse {
  records: number;
  bytes: number;
  fpiBytes: number;
}

const currentLsn = async (pool: pg.Pool): Promise<string> =>
  (await pool.query<{ lsn: string }>("SELECT pg_current_wal_insert_lsn()::text AS lsn")).rows[0]!.lsn;

/** null when pg_waldump cannot read the range (e.g. its segments were recycled by a checkpoint meanwhile). */
function walBetween(binDir: string, walDir: string, start: string, end: string): WalUse | null {
  const run = spawnSync(join(binDir, "pg_waldump"), ["--path", walDir, "--start", start, "--end", end, "--stats"], { encoding: "utf8" });
  // "Total   <records>   <record bytes> [x%]   <FPI bytes> [y%]   <combined bytes> [100%]"
  const m = /^Total\s+(\d+)\s+(\d+)\s+\[[\d.]+%\]\s+(\d+)\s+\[[\d.]+%\]\s+(\d+)/m.exec(run.stdout ?? "");
  if (run.status !== 0 || !m) return null;
  return { records: Number(m[1]), fpiBytes: Number(m[3]), bytes: Number(m[4]) };
}

let keySeq = 0;
/** Calls per ledger statement, in order (the store's onBatch hook). */
const batchSizes: number[] = [];

/** `total` reserve+commit pairs by CLIENTS closed loops, each pair timed. */
async function runPairs(store: LedgerStore, total: number, pickAccount: () => string): Promise<PairsResult> {
  const latencies: number[] = [];
  let errors = 0;
  let left = total;
  const cpu0 = process.cpuUsage();
  const batches0 = batchSizes.length;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (left > 0) {
        left--;
        const t0 = performance.now();
        const key = `b${process.pid}-${++keySeq}`;
        try {
          const r = await store.reserve({ accountId: pickAccount(), amount: 10n, reason: "chat", reference: key, idempotencyKey: key, ttlMs: 600_000 });
          await store.commit({ holdId: r.result.holdId, amount: 7n, usage: { model: "bench", feature: "chat", inputTokens: 100n, outputTokens: 600n, images: 0 } });
          latencies.push(performance.now() - t0);
        } catch (err) {
          if (errors++ === 0) process.stderr.write(`first error: ${String(err)}\n`);
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const batches = batchSizes.slice(batches0);
  return {
    pairs: latencies.length,
    seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
    clientCpuMs: (cpu.user + cpu.system) / 1000 / Math.max(1, latencies.length),
    // No batches recorded = coalescing off: every call was its own statement.
    callsPerStatement: batches.length === 0 ? 1 : batches.reduce((a, b) => a + b, 0) / batches.length,
  };
}

function pgbenchInit(binDir: string, port: number, user: string, db: string): void {
  const init = spawnSync(join(binDir, "pgbench"), ["-h", "127.0.0.1", "-p", String(port), "-U", user, "-i", "-q", "-s", "10", db], { encoding: "utf8" });
  if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
}

/** pgbench -N with CLIENTS clients and a fixed number of transactions; bash's `times` reports its CPU time. */
function pgbench(binDir: string, port: number, user: string, db: string, transactions: number): PgbenchResult & { transactions: number } {
  const perClient = Math.max(1, Math.round(transactions / CLIENTS));
  const args = ["-h", "127.0.0.1", "-p", String(port), "-U", user, "-N", "-c", String(CLIENTS), "-j", "2", "-t", String(perClient), db];
  const run = spawnSync("bash", ["-c", `"$0" "$@" && times`, join(binDir, "pgbench"), ...args], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`pgbench failed: ${run.stderr}`);
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(run.stdout) ?? /tps = ([\d.]+)/.exec(run.stdout);
  if (!m) throw new Error(`cannot read pgbench's tps from:\n${run.stdout}`);
  // `times` prints the shell's then its children's user and system time: "0m0.123s 0m0.045s".
  const t = [...run.stdout.matchAll(/(\d+)m([\d.]+)s/g)].map((x) => Number(x[1]) * 60 + Number(x[2]));
  const childCpuS = t.length >= 4 ? t[2]! + t[3]! : NaN;
  return { tps: Number(m[1]), clientCpuMs: (childCpuS * 1000) / (perClient * CLIENTS), transactions: perClient * CLIENTS };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "luna-ledger-bench-"));
  const server = await startPostgres({ dataDir: dir, durable: DURABLE });
  try {
    const admin = new pg.Client({ connectionString: server.url("postgres") });
    await admin.connect();
    await admin.query("CREATE DATABASE ledger_bench");
    await admin.query("CREATE DATABASE pgbench_ref");
    const settings = await admin.query<{ name: string; setting: string; unit: string | null }>(
      `SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1) ORDER BY name`,
      [REPORTED_SETTINGS],
    );
    await admin.end();
    const url = server.url("ledger_bench");
    await applyMigrations({ databaseUrl: url, migrationsDir: MIGRATIONS });

    // idleTimeoutMillis 0: connections (and their prepared statements) stay open while pgbench runs.
    const pool = new pg.Pool({ connectionString: url, max: CLIENTS, idleTimeoutMillis: 0 });
    // pool.end() can resolve before every socket is closed; the server shutdown then kills those idle connections,
    // which must not crash the process (during the run, an idle connection error is worth a line).
    let stopping = false;
    pool.on("error", (err) => {
      if (!stopping) process.stderr.write(`idle connection error: ${err.message}\n`);
    });
    // Fund every account with one grant (bulk SQL: the same transfer row the grant statement writes).
    await pool.query(
      `WITH ids AS (SELECT 'bench-' || g AS id FROM generate_series(1, $1) g),
            acct AS (INSERT INTO accounts (id, kind, balance) SELECT id, 'user', 1000000000 FROM ids)
       INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, kind, reason, reference, description)
       SELECT gen_random_uuid(), 'system:grants', ids.id, 1000000000, 'grant', 'bench', 'bench', 'bench' FROM ids`,
      [ACCOUNTS],
    );
    // A ledger in service has history: resolved holds from earlier traffic (released, so they need no transfer rows).
    // Without it the tables start empty and grow faster than autovacuum re-analyzes them, and the plans Postgres
    // caches while they are tiny (seq scans) would be measured instead of a running ledger's.
    await pool.query(
      `INSERT INTO holds (id, account_id, amount, reason, reference, idempotency_key, available_after, status, charged, created_at, expires_at, resolved_at)
       SELECT gen_random_uuid(), 'bench-' || (1 + g % $2), 10, 'chat', 'history', 'history-' || g, 0, 'released', 0,
              now() - interval '1 day', now() - interval '1 day' + interval '10 minutes', now() - interval '1 day'
       FROM generate_series(1, $1) g`,
      [HISTORY_HOLDS, ACCOUNTS],
    );
    await pool.query("ANALYZE");
    // Built as billing's module builds it (index.ts), from the same settings: BILLING_LEDGER_BATCH_* apply here too.
    const config = loadConfig(billingConfigSchema, process.env);
    const store = replicaLedgerStore(pool, config, (_statement, size) => batchSizes.push(size));
    const spreadAccount = () => `bench-${1 + Math.floor(Math.random() * ACCOUNTS)}`;

    const binDir = findPgBinDir({});
    if (!binDir) throw new Error("pgbench not found (install postgresql)");
    pgbenchInit(binDir, server.port, server.user, "pgbench_ref");

    const settingsLine = settings.rows.map((s) => `${s.name}=${s.setting}${s.unit && s.unit !== "" ? ` (${s.unit})` : ""}`).join(", ");
    process.stderr.write(
      `ledger bench: ${ROUNDS} rounds of ${PAIRS} pairs vs ${PGBENCH_TX} pgbench transactions, ${CLIENTS} clients on both sides\n` +
        `server (shared by both): ${settingsLine}\n`,
    );
    // Warm-up: connections, prepared statements, buffer cache, pgbench's tables.
    pgbench(binDir, server.port, server.user, "pgbench_ref", Math.ceil(PGBENCH_TX / 4));
    await runPairs(store, Math.ceil(PAIRS / 4), spreadAccount);

    const walDir = join(dir, "pgdata", "pg_wal");
    /** Runs `measure` and reads the WAL it wrote, per operation (`ops` of them). */
    const withWal = async <T>(ops: (r: T) => number, measure: () => T | Promise<T>): Promise<{ result: T; wal: WalUse | null }> => {
      const start = await currentLsn(pool);
      const result = await measure();
      const wal = walBetween(binDir, walDir, start, await currentLsn(pool));
      const n = ops(result);
      return { result, wal: wal && { records: wal.records / n, bytes: wal.bytes / n, fpiBytes: wal.fpiBytes / n } };
    };
    const measurePgbench = () => withWal((r: PgbenchResult & { transactions: number }) => r.transactions, () => pgbench(binDir, server.port, server.user, "pgbench_ref", PGBENCH_TX));
    const measurePairs = () => withWal((r: PairsResult) => r.pairs, () => runPairs(store, PAIRS, spreadAccount));

    const rounds: Array<{ ledger: PairsResult; ref: PgbenchResult; ledgerWal: WalUse | null; refWal: WalUse | null }> = [];
    for (let i = 0; i < ROUNDS; i++) {
      let ref: Awaited<ReturnType<typeof measurePgbench>>;
      let ledger: Awaited<ReturnType<typeof measurePairs>>;
      if (i % 2 === 0) {
        ref = await measurePgbench();
        ledger = await measurePairs();
      } else {
        ledger = await measurePairs();
        ref = await measurePgbench();
      }
      rounds.push({ ledger: ledger.result, ref: ref.result, ledgerWal: ledger.wal, refWal: ref.wal });
      process.stderr.write(`round ${i + 1}: ${(ledger.result.pairs / ledger.result.seconds).toFixed(0)} pairs/s vs ${ref.result.tps.toFixed(0)} tps\n`);
    }
    const hotRef = pgbench(binDir, server.port, server.user, "pgbench_ref", PGBENCH_TX);
    const hot = await runPairs(store, HOT_PAIRS, () => "bench-1");
    const report = await checkInvariants(pool);
    stopping = true;
    await pool.end();

    const rate = (r: PairsResult) => r.pairs / r.seconds;
    const pct = (x: number) => `${(x * 100).toFixed(0)}%`;
    const rows = rounds.map((r, i) => ({
      scenario: `round ${i + 1}: reserve+commit, ${ACCOUNTS} accounts`,
      "pairs/s": rate(r.ledger).toFixed(0),
      "p50 ms": r.ledger.p50.toFixed(2),
      "p99 ms": r.ledger.p99.toFixed(2),
      errors: String(r.ledger.errors),
      "calls/stmt": r.ledger.callsPerStatement.toFixed(1),
      "pgbench tps": r.ref.tps.toFixed(0),
      "vs pgbench": pct(rate(r.ledger) / r.ref.tps),
    }));
    rows.push({
      scenario: "reserve+commit, 1 hot account",
      "pairs/s": rate(hot).toFixed(0),
      "p50 ms": hot.p50.toFixed(2),
      "p99 ms": hot.p99.toFixed(2),
      errors: String(hot.errors),
      "calls/stmt": hot.callsPerStatement.toFixed(1),
      "pgbench tps": hotRef.tps.toFixed(0),
      "vs pgbench": pct(rate(hot) / hotRef.tps),
    });
    console.table(rows);
    const ratios = rounds.map((r) => rate(r.ledger) / r.ref.tps);
    console.log(
      `spread: median ${median(rounds.map((r) => rate(r.ledger))).toFixed(0)} pairs/s vs pgbench -N -c ${CLIENTS} median ` +
        `${median(rounds.map((r) => r.ref.tps)).toFixed(0)} tps; median per-round ratio ${pct(median(ratios))} ` +
        `(range ${pct(Math.min(...ratios))}–${pct(Math.max(...ratios))})`,
    );
    console.log(
      `load generators' own CPU (same 2 cores as Postgres): Node ${median(rounds.map((r) => r.ledger.clientCpuMs)).toFixed(3)} ms/pair, ` +
        `pgbench ${median(rounds.map((r) => r.ref.clientCpuMs)).toFixed(3)} ms/transaction`,
    );
    const walLine = (label: string, xs: Array<WalUse | null>) => {
      const ok = xs.filter((x): x is WalUse => x !== null);
      if (ok.length === 0) return `${label}: n/a`;
      const kb = (b: number) => `${(b / 1024).toFixed(2)} kB`;
      return `${label} ${median(ok.map((x) => x.records)).toFixed(1)} records, ${kb(median(ok.map((x) => x.bytes)))} ` +
        `(full-page images ${kb(median(ok.map((x) => x.fpiBytes)))})`;
    };
    console.log(
      `WAL (medians over the rounds): ${walLine("per pair", rounds.map((r) => r.ledgerWal))}; ` +
        `${walLine("per pgbench transaction", rounds.map((r) => r.refWal))}`,
    );
    console.log(`server settings (both sides): ${settingsLine}`);
    console.log(
      `ledger coalescing: BILLING_LEDGER_BATCH_SIZE=${config.BILLING_LEDGER_BATCH_SIZE}, ` +
        `BILLING_LEDGER_BATCH_IN_FLIGHT=${config.BILLING_LEDGER_BATCH_IN_FLIGHT} ("calls/stmt" = reserves or commits per statement)`,
    );
    console.log(`invariants after the run: ${report.ok ? "ok" : `VIOLATED: ${JSON.stringify(report.violations)}`}`);
    if (!report.ok) process.exitCode = 1;
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
