// The periodic safety net of image-job: fails jobs past their deadlines (releasing their credits and interrupting a
// worker that may still run them), retries billing settlements that failed, and dispatches waiting jobs that
// nothing else dispatched, and releases the credit holds of submissions that crashed between billing's reserve and
// their commit (no job names such a hold; billing lists it by its reference, the job id), instead of leaving them to
// their deadline. Safe on every replica at once (row and user locks; settlement and release are idempotent).
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
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
  /** Billing, for the holds no job names (the hold sweep is off without it). */
  credits?: Client<typeof CreditsService>;
  /** Holds younger than this are left out of the hold sweep. */
  orphanHoldGraceMs?: number;
  /**
   * Every this often the hold sweep reads every open image hold again (default 10 min); in between it reads only the
   * holds created since its last complete pass (see HoldScan).
   */
  orphanHoldRescanMs?: number;
  /** The hold sweep's progress between rounds (startSweeper keeps one; without it every round reads every hold). */
  holdScan?: HoldScan;
  callTimeoutMs?: number;
  /** Settlements younger than this are left to the path that made them (default 2 s). */
  settleDelayMs?: number;
}

/** One sweep round; returns what it did (for tests and logs). */
export async function sweepOnce(opts: SweeperOptions, now = new Date()): Promise<{ failed: number; settled: number; dispatched: number; holdsReleased: number }> {
  const failed = await opts.store.failExpired(now, opts.deadlineGraceMs, opts.batch);
  for (const f of failed) opts.lifecycle.changed(f.job, f.previousStatus);
  const unsettled = await opts.store.unsettled(opts.batch, new Date(now.getTime() - (opts.settleDelayMs ?? 2000)));
  for (const job of unsettled) await opts.settler.settle(job);
  const dispatched = await opts.store.dispatchWaitingJobs(opts.batch);
  const holdsReleased = await releaseOrphanedHolds(opts, now).catch((err: unknown) => {
    opts.log.warn({ err }, "could not look for orphaned credit holds; will retry");
    return 0;
  });
  return { failed: failed.length, settled: unsettled.length, dispatched, holdsReleased };
}

/** Longest a hold's row may stay invisible after its created_at (billing's reserve commits right after it inserts). */
export const HOLD_VISIBILITY_MS = 5_000;

/**
 * Where the hold sweep stands. A hold it has looked at and found named by a job (or released) needs no second look:
 * the job keeps naming it, so a round reads only holds created since `decidedBefore` (every hold older is decided).
 * A hold it could not decide (its user's lock was busy: a submission in flight) holds `decidedBefore` back at its
 * creation time, so the next round reads it again. A complete pass now and then (orphanHoldRescanMs) is the safety
 * net; a new process starts with one.
 */
export interface HoldScan {
  decidedBefore?: Date;
  lastFullPassAt?: number;
}

/** Releases the open image holds (older than the grace) whose job does not exist; returns how many. */
export async function releaseOrphanedHolds(opts: SweeperOptions, now = new Date()): Promise<number> {
  const credits = opts.credits;
  if (!credits) return 0;
  const call = { timeoutMs: opts.callTimeoutMs ?? 10_000 };
  const graceMs = opts.orphanHoldGraceMs ?? 30_000;
  const before = new Date(now.getTime() - graceMs);
  const scan = opts.holdScan;
  const full = !scan?.decidedBefore || scan.lastFullPassAt === undefined || now.getTime() - scan.lastFullPassAt >= (opts.orphanHoldRescanMs ?? 600_000);
  const createdAfter = full ? undefined : timestampFromDate(scan!.decidedBefore!);
  let released = 0;
  let firstUndecided: Date | undefined;
  let pageToken = "";
  do {
    const page = await credits.listOpenHolds({ reason: "image", createdBefore: timestampFromDate(before), createdAfter, pageSize: opts.batch, pageToken }, call);
    pageToken = page.nextPageToken;
    const { missing, undecided } = await opts.store.jobsMissing(page.holds.map((h) => ({ jobId: h.reference, userId: h.accountId })));
    for (const h of page.holds) {
      if (undecided.includes(h.reference) && h.createdAt) {
        const at = timestampDate(h.createdAt);
        if (!firstUndecided || at < firstUndecided) firstUndecided = at;
      }
      if (!missing.includes(h.reference)) continue;
      await credits.release({ holdId: h.id }, call);
      released++;
      opts.log.info({ holdId: h.id, jobId: h.reference, credits: h.amount.toString() }, "released a credit hold whose job was never stored");
    }
  } while (pageToken !== "");
  // Only a pass that ran to its end moves the mark (a failed call leaves it, so the next round reads those holds).
  // A hold becomes visible when billing's reserve commits, a moment after its created_at: the mark stays
  // HOLD_VISIBILITY_MS behind `now`, so a hold committed after a round's read is read by a later round.
  if (scan) {
    const visible = new Date(Math.min(before.getTime(), now.getTime() - HOLD_VISIBILITY_MS));
    scan.decidedBefore = firstUndecided && firstUndecided < visible ? firstUndecided : visible;
    if (full) scan.lastFullPassAt = now.getTime();
  }
  return released;
}

export function startSweeper(sweeperOpts: SweeperOptions): { stop(): Promise<void> } {
  const opts: SweeperOptions = { ...sweeperOpts, holdScan: sweeperOpts.holdScan ?? {} };
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = () => {
    running = (async () => {
      try {
        const r = await sweepOnce(opts);
        if (r.failed > 0 || r.dispatched > 0 || r.holdsReleased > 0) opts.log.info(r, "image job sweep");
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
