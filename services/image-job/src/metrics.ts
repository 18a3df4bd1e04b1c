// image-job's domain metrics (the RPC RED metrics come from the kit's interceptor).
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface ImageJobMetrics {
  submitted: Counter<"pool">;
  finished: Counter<"pool" | "status">;
  failures: Counter<"pool" | "reason">;
  imagesProduced: Counter<"pool">;
  /** Submission → started by a worker. */
  waitSeconds: Histogram<"pool">;
  /** Started → final. */
  runSeconds: Histogram<"pool" | "status">;
  settleFailures: Counter<"action">;
}

const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800];

/**
 * Registers the metrics. `queueDepths` is read on every scrape for `luna_image_queue_depth{pool}` (QUEUED jobs per
 * model pool, from the database, so every replica reports the same figure).
 */
export function createImageJobMetrics(registry: Registry, queueDepths: () => Promise<Array<{ modelId: string; queued: number }>>,
  poolAsleep: (pool: string) => boolean = () => false): ImageJobMetrics {
  const known = new Set<string>();
  /** One read of the depths per scrape, shared by the two gauges that need it (their collects run concurrently). */
  let read: { at: number; depths: Promise<Array<{ modelId: string; queued: number }>> } | undefined;
  const readDepths = () => {
    if (!read || Date.now() - read.at > 1000) read = { at: Date.now(), depths: queueDepths() };
    return read.depths;
  };
  new Gauge({
    name: "luna_image_queue_depth",
    help: "Image jobs waiting (QUEUED) per model pool.",
    labelNames: ["pool"],
    registers: [registry],
    async collect() {
      try {
        const depths = await readDepths();
        const seen = new Set<string>();
        for (const d of depths) {
          this.set({ pool: d.modelId }, d.queued);
          seen.add(d.modelId);
          known.add(d.modelId);
        }
        for (const pool of known) if (!seen.has(pool)) this.set({ pool }, 0);
      } catch {
        // The database is unreachable: keep the last values (readiness reports the outage).
      }
    },
  });
  // Scale-to-zero demand (issue 19): jobs whose pool is at zero workers (STANDBY) and waking. The pool wakes on the
  // queue consumer's lag (KEDA nats-jetstream); this says how many users wait for that.
  new Gauge({
    name: "luna_image_jobs_waiting_for_gpu",
    help: "QUEUED image jobs per model pool while the pool is at zero workers (STANDBY) and waking.",
    labelNames: ["pool"],
    registers: [registry],
    async collect() {
      try {
        const depths = await readDepths();
        this.reset();
        for (const pool of known) this.set({ pool }, 0);
        for (const d of depths) this.set({ pool: d.modelId }, poolAsleep(d.modelId) ? d.queued : 0);
      } catch {
        // The database is unreachable: keep the last values.
      }
    },
  });
  return {
    submitted: new Counter({ name: "luna_image_jobs_submitted_total", help: "Image jobs accepted.", labelNames: ["pool"], registers: [registry] }),
    finished: new Counter({ name: "luna_image_jobs_finished_total", help: "Image jobs that reached a final status.", labelNames: ["pool", "status"], registers: [registry] }),
    failures: new Counter({ name: "luna_image_job_failures_total", help: "Failed image jobs by reason (error_code).", labelNames: ["pool", "reason"], registers: [registry] }),
    imagesProduced: new Counter({ name: "luna_image_images_produced_total", help: "Images produced by successful jobs.", labelNames: ["pool"], registers: [registry] }),
    waitSeconds: new Histogram({ name: "luna_image_job_wait_seconds", help: "Time from submission to a worker starting the job.", labelNames: ["pool"], buckets: DURATION_BUCKETS, registers: [registry] }),
    runSeconds: new Histogram({ name: "luna_image_job_run_seconds", help: "Time from start to the final status.", labelNames: ["pool", "status"], buckets: DURATION_BUCKETS, registers: [registry] }),
    settleFailures: new Counter({ name: "luna_image_settle_failures_total", help: "Billing commit/release calls that failed (retried by the sweeper).", labelNames: ["action"], registers: [registry] }),
  };
}
