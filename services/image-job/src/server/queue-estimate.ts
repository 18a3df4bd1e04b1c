// Queue position and estimated start of QUEUED jobs, from the database (so every replica agrees).
import type { JobStore, PoolCounts } from "../data/job-store.js";
import { estimateStartMs } from "../domain/queue.js";

export interface QueueInfo {
  position: number;
  estimatedStartAt: Date;
}

/** `pool`: the job's place in its pool when the caller read it with the job (saves a query); else it is read here. */
export type QueueEstimator = (job: { id: string; status: string; modelId: string; createdAt: Date; pool?: PoolCounts }) => Promise<QueueInfo | undefined>;

/** Recent run times are cached per pool for `cacheMs` (they change slowly; the position itself is never cached). */
export function createQueueEstimator(opts: { store: JobStore; defaultRunMs: number; cacheMs?: number; now?: () => number }): QueueEstimator {
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
    return { position: snap.ahead, estimatedStartAt: new Date(estimateStartMs(t, { ...snap, avgRunMs: avg })) };
  };
}
