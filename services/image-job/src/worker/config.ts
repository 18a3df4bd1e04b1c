// The image worker's settings. It runs beside one ComfyUI (a sidecar in the cluster, in-process in the all-in-one
// mode) and needs no database: NATS, image-job's internal RPC, ComfyUI and the image store.
import * as z from "zod";
import { bool, csv, duration, url } from "@luna/kit";
import { storageConfigSchema } from "../storage/config.js";

const int = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).optional().transform((v) => v ?? def);

export const workerConfigSchema = z.object({
  ...storageConfigSchema.shape,
  /** The ComfyUI this worker drives (never exposed outside its pod). */
  COMFYUI_URL: url("http://127.0.0.1:8188", { protocols: ["http:", "https:"] }),
  /**
   * Image model pools (model ids) this worker takes jobs of; one durable consumer each. Default: the seeded
   * catalog's image models.
   */
  IMAGE_WORKER_POOLS: csv(["flux1-schnell", "sdxl-base-1.0"]).refine(
    (pools) => pools.length > 0 && pools.every((p) => /^[a-z0-9][a-z0-9.-]{0,63}$/.test(p)),
    "expected a comma-separated list of model ids",
  ),
  /** Name in logs and job records; default `<hostname>-<pid>`. */
  IMAGE_WORKER_ID: z.string().min(1).max(200).optional(),
  /** JetStream ack wait of the job queue; the worker signals progress every third of it while a job runs. */
  IMAGE_WORKER_ACK_WAIT: duration("30s"),
  /** Deliveries of one job message before it is dead-lettered (the job then fails at its deadline). */
  IMAGE_WORKER_MAX_DELIVER: int(20, 1, 1000),
  /** How often a running prompt's /history (and /queue) is polled; the websocket is only a fast path. */
  IMAGE_WORKER_HISTORY_POLL: duration("1s"),
  /** Times a prompt lost by ComfyUI (restart) is submitted again before the job fails. */
  IMAGE_WORKER_MAX_RESUBMITS: int(2, 0, 20),
  /** Deadline of one HTTP request to ComfyUI. */
  IMAGE_WORKER_COMFY_TIMEOUT: duration("30s"),
  /** While ComfyUI is unreachable a taken job waits this long (still QUEUED) before it goes back to the queue. */
  IMAGE_WORKER_COMFY_WAIT: duration("30s"),
  /** Fewest milliseconds between two progress messages of a job to watchers. */
  IMAGE_WORKER_PROGRESS_INTERVAL: duration("200ms"),
  /** Forward ComfyUI's preview images to watchers. */
  IMAGE_WORKER_PREVIEWS: bool(true),
  /** Deadline of the StartJob call to image-job. */
  IMAGE_WORKER_RPC_TIMEOUT: duration("10s"),
  /**
   * Longest a finished job's result waits to be published while the next job is on its way to ComfyUI (ComfyUI
   * first: the result is a few milliseconds later, the GPU idles that much less). 0 = publish at once.
   */
  IMAGE_WORKER_RESULT_YIELD: duration("50ms"),
  /**
   * On SIGTERM, how long a running job may go on to finish before it is handed back to the queue (no new job is
   * taken meanwhile). 0 = hand it back at once (another worker resumes or redoes it). ComfyUI must outlive the drain:
   * the comfyui chart keeps it running until the worker has exited (worker.drainSeconds sets this).
   */
  IMAGE_WORKER_DRAIN_TIMEOUT: duration("0s"),
});

export type ImageWorkerConfig = z.infer<typeof workerConfigSchema>;
