// The periodic safety net of image-job: fails jobs past their deadlines (releasing their credits and interrupting a
// worker that may still run them), retries billing settlements that failed, and dispatches waiting jobs that
// nothing else dispatched. Safe on every replica at once (row locks; settlement is idempotent).
import type { JobStore } from "./data/job-store.js";
import type { Lifecycle } from "./lifecycle.js";
import type { Settler } from "./settlement.js";

interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface SweeperOptions {
  store: JobStore;
  lifecycle: Lifecycle;
  settler: Settler;
  log: Log;
  intervalMs: number;
  batch: number;
  deadlineGraceMs: number;
  /** Settlements younger than this are left to the path that made them (default 2 s). */
  settleDelayMs?: number;
}

/** One sweep round; returns what it did (for tests and logs). */
export async function sweepOnce(opts: SweeperOptions, now = new Date()): Promise<{ failed: number; settled: number; dispatched: number }> {
  const failed = await opts.store.failExpired(now, opts.deadlineGraceMs, opts.batch);
  for (const f of failed) opts.lifecycle.changed(f.job, f.previousStatus);
  const unsettled = await opts.store.unsettled(opts.batch, new Date(now.getTime() - (opts.settleDelayMs ?? 2000)));
  for (const job of unsettled) await opts.settler.settle(job);
  const dispatched = await opts.store.dispatchWaitingJobs(opts.batch);
  return { failed: failed.length, settled: unsettled.length, dispatched };
}

export function startSweeper(opts: SweeperOptions): { stop(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = () => {
    running = (async () => {
      try {
        const r = await sweepOnce(opts);
        if (r.failed > 0 || r.dispatched > 0) opts.log.info(r, "image job sweep");
      } catch (err) {
        opts.log.warn({ err }, "image job sweep failed; will retry");
      }
    })().finally(() => {
      running = undefined;
      if (!stopped) timer = setTimeout(tick, opts.intervalMs);
    });
  };
  timer = setTimeout(tick, opts.intervalMs);
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
