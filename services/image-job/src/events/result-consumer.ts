// Applies worker results (`luna.events.image.job.result`): once per event (inbox), first result per job wins.
import { fromBinary } from "@bufbuild/protobuf";
import { ImageJobOutcome, ImageJobResultSchema, type ImageJobResult } from "@luna/contracts/luna/events/v1/image_events_pb.js";
import { EVENTS_STREAM, runConsumer, type ConsumerHandle, type MinimalLogger } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import { RESULT_CONSUMER, Subjects } from "../domain/job.js";
import type { JobStore, ResultInput } from "../data/job-store.js";
import type { Lifecycle } from "../lifecycle.js";

const OUTCOMES: Partial<Record<ImageJobOutcome, ResultInput["outcome"]>> = {
  [ImageJobOutcome.SUCCEEDED]: "SUCCEEDED",
  [ImageJobOutcome.FAILED]: "FAILED",
  [ImageJobOutcome.CANCELLED]: "CANCELLED",
};

/** Decodes and checks a result event; undefined when it can never be applied (poison message). */
export function toResultInput(ev: ImageJobResult): ResultInput | undefined {
  const outcome = OUTCOMES[ev.outcome];
  const eventId = ev.meta?.eventId ?? "";
  if (!outcome || !eventId || !/^[0-9a-f-]{36}$/.test(ev.jobId)) return undefined;
  return {
    eventId,
    jobId: ev.jobId,
    outcome,
    images: ev.images.map((i) => ({ index: i.index, storageKey: i.storageKey, width: i.width, height: i.height,
      sizeBytes: Number(i.sizeBytes), contentType: i.contentType })),
    errorCode: ev.errorCode,
    errorMessage: ev.errorMessage,
    workerId: ev.workerId,
  };
}

export function startResultConsumer(opts: {
  js: JetStreamClient;
  store: JobStore;
  lifecycle: Lifecycle;
  log: MinimalLogger;
  concurrency: number;
}): ConsumerHandle {
  const { store, lifecycle, log } = opts;
  return runConsumer({
    js: opts.js,
    stream: EVENTS_STREAM,
    durable: RESULT_CONSUMER,
    filterSubject: Subjects.result,
    concurrency: opts.concurrency,
    maxDeliver: 20,
    backoffMs: [200, 1000, 5000, 30_000],
    log,
    async handle(msg) {
      let input: ResultInput | undefined;
      try {
        input = toResultInput(fromBinary(ImageJobResultSchema, msg.data));
      } catch {
        input = undefined;
      }
      if (!input) {
        log.warn({ subject: msg.subject, msgId: msg.msgId }, "undecodable image job result");
        return "term";
      }
      const out = await store.applyResult(input);
      switch (out.kind) {
        case "applied":
          lifecycle.changed(out.job, out.previous.status);
          lifecycle.discardObjects(out.orphanKeys);
          break;
        case "ignored":
          lifecycle.discardObjects(out.orphanKeys);
          log.debug({ jobId: input.jobId, status: out.job.status, outcome: input.outcome }, "result for a final job ignored");
          break;
        case "unknown_job":
          log.warn({ jobId: input.jobId }, "result for an unknown job ignored");
          break;
        case "duplicate":
          break;
      }
      return "ack";
    },
  });
}
