// The image worker: one durable pull consumer per model pool on LUNA_IMAGE_JOBS, one job at a time on its ComfyUI.
// It needs no database: it asks image-job (ImageWorkerService.StartJob, internal RPC) whether and what to run, and
// reports the result as an event through JetStream (msg id derived from the job id), which image-job applies once.
//
// ComfyUI is the scarce resource, so it is held only while it works for a job: from taking the job until ComfyUI
// reports it finished. The job's tail (downloading and storing the images, publishing the result, acking the
// message) runs while the next job is already pulled and started: each pool's consumer has two slots, and a slot
// may pull only while ComfyUI is free (the consumer's `admit`), so no job waits in this worker while ComfyUI is busy.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import {
  ImageJobLiveSchema,
  ImageJobOutcome,
  ImageJobQueuedSchema,
  ImageJobResultSchema,
  ProducedImageSchema,
} from "@luna/contracts/luna/events/v1/image_events_pb.js";
import { ImageWorkerService, StartJobAction } from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { publishEvent, runConsumer, type ConsumedMessage, type ConsumerHandle, type HandlerResult } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { Counter, Histogram, type Registry } from "prom-client";
import { ErrorCodes, Subjects, poolConsumerSpec, resultEventId } from "../domain/job.js";
import { eventMeta } from "../events/messages.js";
import type { ImageStore } from "../storage/store.js";
import { ComfyClient } from "./comfy-client.js";
import type { ImageWorkerConfig } from "./config.js";
import { Mutex } from "./mutex.js";
import { collectFinished, runJob, type JobOutcome, type StopReason } from "./run-job.js";

interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface ImageWorkerDeps {
  log: Log;
  nats: NatsConnection;
  js: JetStreamClient;
  /** Connect transport to image-job's ImageWorkerService, carrying an internal token. */
  transport: Transport;
  /** Where images go (the same store image-job reads). */
  store: ImageStore;
  /** Metrics registry (optional). */
  registry?: Registry;
}

export interface ImageWorker {
  readonly id: string;
  /** Connects to ComfyUI and starts consuming; resolves once every pool's consumer is bound. */
  start(): Promise<void>;
  /**
   * Stops taking jobs; a running job may finish for IMAGE_WORKER_DRAIN_TIMEOUT, then it is left to ComfyUI and handed
   * back to the queue (the next worker resumes it).
   */
  stop(): Promise<void>;
  /** Readiness: ComfyUI answers. */
  readiness: { name: string; check: () => Promise<void> };
}

const OUTCOME: Record<Exclude<JobOutcome["outcome"], "ABANDONED">, ImageJobOutcome> = {
  SUCCEEDED: ImageJobOutcome.SUCCEEDED,
  FAILED: ImageJobOutcome.FAILED,
  CANCELLED: ImageJobOutcome.CANCELLED,
};

function workerMetrics(registry: Registry | undefined) {
  if (!registry) return undefined;
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    jobs: get("luna_image_worker_jobs_total", () => new Counter({ name: "luna_image_worker_jobs_total",
      help: "Jobs handled by image workers, by outcome.", labelNames: ["pool", "outcome"], registers: [registry] })),
    comfySeconds: get("luna_image_worker_comfy_seconds", () => new Histogram({ name: "luna_image_worker_comfy_seconds",
      help: "Time from submitting a prompt to ComfyUI to seeing it finished.", labelNames: ["pool"], registers: [registry],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600] })),
    idleSeconds: get("luna_image_worker_idle_seconds", () => new Histogram({ name: "luna_image_worker_idle_seconds",
      help: "Time a worker spent between finishing one job and taking the next.", registers: [registry],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30] })),
  };
}

export function createImageWorker(config: ImageWorkerConfig, deps: ImageWorkerDeps): ImageWorker {
  const id = config.IMAGE_WORKER_ID ?? `${hostname()}-${process.pid}`;
  const { log, js, nats, store } = deps;
  // Unique per process, so ComfyUI's websocket routes our prompts' events to this process only.
  const comfy = new ComfyClient({ baseUrl: config.COMFYUI_URL, clientId: `luna-${id}-${randomUUID().slice(0, 8)}`,
    requestTimeoutMs: config.IMAGE_WORKER_COMFY_TIMEOUT, log });
  const rpc = createClient(ImageWorkerService, deps.transport);
  /** Held while ComfyUI works for one of our jobs. */
  const gpu = new Mutex();
  const metrics = workerMetrics(deps.registry);
  const heartbeatMs = Math.max(500, Math.floor(config.IMAGE_WORKER_ACK_WAIT / 3));
  let consumers: ConsumerHandle[] = [];
  /** When ComfyUI was last given back (for the idle-time metric). */
  let gpuFreeSince: number | undefined;
  /**
   * Set while a job holds ComfyUI but has not reached it yet (StartJob, render, submit): resolves when it has (or
   * ended without). A finished job's result waits for it, so the next job's start does not compete with the
   * previous job's result being applied (see IMAGE_WORKER_RESULT_YIELD).
   */
  let nextJobReaching: Promise<void> | undefined;
  /**
   * Jobs this worker runs, by id → how to stop them when image-job says they ended (cancel or deadline). One
   * wildcard subscription serves them all, subscribed before any job is taken, so a cancel sent once a job is
   * RUNNING cannot be missed (and no subscribe/unsubscribe per job).
   */
  const cancels = new Map<string, () => void>();
  let cancelSub: Subscription | undefined;

  /** Waits (holding the message) until ComfyUI answers; false when it did not within the configured time. */
  const waitForComfy = async (signal: AbortSignal): Promise<boolean> => {
    // It answered a moment ago (the previous job): no need to ask again before this one.
    if (Date.now() - comfy.lastAnswerAt < 5_000) return true;
    const until = Date.now() + config.IMAGE_WORKER_COMFY_WAIT;
    let warned = false;
    for (;;) {
      try {
        await comfy.ping();
        return true;
      } catch (err) {
        if (!warned) log.warn({ err: (err as Error).message, comfyui: config.COMFYUI_URL }, "ComfyUI is unreachable; waiting before taking the job");
        warned = true;
      }
      if (signal.aborted || Date.now() >= until) return false;
      await sleep(500, undefined, { signal }).catch(() => undefined);
    }
  };

  const publishResult = async (jobId: string, attempt: number, outcome: Exclude<JobOutcome, { outcome: "ABANDONED" }>,
    times: { submittedAt?: Date; finishedAt?: Date }, signal: AbortSignal): Promise<boolean> => {
    const eventId = resultEventId(jobId);
    const ev = create(ImageJobResultSchema, {
      meta: eventMeta(eventId, jobId),
      jobId,
      outcome: OUTCOME[outcome.outcome],
      images: outcome.outcome === "SUCCEEDED" ? outcome.images.map((i) => create(ProducedImageSchema, { ...i, sizeBytes: BigInt(i.sizeBytes) })) : [],
      errorCode: outcome.outcome === "FAILED" ? outcome.code : "",
      errorMessage: outcome.outcome === "FAILED" ? outcome.message : "",
      workerId: id,
      attempt,
      comfyStartedAt: times.submittedAt ? timestampFromDate(times.submittedAt) : undefined,
      comfyFinishedAt: times.finishedAt ? timestampFromDate(times.finishedAt) : undefined,
    });
    const data = toBinary(ImageJobResultSchema, ev);
    let delay = 100;
    for (;;) {
      try {
        await publishEvent(js, Subjects.result, data, { msgId: eventId });
        return true;
      } catch (err) {
        if (signal.aborted) return false;
        log.warn({ err, jobId }, "publishing the job result failed; retrying");
        await sleep(delay, undefined, { signal }).catch(() => undefined);
        delay = Math.min(delay * 2, 5000);
      }
    }
  };

  const handle = (pool: string) => async (msg: ConsumedMessage): Promise<HandlerResult> => {
    const heartbeat = setInterval(() => msg.working(), heartbeatMs);
    const releaseGpu = await gpu.lock();
    // ComfyUI is ours: the pool's other slot may now wait for it to be free again (see `admit` in start()).
    msg.releaseAdmission();
    const taken = Date.now();
    if (gpuFreeSince !== undefined) metrics?.idleSeconds.observe((taken - gpuFreeSince) / 1000);
    let reached!: () => void;
    const reaching = new Promise<void>((resolve) => { reached = resolve; });
    nextJobReaching = reaching;
    /** This job is on ComfyUI (or will not get there): a finished job may publish its result now. */
    const onComfy = () => {
      if (nextJobReaching === reaching) nextJobReaching = undefined;
      reached();
    };
    let gpuHeld = true;
    /** ComfyUI is done with this job (or never got it): the next job may start while this one finishes. */
    const freeGpu = () => {
      onComfy();
      if (!gpuHeld) return;
      gpuHeld = false;
      gpuFreeSince = Date.now();
      releaseGpu();
    };
    try {
      let jobId: string;
      try {
        jobId = fromBinary(ImageJobQueuedSchema, msg.data).jobId;
      } catch {
        jobId = "";
      }
      if (!/^[0-9a-f-]{36}$/.test(jobId)) {
        log.error({ subject: msg.subject, msgId: msg.msgId }, "undecodable job message");
        return "term";
      }
      const jlog = { jobId, pool, delivery: msg.deliveryCount };
      const stop = new AbortController();
      const onShutdown = () => stop.abort("shutdown" satisfies StopReason);
      msg.signal.addEventListener("abort", onShutdown, { once: true });
      // Registered before StartJob (the subscription itself is older), so a cancel sent once the job is RUNNING
      // cannot be missed.
      cancels.set(jobId, () => stop.abort("cancelled" satisfies StopReason));
      let deadlineTimer: NodeJS.Timeout | undefined;
      try {
        if (!(await waitForComfy(stop.signal))) return "retry";
        let start;
        try {
          start = await rpc.startJob({ jobId, workerId: id, deliveryCount: msg.deliveryCount }, { timeoutMs: config.IMAGE_WORKER_RPC_TIMEOUT });
        } catch (err) {
          log.warn({ ...jlog, err }, "image-job StartJob failed; the job goes back to the queue");
          return "retry";
        }
        if (start.action !== StartJobAction.RUN && start.skipReason === "collect" && start.job) {
          // Failed at its deadline without a result (e.g. its worker died after ComfyUI finished): deliver what
          // ComfyUI produced, if it did; image-job turns the job into a success while it still holds the credits.
          const outcome = await collectFinished({ spec: start.job, comfy, store, signal: stop.signal,
            log: { info: (o, m) => log.info({ ...jlog, ...o }, m), warn: (o, m) => log.warn({ ...jlog, ...o }, m), debug: (o, m) => log.debug({ ...jlog, ...o }, m) } })
            .catch((err: unknown) => {
              log.warn({ ...jlog, err }, "could not look for the outputs of a job failed at its deadline");
              return undefined;
            });
          if (outcome?.outcome === "ABANDONED") return "retry";
          if (outcome?.outcome === "SUCCEEDED") {
            freeGpu();
            if (!(await publishResult(jobId, start.attempt, outcome, {}, msg.signal))) return "retry";
            log.info({ ...jlog, images: outcome.images.length }, "collected the outputs of a job failed at its deadline");
            metrics?.jobs.inc({ pool, outcome: "collected" });
            return "ack";
          }
          // Not finished there: it must not keep the GPU busy. The (ignored) failure result tells image-job that no
          // success will come, so the job's credits are released now rather than at the end of the late window.
          await comfy.cancel(jobId).catch(() => undefined);
          await publishResult(jobId, start.attempt, { outcome: "FAILED", code: ErrorCodes.deadlineExceeded, message: "the job did not finish before its deadline" },
            {}, msg.signal);
          log.info({ ...jlog, reason: start.skipReason }, "job skipped");
          metrics?.jobs.inc({ pool, outcome: "skipped" });
          return "ack";
        }
        if (start.action !== StartJobAction.RUN || !start.job) {
          log.info({ ...jlog, reason: start.skipReason }, "job skipped");
          // A job that ended while it was in ComfyUI (e.g. failed at its deadline) must not keep the GPU busy.
          if (msg.deliveryCount > 1 && start.skipReason !== "not_found" && start.skipReason !== "succeeded") await comfy.cancel(jobId).catch(() => undefined);
          metrics?.jobs.inc({ pool, outcome: "skipped" });
          return "ack";
        }
        const deadline = start.runDeadline ? timestampDate(start.runDeadline).getTime() : Date.now() + 3_600_000;
        deadlineTimer = setTimeout(() => stop.abort("deadline" satisfies StopReason), Math.max(0, deadline - Date.now()));
        let lastProgress = 0;
        const times: { submittedAt?: Date; finishedAt?: Date } = {};
        const outcome = await runJob({
          spec: start.job,
          workflow: start.workflow,
          resumed: start.resumed,
          comfy,
          store,
          signal: stop.signal,
          log: { info: (o, m) => log.info({ ...jlog, ...o }, m), warn: (o, m) => log.warn({ ...jlog, ...o }, m), debug: (o, m) => log.debug({ ...jlog, ...o }, m) },
          settings: { historyPollMs: config.IMAGE_WORKER_HISTORY_POLL, maxResubmits: config.IMAGE_WORKER_MAX_RESUBMITS },
          onSubmitted: () => {
            times.submittedAt ??= new Date();
            onComfy();
          },
          onFinished: () => {
            times.finishedAt = new Date();
            if (times.submittedAt) metrics?.comfySeconds.observe({ pool }, (times.finishedAt.getTime() - times.submittedAt.getTime()) / 1000);
            // The prompt is in ComfyUI's history: ComfyUI is free. Its outputs stay readable (/view) while it runs
            // the next job, so downloading them, storing them and publishing the result overlap the next job.
            freeGpu();
          },
          // Its websocket said so a moment earlier: the next job is pulled while the history is read.
          onComfyDone: freeGpu,
          onProgress: (percent, preview) => {
            const now = Date.now();
            if (percent < 100 && now - lastProgress < config.IMAGE_WORKER_PROGRESS_INTERVAL) return;
            lastProgress = now;
            const live = create(ImageJobLiveSchema, { jobId, progressPercent: percent });
            if (preview && config.IMAGE_WORKER_PREVIEWS) {
              live.preview = preview.image;
              live.previewContentType = preview.contentType;
            }
            try {
              nats.publish(Subjects.live(jobId), toBinary(ImageJobLiveSchema, live));
            } catch {
              // live progress is best effort
            }
          },
        });
        if (outcome.outcome === "ABANDONED") {
          log.info(jlog, "worker stopping: job handed back to the queue");
          return "retry";
        }
        // ComfyUI no longer works for this job (finished, interrupted or never given it): the next one may start.
        freeGpu();
        const next = nextJobReaching;
        if (next && config.IMAGE_WORKER_RESULT_YIELD > 0) await yieldTo(next, config.IMAGE_WORKER_RESULT_YIELD);
        if (!(await publishResult(jobId, start.attempt, outcome, times, msg.signal))) return "retry";
        metrics?.jobs.inc({ pool, outcome: outcome.outcome.toLowerCase() });
        log.info({ ...jlog, outcome: outcome.outcome, ...(outcome.outcome === "FAILED" ? { code: outcome.code, message: outcome.message } : {}),
          ...(outcome.outcome === "SUCCEEDED" ? { images: outcome.images.length } : {}) }, "job done");
        return "ack";
      } finally {
        if (deadlineTimer) clearTimeout(deadlineTimer);
        cancels.delete(jobId);
        msg.signal.removeEventListener("abort", onShutdown);
      }
    } finally {
      clearInterval(heartbeat);
      freeGpu();
    }
  };

  /** Waits until `next` settles, at most `ms`. */
  const yieldTo = async (next: Promise<void>, ms: number): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([next, new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); })]);
    clearTimeout(timer);
  };

  return {
    id,
    async start() {
      if (consumers.length > 0) return;
      comfy.connect();
      const cancelPrefix = Subjects.cancel("");
      cancelSub = nats.subscribe(Subjects.cancel("*"), {
        callback: (err, m) => {
          if (!err) cancels.get(m.subject.slice(cancelPrefix.length))?.();
        },
      });
      await nats.flush(); // the server has the subscription before the first job is taken
      consumers = config.IMAGE_WORKER_POOLS.map((pool) => {
        // One slot of the pool at a time waits to pull, and only while ComfyUI is free; the turn passes on once the
        // job pulled under it holds ComfyUI (handle: releaseAdmission). With several pools, each pool may have one
        // pull waiting while ComfyUI is free, so a message of one pool can wait for the job another pool started
        // at the same moment.
        const turn = new Mutex();
        // The same consumer image-job pre-creates for a pool at zero workers (one definition: poolConsumerSpec).
        const spec = poolConsumerSpec(pool, config.IMAGE_WORKER_ACK_WAIT);
        return runConsumer({
          js,
          stream: spec.stream,
          durable: spec.durable,
          filterSubject: spec.filterSubject,
          ackWaitMs: spec.ackWaitMs,
          maxDeliver: config.IMAGE_WORKER_MAX_DELIVER,
          // Short waits: a redelivered job resumes by prompt id, so retrying soon is cheap and safe.
          backoffMs: [500, 2000, 5000, 10_000],
          // One job on ComfyUI and the previous job's tail.
          concurrency: 2,
          admit: async () => {
            const releaseTurn = await turn.lock();
            await gpu.idle();
            return releaseTurn;
          },
          log,
          handle: handle(pool),
        });
      });
      await Promise.all(consumers.map((c) => c.ready));
      log.info({ workerId: id, pools: config.IMAGE_WORKER_POOLS, comfyui: config.COMFYUI_URL }, "image worker started");
    },
    async stop() {
      await Promise.all(consumers.map((c) => c.stop({ graceMs: config.IMAGE_WORKER_DRAIN_TIMEOUT })));
      consumers = [];
      cancelSub?.unsubscribe();
      cancelSub = undefined;
      comfy.close();
    },
    readiness: { name: "comfyui", check: () => comfy.ping() },
  };
}
