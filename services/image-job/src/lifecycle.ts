// What happens after a job's status change is committed: live nudges for watchers, the interrupt signal for a
// worker still running a job that ended without it, metrics, billing settlement, and removal of images nobody will
// reference. All best effort: the database already holds the truth, and the sweeper retries the settlement.
import type { NatsConnection } from "@nats-io/nats-core";
import { ErrorCodes, Subjects, isFinal } from "./domain/job.js";
import type { JobRow } from "./data/job-store.js";
import { cancelMessage, liveStatusMessage } from "./events/messages.js";
import type { ImageJobMetrics } from "./metrics.js";
import type { Settler } from "./settlement.js";
import type { ImageStore } from "./storage/store.js";

interface Log {
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface Lifecycle {
  /** A job changed status (commit done). */
  changed(job: JobRow, previousStatus: string): void;
  /** Objects a worker stored that no image record references (late or invalid results). */
  discardObjects(keys: string[]): void;
}

export function createLifecycle(opts: { nc: NatsConnection; metrics: ImageJobMetrics; settler: Settler; store: ImageStore; log: Log }): Lifecycle {
  const { nc, metrics, log } = opts;
  const publish = (subject: string, data: Uint8Array) => {
    try {
      nc.publish(subject, data);
    } catch (err) {
      log.debug({ err, subject }, "live publish failed");
    }
  };
  return {
    changed(job, previousStatus) {
      if (job.status === previousStatus) return;
      publish(Subjects.live(job.id), liveStatusMessage(job.id, job.status));
      const pool = job.modelId;
      if (job.status === "RUNNING" && job.startedAt) {
        metrics.waitSeconds.observe({ pool }, Math.max(0, job.startedAt.getTime() - job.createdAt.getTime()) / 1000);
      }
      if (!isFinal(job.status)) return;
      // A job that ended while a worker ran it (cancel, deadline): tell that worker to interrupt ComfyUI.
      if (previousStatus === "RUNNING" && job.status !== "SUCCEEDED") {
        publish(Subjects.cancel(job.id), cancelMessage(job.id, job.errorCode === ErrorCodes.cancelled ? "cancelled" : job.errorCode));
      }
      metrics.finished.inc({ pool, status: job.status });
      if (job.status === "FAILED") metrics.failures.inc({ pool, reason: job.errorCode || "unknown" });
      if (job.status === "SUCCEEDED") metrics.imagesProduced.inc({ pool }, job.imagesProduced);
      if (job.startedAt && job.finishedAt) {
        metrics.runSeconds.observe({ pool, status: job.status }, Math.max(0, job.finishedAt.getTime() - job.startedAt.getTime()) / 1000);
      }
      void opts.settler.settle(job);
    },
    discardObjects(keys) {
      for (const key of keys) {
        void opts.store.delete(key).catch((err: unknown) => log.warn({ err, key }, "could not delete an unreferenced image object"));
      }
    },
  };
}
