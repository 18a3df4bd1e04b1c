// Rows of image-job's tables as the store returns them (columns as in prisma/schema.prisma, camelCased; money as
// bigint), and their mapping from node-postgres results.

export interface JobRow {
  id: string;
  userId: string;
  idempotencyKey: string;
  requestHash: string;
  workflowId: string;
  modelId: string;
  status: string;
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  count: number;
  steps: number;
  seed: bigint;
  styleId: string;
  pricePerImage: bigint;
  holdId: string;
  creditsReserved: bigint;
  creditsCharged: bigint;
  imagesProduced: number;
  errorCode: string;
  errorMessage: string;
  attempts: number;
  workerId: string;
  runTimeoutMs: number;
  dispatchedAt: Date | null;
  queueDeadline: Date;
  runDeadline: Date | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  settlement: string;
  settledAt: Date | null;
  settleAttempts: number;
  settleError: string;
}

export interface ImageRow {
  id: string;
  jobId: string;
  userId: string;
  batchIndex: number;
  storageKey: string;
  contentType: string;
  width: number;
  height: number;
  sizeBytes: number;
  prompt: string;
  negativePrompt: string;
  seed: bigint;
  workflowId: string;
  modelId: string;
  styleId: string;
  createdAt: Date;
}

/** A queued job's place in its pool: QUEUED jobs of the pool created before it, and the pool's RUNNING jobs. */
export interface PoolCounts {
  ahead: number;
  running: number;
}

/** A job with its images; `pool`, when the job is QUEUED and it was read in the same statement (else undefined). */
export type JobWithImages = JobRow & { images: ImageRow[]; pool?: PoolCounts };

type Raw = Record<string, unknown>;

const big = (v: unknown): bigint => BigInt(v as string | number);
const date = (v: unknown): Date => v as Date;
const dateOrNull = (v: unknown): Date | null => (v === null ? null : (v as Date));

export function jobFromRow(r: Raw): JobRow {
  return {
    id: r.id as string,
    userId: r.user_id as string,
    idempotencyKey: r.idempotency_key as string,
    requestHash: r.request_hash as string,
    workflowId: r.workflow_id as string,
    modelId: r.model_id as string,
    status: r.status as string,
    prompt: r.prompt as string,
    negativePrompt: r.negative_prompt as string,
    width: r.width as number,
    height: r.height as number,
    count: r.count as number,
    steps: r.steps as number,
    seed: big(r.seed),
    styleId: r.style_id as string,
    pricePerImage: big(r.price_per_image),
    holdId: r.hold_id as string,
    creditsReserved: big(r.credits_reserved),
    creditsCharged: big(r.credits_charged),
    imagesProduced: r.images_produced as number,
    errorCode: r.error_code as string,
    errorMessage: r.error_message as string,
    attempts: r.attempts as number,
    workerId: r.worker_id as string,
    runTimeoutMs: r.run_timeout_ms as number,
    dispatchedAt: dateOrNull(r.dispatched_at),
    queueDeadline: date(r.queue_deadline),
    runDeadline: dateOrNull(r.run_deadline),
    createdAt: date(r.created_at),
    startedAt: dateOrNull(r.started_at),
    finishedAt: dateOrNull(r.finished_at),
    settlement: r.settlement as string,
    settledAt: dateOrNull(r.settled_at),
    settleAttempts: r.settle_attempts as number,
    settleError: r.settle_error as string,
  };
}

export function imageFromRow(r: Raw): ImageRow {
  return {
    id: r.id as string,
    jobId: r.job_id as string,
    userId: r.user_id as string,
    batchIndex: r.batch_index as number,
    storageKey: r.storage_key as string,
    contentType: r.content_type as string,
    width: r.width as number,
    height: r.height as number,
    sizeBytes: r.size_bytes as number,
    prompt: r.prompt as string,
    negativePrompt: r.negative_prompt as string,
    seed: big(r.seed),
    workflowId: r.workflow_id as string,
    modelId: r.model_id as string,
    styleId: r.style_id as string,
    createdAt: date(r.created_at),
  };
}
