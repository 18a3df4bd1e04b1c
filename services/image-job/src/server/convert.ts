// Database rows → API messages. Image URLs are signed here, at read time, so every response carries fresh ones.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ImageSchema, JobSchema, JobStatus, QueuePhase, type Image, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import type { ImageStore } from "../storage/store.js";

const TO_PROTO: Record<string, JobStatus> = {
  QUEUED: JobStatus.QUEUED,
  RUNNING: JobStatus.RUNNING,
  SUCCEEDED: JobStatus.SUCCEEDED,
  FAILED: JobStatus.FAILED,
  CANCELLED: JobStatus.CANCELLED,
};

export function jobStatusToProto(status: string): JobStatus {
  return TO_PROTO[status] ?? JobStatus.UNSPECIFIED;
}

export function jobStatusFromProto(status: JobStatus): string | undefined {
  return Object.entries(TO_PROTO).find(([, v]) => v === status)?.[0];
}

/** The columns of a job row the API shows. */
export interface JobView {
  id: string;
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
  creditsReserved: bigint;
  creditsCharged: bigint;
  errorCode: string;
  errorMessage: string;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface ImageView {
  id: string;
  jobId: string;
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
  styleId: string;
  createdAt: Date;
}

export interface Signer {
  store: ImageStore;
  urlTtlMs: number;
  now?: () => number;
}

export async function imageToProto(img: ImageView, signer: Signer): Promise<Image> {
  const expiresAt = new Date((signer.now?.() ?? Date.now()) + signer.urlTtlMs);
  return create(ImageSchema, {
    id: img.id,
    jobId: img.jobId,
    url: await signer.store.signedUrl(img.storageKey, expiresAt),
    urlExpiresAt: timestampFromDate(expiresAt),
    width: img.width,
    height: img.height,
    contentType: img.contentType,
    sizeBytes: BigInt(img.sizeBytes),
    index: img.batchIndex,
    prompt: img.prompt,
    negativePrompt: img.negativePrompt,
    seed: img.seed,
    workflowId: img.workflowId,
    styleId: img.styleId,
    createdAt: timestampFromDate(img.createdAt),
  });
}

export async function jobToProto(
  job: JobView,
  images: ImageView[],
  signer: Signer,
  queue?: { position: number; estimatedStartAt: Date; waitingForGpu?: boolean; gpuReadyAt?: Date },
): Promise<Job> {
  const sorted = [...images].sort((a, b) => a.batchIndex - b.batchIndex);
  return create(JobSchema, {
    id: job.id,
    workflowId: job.workflowId,
    modelId: job.modelId,
    status: jobStatusToProto(job.status),
    prompt: job.prompt,
    negativePrompt: job.negativePrompt,
    width: job.width,
    height: job.height,
    count: job.count,
    steps: job.steps,
    seed: job.seed,
    styleId: job.styleId,
    creditsReserved: job.creditsReserved,
    creditsCharged: job.creditsCharged,
    images: await Promise.all(sorted.map((i) => imageToProto(i, signer))),
    errorCode: job.errorCode,
    errorMessage: job.errorMessage,
    queuePosition: queue?.position ?? 0,
    estimatedStartAt: queue ? timestampFromDate(queue.estimatedStartAt) : undefined,
    queuePhase: queue ? (queue.waitingForGpu ? QueuePhase.WAITING_FOR_GPU : QueuePhase.IN_LINE) : QueuePhase.UNSPECIFIED,
    gpuReadyAt: queue?.gpuReadyAt ? timestampFromDate(queue.gpuReadyAt) : undefined,
    createdAt: timestampFromDate(job.createdAt),
    startedAt: job.startedAt ? timestampFromDate(job.startedAt) : undefined,
    finishedAt: job.finishedAt ? timestampFromDate(job.finishedAt) : undefined,
  });
}
