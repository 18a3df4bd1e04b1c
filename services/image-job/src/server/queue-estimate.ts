// Queue position and estimated start of QUEUED jobs, from the database (so every replica agrees). A job whose pool
// is at zero workers (its model STANDBY: scaled to zero, waking on the queue's lag) is "waiting for a GPU": its
// estimate starts from when the pool's first worker should be ready — the pool's oldest queued job (whose arrival
// started the wake) plus the model's expected cold start.
import type { JobStore, PoolCounts } from "../data/job-store.js";
import { estimateStartMs } from "../domain/queue.js";

export interface QueueInfo {
  position: number;
  estimatedStartAt: Date;
  /** The pool is at zero workers and waking. */
  waitingForGpu: boolean;
  /** With waitingForGpu: when its first worker is expected to be ready. */
  gpuReadyAt?: Date;
}

/** `pool`: the job's place in its pool when the caller read it with the job (saves a query); else it is read here. */
export type QueueEstimator = (job: { id: string; status: string; modelId: string; createdAt: Date; pool?: PoolCounts }) => Promise<QueueInfo | undefined>;

/** Whether a pool is at zero on purpose (STANDBY) and how long it takes to wake; undefined when it has workers. */
export type PoolWake = (modelId: string) => { coldStartMs: number } | undefined;

/** Recent run times are cached per pool for `cacheMs` (they change slowly; the position itself is never cached). */
export function createQueueEstimator(opts: { store: Pick<JobStore, "recentRunMs" | "poolSnapshot" | "oldestQueuedAt">; defaultRunMs: number;
  cacheMs?: number; now?: () => number; poolWake?: PoolWake }): QueueEstimator {
  const cacheMs = opts.cacheMs ?? 10_000;
  const now = opts.now ?? Date.now;
  const runTimes = new Map<string, { ms: number; at: number }>();
  const avgRunMs = async (modelId: string): Promise<number> => {
    const cached = runTimes.get(modelId);
    if (cached && now() - cached.at < cacheMs) return cached.ms;
    const ms = (await opts.store.recentRunMs(modelId)) ?? opts.defaultRunMs;
    runTimes.set(modelId, { ms, at: now() });
    return ms;
  };
  return async (job) => {
    if (job.status !== "QUEUED") return undefined;
    const [snap, avg] = await Promise.all([job.pool ?? opts.store.poolSnapshot(job), avgRunMs(job.modelId)]);
    const t = now();
    const wake = opts.poolWake?.(job.modelId);
    if (wake && snap.running === 0) {
      // The wake began when the pool's first job arrived (the queue's lag activates the scaler).
      const since = snap.ahead === 0 ? job.createdAt : ((await opts.store.oldestQueuedAt(job.modelId)) ?? job.createdAt);
      const gpuReadyAt = new Date(Math.max(t, since.getTime() + wake.coldStartMs));
      return { position: snap.ahead, waitingForGpu: true, gpuReadyAt,
        estimatedStartAt: new Date(estimateStartMs(gpuReadyAt.getTime(), { ...snap, avgRunMs: avg })) };
    }
    return { position: snap.ahead, waitingForGpu: false, estimatedStartAt: new Date(estimateStartMs(t, { ...snap, avgRunMs: avg })) };
  };
}
