// Builders of the events image-job writes to its outbox, and the live messages it sends on plain NATS.
import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EventMetaSchema } from "@luna/contracts/luna/events/v1/envelope_pb.js";
import {
  ImageJobCancelSchema,
  ImageJobLiveSchema,
  ImageJobQueuedSchema,
  ImageJobUpdatedSchema,
} from "@luna/contracts/luna/events/v1/image_events_pb.js";
import { UsageRecordedSchema } from "@luna/contracts/luna/events/v1/usage_events_pb.js";
import type { OutboxEvent } from "@luna/kit";
import { Subjects, usageEventId } from "../domain/job.js";
import { jobStatusToProto } from "../server/convert.js";

export function eventMeta(eventId: string, subjectId: string, at = new Date()) {
  return create(EventMetaSchema, { eventId, occurredAt: timestampFromDate(at), subjectId });
}

interface JobIdentity {
  id: string;
  userId: string;
  workflowId: string;
  modelId: string;
}

/** The queue message of a job (Nats-Msg-Id = job id, so a repeated dispatch is dropped). */
export function jobQueuedEvent(job: JobIdentity): OutboxEvent {
  const payload = toBinary(ImageJobQueuedSchema, create(ImageJobQueuedSchema, {
    meta: eventMeta(job.id, job.id), jobId: job.id, userId: job.userId, workflowId: job.workflowId, modelId: job.modelId,
  }));
  return { id: job.id, subject: Subjects.jobQueue(job.modelId), payload };
}

export function jobUpdatedEvent(job: JobIdentity & { status: string; imagesProduced: number; creditsCharged: bigint; errorCode: string }): OutboxEvent {
  const id = randomUUID();
  const payload = toBinary(ImageJobUpdatedSchema, create(ImageJobUpdatedSchema, {
    meta: eventMeta(id, job.id), jobId: job.id, userId: job.userId, workflowId: job.workflowId, modelId: job.modelId,
    status: jobStatusToProto(job.status), images: job.imagesProduced, creditsCharged: job.creditsCharged, errorCode: job.errorCode,
  }));
  return { id, subject: Subjects.updated, payload };
}

/** `usage.recorded` for a committed charge; its id is derived from the job, so it is written once per job. */
export function usageRecordedEvent(job: Pick<JobIdentity, "id" | "userId" | "modelId"> & { imagesProduced: number }, charged: bigint): OutboxEvent {
  const id = usageEventId(job.id);
  const payload = toBinary(UsageRecordedSchema, create(UsageRecordedSchema, {
    meta: eventMeta(id, job.userId), userId: job.userId, modelId: job.modelId, feature: "image",
    images: BigInt(job.imagesProduced), creditsCharged: charged, reference: job.id,
  }));
  return { id, subject: Subjects.usage, payload };
}

/** Status nudge for watchers (after a committed status change). */
export function liveStatusMessage(jobId: string, status: string): Uint8Array {
  return toBinary(ImageJobLiveSchema, create(ImageJobLiveSchema, { jobId, status: jobStatusToProto(status) }));
}

export function cancelMessage(jobId: string, reason: string): Uint8Array {
  return toBinary(ImageJobCancelSchema, create(ImageJobCancelSchema, { jobId, reason }));
}
