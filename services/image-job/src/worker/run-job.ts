// Runs one job on ComfyUI: render the curated template, submit it under prompt_id = job id (or find it again when
// resuming), follow it by websocket and /history polling, collect and store its images. Returns how it ended; it
// never throws for ComfyUI's or the job's faults (only for programming errors).
import { setTimeout as sleep } from "node:timers/promises";
import type { CatalogWorkflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { JobSpec } from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { renderWorkflow, WorkflowParamError } from "@luna/kit";
import { ErrorCodes, imageStorageKey } from "../domain/job.js";
import type { ImageStore } from "../storage/store.js";
import { ComfyUnavailableError, pngSize, type ComfyClient, type HistoryState } from "./comfy-client.js";

export interface ProducedImageInfo {
  index: number;
  storageKey: string;
  width: number;
  height: number;
  sizeBytes: number;
  contentType: string;
}

export type JobOutcome =
  | { outcome: "SUCCEEDED"; images: ProducedImageInfo[] }
  | { outcome: "FAILED"; code: string; message: string }
  | { outcome: "CANCELLED" }
  /** The worker is stopping: leave the prompt to ComfyUI; the next worker resumes it. */
  | { outcome: "ABANDONED" };

/** Why the job's abort signal fired. */
export type StopReason = "cancelled" | "deadline" | "shutdown";

export interface RunJobOptions {
  spec: JobSpec;
  workflow: CatalogWorkflow | undefined;
  /** True when the job was RUNNING already (look it up in ComfyUI before generating). */
  resumed: boolean;
  comfy: ComfyClient;
  store: ImageStore;
  /** Aborted with a StopReason. */
  signal: AbortSignal;
  /** Progress 0-100 and previews, for watchers. */
  onProgress(percent: number, preview?: { image: Buffer; contentType: string }): void;
  /** Marks the moment ComfyUI accepted the prompt / reported it finished (for metrics and results). */
  onSubmitted?(): void;
  onFinished?(): void;
  /**
   * ComfyUI says (websocket) it finished executing the prompt, before the history is read: it is free for the next
   * job. May come more than once, or never (a silent websocket: then onFinished is the first sign).
   */
  onComfyDone?(): void;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; debug(obj: object, msg?: string): void };
  settings: {
    historyPollMs: number;
    maxResubmits: number;
  };
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2000;

function stopReason(signal: AbortSignal): StopReason | undefined {
  return signal.aborted ? ((signal.reason as StopReason | undefined) ?? "shutdown") : undefined;
}

/** Waits `ms` or until the signal aborts (never throws). */
async function pause(ms: number, signal: AbortSignal): Promise<void> {
  await sleep(ms, undefined, { signal }).catch(() => undefined);
}

/**
 * Calls `fn` until it succeeds, retrying transient ComfyUI/storage errors with backoff; returns undefined once the
 * signal aborts. Other errors propagate.
 */
async function retrying<T>(signal: AbortSignal, log: RunJobOptions["log"], what: string, fn: () => Promise<T>, transient: (err: unknown) => boolean): Promise<T | undefined> {
  let delay = RETRY_MIN_MS;
  let failures = 0;
  for (;;) {
    if (signal.aborted) return undefined;
    try {
      return await fn();
    } catch (err) {
      if (!transient(err)) throw err;
      failures++;
      if (failures === 1 || failures % 20 === 0) log.warn({ err: (err as Error).message, failures }, `${what} failed; retrying`);
      await pause(delay, signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }
}

const isComfyTransient = (err: unknown) => err instanceof ComfyUnavailableError;

export async function runJob(o: RunJobOptions): Promise<JobOutcome> {
  const { spec, comfy, signal, log } = o;
  const promptId = spec.jobId;

  const onStop = async (): Promise<JobOutcome> => {
    const reason = stopReason(signal);
    if (reason === "shutdown") return { outcome: "ABANDONED" };
    // Interrupt whether it runs or waits in ComfyUI's queue; then report.
    await comfy.cancel(promptId).catch(() => undefined);
    return reason === "cancelled"
      ? { outcome: "CANCELLED" }
      : { outcome: "FAILED", code: ErrorCodes.deadlineExceeded, message: "the job did not finish before its deadline" };
  };

  if (!o.workflow) return { outcome: "FAILED", code: ErrorCodes.invalidWorkflow, message: `workflow ${spec.workflowId} is no longer in the catalog` };
  let graph: unknown;
  try {
    graph = renderWorkflow(o.workflow, {
      prompt: spec.prompt, negativePrompt: spec.negativePrompt, width: spec.width, height: spec.height, count: spec.count,
      steps: spec.steps, seed: Number(spec.seed), styleId: spec.styleId, filenamePrefix: `luna/${spec.jobId}`,
    });
  } catch (err) {
    const message = err instanceof WorkflowParamError ? `the workflow no longer accepts this job: ${err.message}` : (err as Error).message;
    return { outcome: "FAILED", code: ErrorCodes.invalidWorkflow, message };
  }

  // Progress and previews from the websocket; a "finished" event triggers an immediate history check.
  let wake: (() => void) | undefined;
  let finishedHint = false;
  let latestPreview: { image: Buffer; contentType: string } | undefined;
  const unsubscribe = comfy.onPrompt(promptId, (ev) => {
    if (ev.type === "progress") {
      o.onProgress(Math.min(100, Math.floor((ev.value / ev.max) * 100)), latestPreview);
      latestPreview = undefined;
    } else if (ev.type === "preview") {
      latestPreview = { image: ev.image, contentType: ev.contentType };
    } else {
      o.onComfyDone?.();
      finishedHint = true;
      wake?.();
    }
  });

  try {
    let resubmits = 0;
    let submitted = false;

    /**
     * Where ComfyUI has the prompt: still queued or running, finished (its history), or nowhere. Queue first, then
     * history: a prompt moves from the queue to the history atomically, so this order cannot miss it.
     */
    const locate = async (): Promise<"queued" | HistoryState | undefined | "stopped"> => {
      const where = await retrying(signal, log, "ComfyUI queue lookup", () => comfy.queueState(promptId), isComfyTransient);
      if (signal.aborted) return "stopped";
      if (where) return "queued";
      const h = await retrying(signal, log, "ComfyUI history lookup", () => comfy.history(promptId), isComfyTransient);
      return signal.aborted ? "stopped" : h;
    };

    /**
     * Submits the prompt. A failed attempt (timeout, connection cut) may still have been accepted, so before trying
     * again it looks the prompt up: never generate twice. Returns an outcome only when the job ends here.
     */
    const submit = async (): Promise<JobOutcome | undefined> => {
      let delay = 100;
      for (;;) {
        if (signal.aborted) return onStop();
        try {
          const r = await comfy.submit(promptId, graph);
          if (!r.ok && r.kind === "invalid") return { outcome: "FAILED", code: ErrorCodes.invalidWorkflow, message: r.message };
          break;
        } catch (err) {
          if (!isComfyTransient(err)) throw err;
          log.warn({ err: (err as Error).message }, "ComfyUI submit failed; checking whether it arrived before trying again");
          await pause(delay, signal);
          delay = Math.min(delay * 2, RETRY_MAX_MS);
          const found = await locate();
          if (found === "stopped") return onStop();
          if (found === "queued") break;
          if (found) {
            o.onFinished?.();
            return collect(o, found);
          }
        }
      }
      submitted = true;
      o.onSubmitted?.();
      return undefined;
    };

    if (o.resumed) {
      // A previous worker may have submitted it: never generate twice.
      const found = await locate();
      if (found === "stopped") return await onStop();
      if (found === "queued") {
        submitted = true;
        log.info({ jobId: promptId }, "resumed job is still in ComfyUI; following it");
      } else if (found) {
        log.info({ jobId: promptId, state: found.state }, "resumed job already finished in ComfyUI; collecting it");
        o.onFinished?.();
        return await collect(o, found);
      }
    }
    if (!submitted) {
      const ended = await submit();
      if (ended) return ended;
    }

    // Follow until the history has it. Every poll: queue, then history; a prompt in neither twice in a row was lost
    // (ComfyUI restarted) and is submitted again, a bounded number of times.
    let missing = 0;
    let hintRetries = 0;
    for (;;) {
      if (signal.aborted) return await onStop();
      if (!finishedHint) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener("abort", done);
            wake = undefined;
            resolve();
          };
          const timer = setTimeout(done, o.settings.historyPollMs);
          signal.addEventListener("abort", done, { once: true });
          wake = done;
        });
        if (signal.aborted) return await onStop();
      }
      const hinted = finishedHint;
      finishedHint = false;
      let where: "running" | "pending" | undefined;
      let h: HistoryState | undefined;
      try {
        where = hinted ? undefined : await comfy.queueState(promptId);
        if (!where) h = await comfy.history(promptId);
      } catch (err) {
        if (!isComfyTransient(err)) throw err;
        log.debug({ err: (err as Error).message }, "ComfyUI unreachable while following a job");
        missing = 0;
        continue;
      }
      if (h) {
        o.onFinished?.();
        return await collect(o, h);
      }
      if (where) {
        missing = 0;
        continue;
      }
      if (hinted && hintRetries < 10) {
        // The websocket said "finished" before the history was written: look again shortly (then fall back to polling).
        hintRetries++;
        await pause(20, signal);
        finishedHint = true;
        continue;
      }
      hintRetries = 0;
      if (hinted) continue;
      missing++;
      if (missing < 2) continue;
      if (resubmits >= o.settings.maxResubmits) {
        return { outcome: "FAILED", code: ErrorCodes.comfyuiLost, message: "ComfyUI lost the job (restarted?) too many times" };
      }
      resubmits++;
      missing = 0;
      log.warn({ jobId: promptId, resubmits }, "ComfyUI lost the job (not queued, no history); submitting it again");
      const ended = await submit();
      if (ended) return ended;
    }
  } finally {
    unsubscribe();
  }
}

/**
 * A job that ended without a result from its worker (failed at its deadline): its outputs, when ComfyUI's history
 * has a success for it; undefined otherwise (queued, running, failed or unknown there). Never submits anything.
 */
export async function collectFinished(o: Pick<RunJobOptions, "spec" | "comfy" | "store" | "signal" | "log">): Promise<JobOutcome | undefined> {
  const h = await o.comfy.history(o.spec.jobId);
  if (!h || h.state !== "success") return undefined;
  return collect(o, h);
}

/** Turns a history entry into the job's outcome, downloading and storing the images of a success. */
async function collect(o: Pick<RunJobOptions, "spec" | "comfy" | "store" | "signal" | "log">, h: HistoryState): Promise<JobOutcome> {
  const { spec, signal, log } = o;
  if (h.state === "error") {
    const reason = stopReason(signal);
    if (h.interrupted && reason === "cancelled") return { outcome: "CANCELLED" };
    if (h.interrupted && reason === "deadline") return { outcome: "FAILED", code: ErrorCodes.deadlineExceeded, message: "the job did not finish before its deadline" };
    return { outcome: "FAILED", code: ErrorCodes.executionError, message: h.interrupted ? "generation was interrupted in ComfyUI" : h.message };
  }
  const refs = h.images.slice(0, spec.count);
  if (refs.length === 0) return { outcome: "FAILED", code: ErrorCodes.noOutputs, message: "ComfyUI finished without producing an image" };
  // Download and store the images in parallel: a batch is a few files on the same host.
  const results = await Promise.all(refs.map(async (ref, index): Promise<ProducedImageInfo | JobOutcome> => {
    let bytes: Buffer | undefined;
    try {
      bytes = await retrying(signal, log, "ComfyUI /view", () => o.comfy.view(ref), isComfyTransient);
    } catch (err) {
      return { outcome: "FAILED", code: ErrorCodes.noOutputs, message: (err as Error).message };
    }
    if (bytes === undefined) return stopped(signal);
    const size = pngSize(bytes);
    if (!size) return { outcome: "FAILED", code: ErrorCodes.noOutputs, message: `ComfyUI output ${ref.filename} is not a PNG` };
    const key = imageStorageKey(spec.jobId, index);
    const stored = await retrying(signal, log, "image store put", async () => {
      await o.store.put(key, bytes, "image/png");
      return true;
    }, () => true);
    if (!stored) return stopped(signal);
    return { index, storageKey: key, width: size.width, height: size.height, sizeBytes: bytes.length, contentType: "image/png" };
  }));
  const failed = results.find((r): r is JobOutcome => "outcome" in r);
  if (failed) return failed;
  const images = results as ProducedImageInfo[];
  return { outcome: "SUCCEEDED", images };
}

function stopped(signal: AbortSignal): JobOutcome {
  const reason = stopReason(signal);
  if (reason === "cancelled") return { outcome: "CANCELLED" };
  if (reason === "deadline") return { outcome: "FAILED", code: ErrorCodes.deadlineExceeded, message: "the job did not finish before its deadline" };
  return { outcome: "ABANDONED" };
}
