// Pure rules of an image job: statuses and their transitions, deterministic ids, run deadlines, what a result
// charges, NATS subject names and storage keys.
import { createHash } from "node:crypto";
import { IMAGE_JOBS_STREAM } from "@luna/kit";

export const JOB_STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;
export type JobStatusName = (typeof JOB_STATUSES)[number];
export const OPEN_STATUSES: readonly JobStatusName[] = ["QUEUED", "RUNNING"];

export function isFinal(status: string): boolean {
  return status === "SUCCEEDED" || status === "FAILED" || status === "CANCELLED";
}

/** Reason codes of FAILED jobs (part of the API: `Job.error_code`). */
export const ErrorCodes = {
  executionError: "execution_error",
  invalidWorkflow: "invalid_workflow",
  deadlineExceeded: "deadline_exceeded",
  queueTimeout: "queue_timeout",
  comfyuiLost: "comfyui_lost",
  noOutputs: "no_outputs",
  storageError: "storage_error",
  cancelled: "cancelled",
} as const;

/**
 * A UUID (version 8, RFC 9562 "custom") derived from `name` with SHA-256: the same name always gives the same id.
 * Used for job ids from idempotency keys and for event ids that must be stable across retries.
 */
export function deterministicUuid(name: string): string {
  const h = createHash("sha256").update(name).digest();
  h[6] = (h[6]! & 0x0f) | 0x80; // version 8
  h[8] = (h[8]! & 0x3f) | 0x80; // RFC 9562 variant
  const hex = h.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** The job id of a user's idempotency key: a retry of the submission finds the same job. */
export function jobIdForKey(userId: string, idempotencyKey: string): string {
  return deterministicUuid(`luna.image.job\u0000${userId}\u0000${idempotencyKey}`);
}

/** Event id of a job's one result (worker → image-job): repeats are dropped by JetStream and the inbox. */
export function resultEventId(jobId: string): string {
  return deterministicUuid(`luna.image.job.result\u0000${jobId}`);
}

/** Event id of the `usage.recorded` event of a job's charge. */
export function usageEventId(jobId: string): string {
  return deterministicUuid(`luna.image.job.usage\u0000${jobId}`);
}

/** Billing idempotency key of a job's hold. */
export function holdIdempotencyKey(jobId: string): string {
  return `image-job:${jobId}`;
}

/** What a submission asked for, as compared between retries of one idempotency key. */
export interface SubmitFingerprint {
  workflowId: string;
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  count: number;
  steps: number;
  seed: bigint | undefined;
  styleId: string;
}

export function requestHash(f: SubmitFingerprint): string {
  const canonical = JSON.stringify([f.workflowId, f.prompt, f.negativePrompt, f.width, f.height, f.count, f.steps,
    f.seed === undefined ? null : f.seed.toString(), f.styleId]);
  return createHash("sha256").update(canonical).digest("hex");
}

/** Run-deadline settings (see config.ts). */
export interface RunDeadlinePolicy {
  baseMs: number;
  perMegapixelStepMs: number;
  maxMs: number;
}

/**
 * Longest a run may take: a fixed base (model loading, VAE decode, upload) plus time proportional to the sampling
 * work (steps × megapixels × images), capped.
 */
export function runTimeoutMs(p: RunDeadlinePolicy, job: { steps: number; width: number; height: number; count: number }): number {
  const megapixels = (job.width * job.height) / 1_000_000;
  const work = Math.ceil(job.steps * megapixels * job.count * p.perMegapixelStepMs);
  return Math.min(p.maxMs, p.baseMs + work);
}

/** Credits charged for a successful job: price × images produced, never more than the hold. */
export function chargeFor(job: { pricePerImage: bigint; creditsReserved: bigint }, imagesProduced: number): bigint {
  const charge = job.pricePerImage * BigInt(Math.max(0, imagesProduced));
  return charge > job.creditsReserved ? job.creditsReserved : charge;
}

/** Subject token of a model pool: model ids are `[a-z0-9.-]`; '.' separates NATS tokens, so it becomes '_'. */
export function poolToken(modelId: string): string {
  if (!/^[a-z0-9][a-z0-9.-]*$/.test(modelId)) throw new Error(`invalid model id for a pool: ${JSON.stringify(modelId)}`);
  return modelId.replaceAll(".", "_");
}

export const Subjects = {
  /** Work queue of a pool (stream LUNA_IMAGE_JOBS). */
  jobQueue: (modelId: string) => `luna.image.jobs.${poolToken(modelId)}`,
  /** Worker results (stream LUNA_EVENTS). */
  result: "luna.events.image.job.result",
  /** Status changes for other services (stream LUNA_EVENTS). */
  updated: "luna.events.image.job.updated",
  usage: "luna.events.usage.recorded",
  /** Live progress and status nudges (plain NATS). */
  live: (jobId: string) => `luna.live.image.${jobId}`,
  /** Interrupt signal to the worker running a job (plain NATS). */
  cancel: (jobId: string) => `luna.live.image.cancel.${jobId}`,
} as const;

/** Durable consumer of a pool's queue, shared by every worker of the pool. */
export function poolDurable(modelId: string): string {
  return `image-worker-${poolToken(modelId).replaceAll("_", "-")}`;
}

/** Durable consumer of worker results in image-job, and its inbox name. */
export const RESULT_CONSUMER = "image-job-results";

/**
 * Object key of a job's image: `<job id>/<index>.png`. Opaque on purpose — the key ends up in signed URLs, storage
 * logs and bucket listings, so it names no user (ownership is the job row's) — and one folder per job.
 */
export function imageStorageKey(jobId: string, index: number): string {
  return `${jobStoragePrefix(jobId)}${index}.png`;
}

/** The key prefix every image of a job starts with (results naming other keys are refused). */
export function jobStoragePrefix(jobId: string): string {
  return `${safeSegment(jobId)}/`;
}

/**
 * Whether a worker's result may name `key` for this job: its own prefix, or the one workers used before keys were
 * opaque (`images/<user id>/<job id>/`), so a job in flight across an upgrade keeps its images.
 */
export function isJobStorageKey(key: string, userId: string, jobId: string): boolean {
  return key.startsWith(jobStoragePrefix(jobId)) || key.startsWith(`images/${safeSegment(userId)}/${jobId}/`);
}

function safeSegment(s: string): string {
  // User ids are UUIDs or similar; anything else is hex-encoded so a key can never escape its folder.
  return /^[A-Za-z0-9_-]{1,128}$/.test(s) ? s : `x${Buffer.from(s).toString("hex").slice(0, 200)}`;
}

/** Check of a client's idempotency key: 1-128 printable ASCII characters. */
export function checkIdempotencyKey(key: string): string | undefined {
  if (key.length > 128) return "must be at most 128 characters";
  if (!/^[\x21-\x7e]+$/.test(key)) return "must be printable ASCII without spaces";
  return undefined;
}

/**
 * The durable consumer of a pool's queue exactly as its workers create it (worker.ts runs it with these settings;
 * the server keeps `max_deliver` unlimited, see runConsumer). image-job pre-creates it from the same definition for
 * every image model, so it exists while the pool has zero workers: KEDA's nats-jetstream scaler reads its lag.
 */
export function poolConsumerSpec(modelId: string, ackWaitMs: number): { stream: string; durable: string; filterSubject: string; ackWaitMs: number; maxDeliver: number } {
  return { stream: IMAGE_JOBS_STREAM, durable: poolDurable(modelId), filterSubject: Subjects.jobQueue(modelId), ackWaitMs, maxDeliver: -1 };
}
