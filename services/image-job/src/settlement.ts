// Settling a final job with billing: commit the charge of a SUCCEEDED job, release the hold of any other. The
// decision is already in the database (job.settlement) when this runs, so a crash or a billing outage only delays
// it: the sweeper retries every unsettled job until billing answers. Commit and release are idempotent in billing.
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import type { JobRow, JobStore } from "./data/job-store.js";
import type { ImageJobMetrics } from "./metrics.js";

export interface Settler {
  /** Settles one job now (no-op if it owes nothing or another call is settling it). */
  settle(job: JobRow): Promise<void>;
}

interface Log {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export function createSettler(opts: { store: JobStore; billing: Transport; log: Log; metrics: ImageJobMetrics; callTimeoutMs: number }): Settler {
  const credits = createClient(CreditsService, opts.billing);
  const inflight = new Set<string>();
  const { store, log } = opts;

  return {
    async settle(job) {
      if (!job.settlement || job.settledAt || inflight.has(job.id)) return;
      inflight.add(job.id);
      try {
        // Failed by the sweeper at its deadline: the worker's images may still come (store.applyResult); the hold is
        // released once the late-result window has passed (the sweeper retries every unsettled job).
        if (job.settlement === "release" && (await store.awaitsLateResult(job))) return;
        if (!job.holdId) {
          await store.markSettled(job, job.settlement === "commit" ? { charged: 0n } : {});
          return;
        }
        try {
          if (job.settlement === "commit") {
            const r = await credits.commit({
              holdId: job.holdId,
              amount: job.creditsCharged,
              usage: { model: job.modelId, feature: "image", images: job.imagesProduced },
            }, { timeoutMs: opts.callTimeoutMs });
            await store.markSettled(job, { charged: r.hold?.charged ?? job.creditsCharged });
          } else {
            await credits.release({ holdId: job.holdId }, { timeoutMs: opts.callTimeoutMs });
            await store.markSettled(job, {});
          }
        } catch (err) {
          const ce = ConnectError.from(err);
          if (ce.code === Code.FailedPrecondition || ce.code === Code.NotFound) {
            // Billing will never accept this action (e.g. the hold expired before the job finished): nothing was
            // charged. Recorded so it is not retried forever; visible in the log and the job's settle_error.
            log.error({ jobId: job.id, holdId: job.holdId, action: job.settlement, err: ce.message }, "billing refused to settle an image job");
            await store.markSettled(job, job.settlement === "commit" ? { charged: 0n, error: ce.message } : { error: ce.message });
          } else {
            opts.metrics.settleFailures.inc({ action: job.settlement });
            log.warn({ jobId: job.id, action: job.settlement, err: ce.message }, "billing settlement failed; will retry");
            await store.recordSettleFailure(job.id, ce.message).catch(() => undefined);
          }
        }
      } finally {
        inflight.delete(job.id);
      }
    },
  };
}
