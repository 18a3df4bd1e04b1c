// Queue position and start estimate of a waiting job. The position is exact for the pool's FIFO (jobs created
// earlier and still queued); the estimate is rough by nature: recent run time × rounds of the busy workers.

export interface PoolSnapshot {
  /** QUEUED jobs of the pool created before this one. */
  ahead: number;
  /** RUNNING jobs of the pool (a lower bound of its busy workers). */
  running: number;
  /** Mean run time of the pool's recent jobs (or the configured default). */
  avgRunMs: number;
}

/**
 * When a queued job should start: each round every busy worker finishes one job; with no job running we assume
 * one worker. For a pool scaled to zero, `now` is when its first worker is expected (see queue-estimate.ts).
 */
export function estimateStartMs(now: number, s: PoolSnapshot): number {
  const workers = Math.max(1, s.running);
  const rounds = Math.floor((s.ahead + s.running) / workers);
  return now + rounds * Math.max(0, s.avgRunMs);
}
