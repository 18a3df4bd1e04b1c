// Connect handlers of image-job: the user-facing ImageService and the workers' internal ImageWorkerService.
// Each handler validates its input (INVALID_ARGUMENT names the field), then calls the store; errors cross the wire
// as Connect codes with a human message.
import { randomUUID } from "node:crypto";
import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Client, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { ModelStatus, type CatalogWorkflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import {
  ImageService,
  WatchJobResponseSchema,
} from "@luna/contracts/luna/image/v1/image_service_pb.js";
import {
  ImageWorkerService,
  JobSpecSchema,
  StartJobAction,
  StartJobResponseSchema,
} from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { ImageJobLiveSchema, type ImageJobLive } from "@luna/contracts/luna/events/v1/image_events_pb.js";
import type { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { HoldStatus } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import type { LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import {
  WorkflowParamError,
  availableCreditsOf,
  failedPrecondition,
  invalidArgument,
  invalidPageSize,
  invalidPageToken,
  isUuid,
  notEnoughCredits,
  notFound,
  requirePrincipal,
  resolveImageJobParams,
  resourceExhausted,
  unavailable,
  type MethodRules,
} from "@luna/kit";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  Subjects,
  checkIdempotencyKey,
  holdIdempotencyKey,
  isFinal,
  jobIdForKey,
  requestHash,
  runTimeoutMs,
  type RunDeadlinePolicy,
} from "../domain/job.js";
import { decodePageToken, encodePageToken, pageSize } from "../domain/page-token.js";
import { IdempotencyConflictError, JobLimitError, type JobStore, type JobWithImages } from "../data/job-store.js";
import type { JobRow } from "../data/rows.js";
import type { Lifecycle } from "../lifecycle.js";
import type { ImageJobMetrics } from "../metrics.js";
import { imageToProto, jobStatusFromProto, jobToProto, type Signer } from "./convert.js";
import { LiveQueue } from "./live-queue.js";
import type { QueueEstimator } from "./queue-estimate.js";

/** Access rules: ImageService for signed-in users, ImageWorkerService for other Luna services (the workers). */
export const authRules: MethodRules = {
  "luna.image.v1.ImageService": "user",
  "luna.image.v1.ImageWorkerService": "internal",
};

export interface RouteDeps {
  store: JobStore;
  catalog: { readonly loaded: boolean; getWorkflow(id: string): CatalogWorkflow | undefined };
  credits: Client<typeof CreditsService>;
  /** Billing's per-user request rates (feature "image"), checked before a new job's reserve. */
  limits: Client<typeof LimitsService>;
  lifecycle: Lifecycle;
  signer: Signer;
  estimateQueue: QueueEstimator;
  nc: Pick<NatsConnection, "subscribe">;
  metrics: ImageJobMetrics;
  log: { warn(obj: object, msg?: string): void };
  settings: {
    runDeadline: RunDeadlinePolicy;
    queueTimeoutMs: number;
    deadlineGraceMs: number;
    watchRefreshMs: number;
    callTimeoutMs: number;
  };
}

const WORKFLOW_ID_RE = /^[a-z0-9][a-z0-9.-]{0,63}$/;
/** Time a hold must still have when a retried submission gets it back from billing. */
const MIN_HOLD_LEFT_MS = 60_000;

function checkUuid(field: string, v: string): string {
  if (v === "") throw invalidArgument(field, "is required");
  if (!isUuid(v)) throw invalidArgument(field, "must be an id returned by this service (a UUID)");
  return v.toLowerCase();
}

/** A billing error during the submission, kept apart from the submission's own errors. */
class BillingCallError extends Error {
  constructor(readonly callError: ConnectError) {
    super(callError.message);
  }
}

/** The user is over billing's per-minute limit for image jobs. */
class RateLimitedError extends Error {}

/** A list request's page size (0 = `defaultSize`, at most 100) and decoded cursor; INVALID_ARGUMENT naming the field. */
function pageRequest(page: { pageSize: number; pageToken: string } | undefined, defaultSize: number): { size: number; cursor: ReturnType<typeof decodePageToken> } {
  let size: number;
  try {
    size = pageSize(page?.pageSize ?? 0, defaultSize, 100);
  } catch {
    throw invalidPageSize("page.page_size", page?.pageSize ?? 0);
  }
  try {
    return { size, cursor: decodePageToken(page?.pageToken ?? "") };
  } catch {
    throw invalidPageToken("page.page_token");
  }
}

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  const { store, catalog, credits, limits, lifecycle, signer, settings } = deps;
  let warnedShortHold = false;

  const toJob = async (job: JobWithImages) => jobToProto(job, job.images, signer, await deps.estimateQueue(job));

  const loadJob = async (ctx: HandlerContext, jobId: string): Promise<JobWithImages> => {
    const { userId } = requirePrincipal(ctx, "user");
    checkUuid("job_id", jobId);
    const job = await store.findJob(jobId, userId);
    if (!job) throw notFound(`job ${jobId}`);
    return job;
  };

  return (router) => {
    router.service(ImageService, {
      async submitJob(req, ctx) {
        const { userId, role } = requirePrincipal(ctx, "user");
        if (req.workflowId === "") throw invalidArgument("workflow_id", "is required");
        if (!WORKFLOW_ID_RE.test(req.workflowId)) throw invalidArgument("workflow_id", "must be a workflow id such as flux-schnell");
        if (req.idempotencyKey !== "") {
          const problem = checkIdempotencyKey(req.idempotencyKey);
          if (problem) throw invalidArgument("idempotency_key", problem);
        }
        if (req.width < 0) throw invalidArgument("width", "must not be negative");
        if (req.height < 0) throw invalidArgument("height", "must not be negative");
        if (req.count < 0) throw invalidArgument("count", "must not be negative");
        if (req.steps < 0) throw invalidArgument("steps", "must not be negative");
        if (!catalog.loaded) throw unavailable("the model catalog is not loaded yet; retry shortly");
        const wf = catalog.getWorkflow(req.workflowId);
        if (!wf?.workflow) throw invalidArgument("workflow_id", `unknown workflow "${req.workflowId}"`);
        if (wf.workflow.status === ModelStatus.DISABLED) {
          throw failedPrecondition(`workflow ${req.workflowId} is disabled${wf.workflow.statusReason ? `: ${wf.workflow.statusReason}` : ""}`);
        }
        let resolved;
        try {
          resolved = resolveImageJobParams(wf, {
            prompt: req.prompt, negativePrompt: req.negativePrompt, width: req.width, height: req.height, count: req.count,
            steps: req.steps, seed: req.seed, styleId: req.styleId,
          });
        } catch (err) {
          if (err instanceof WorkflowParamError) throw invalidArgument(err.field, err.message.slice(err.field.length + 2));
          throw err;
        }

        const idempotencyKey = req.idempotencyKey || randomUUID();
        const jobId = req.idempotencyKey ? jobIdForKey(userId, req.idempotencyKey) : idempotencyKey;
        const pricePerImage = wf.workflow.pricePerImage;
        const amount = pricePerImage * BigInt(resolved.count);
        const runTimeout = runTimeoutMs(settings.runDeadline, resolved);
        const now = Date.now();
        // The hold outlives the worst case: waiting in the queue, running, the sweeper's grace, settling.
        const holdTtlMs = settings.queueTimeoutMs + runTimeout + settings.deadlineGraceMs + 5 * 60_000;
        const newJob = {
          id: jobId, userId, idempotencyKey, workflowId: wf.workflow.id, modelId: wf.workflow.modelId,
          requestHash: requestHash({ workflowId: req.workflowId, prompt: req.prompt, negativePrompt: req.negativePrompt, width: req.width,
            height: req.height, count: req.count, steps: req.steps, seed: req.seed, styleId: req.styleId }),
          prompt: resolved.prompt, negativePrompt: resolved.negativePrompt, width: resolved.width, height: resolved.height,
          count: resolved.count, steps: resolved.steps, seed: BigInt(resolved.seed), styleId: resolved.styleId, pricePerImage,
          runTimeoutMs: runTimeout, queueDeadline: new Date(now + settings.queueTimeoutMs),
        };
        let submitted;
        try {
          submitted = await store.submit(newJob, async () => {
            // Counted only for a new job (a retry of a stored one is answered before this), before any credits move.
            let rate;
            try {
              rate = await limits.checkRateLimit({ userId, role: role === "admin" ? "admin" : "user", feature: "image" }, { timeoutMs: settings.callTimeoutMs });
            } catch (err) {
              throw new BillingCallError(ConnectError.from(err));
            }
            if (!rate.allowed) {
              const s = rate.retryAfter ? Math.max(1, Math.ceil(Number(rate.retryAfter.seconds) + rate.retryAfter.nanos / 1e9)) : 1;
              throw new RateLimitedError(`rate limit: at most ${rate.limit} image jobs per minute; retry in ${s}s`);
            }
            if (amount <= 0n) return { holdId: "", amount: 0n };
            let r;
            let replayed = false;
            try {
              r = await credits.reserve({
                accountId: userId, amount, reason: "image", reference: jobId, idempotencyKey: holdIdempotencyKey(jobId),
                ttl: { seconds: BigInt(Math.ceil(holdTtlMs / 1000)), nanos: 0 },
              }, { timeoutMs: settings.callTimeoutMs, onHeader: (h) => { replayed = h.get("idempotent-replayed") === "true"; } });
              // A retry whose first attempt never committed gets the original hold back: the sweeper may have
              // released it since (no job named it), so it must still be open.
              if (replayed && (await credits.getHold({ holdId: r.holdId }, { timeoutMs: settings.callTimeoutMs })).hold?.status !== HoldStatus.OPEN) {
                throw failedPrecondition("idempotency_key: this key's credit hold was released; submit with a new key");
              }
            } catch (err) {
              if (err instanceof ConnectError && err.code === Code.FailedPrecondition && err.rawMessage.startsWith("idempotency_key:")) throw err;
              throw new BillingCallError(ConnectError.from(err));
            }
            const expiresAt = r.expiresAt ? timestampDate(r.expiresAt).getTime() : Number.POSITIVE_INFINITY;
            // A retry whose first attempt never committed gets the original hold back; it must still be usable.
            if (expiresAt < Date.now() + MIN_HOLD_LEFT_MS) {
              throw failedPrecondition("idempotency_key: this key's credit hold has expired; submit with a new key");
            }
            if (expiresAt < now + holdTtlMs - 60_000 && !warnedShortHold) {
              // Billing clamps hold lifetimes (BILLING_HOLD_MAX_TTL): a job finishing after its hold expired is not charged.
              warnedShortHold = true;
              deps.log.warn({ wantedMs: holdTtlMs, gotMs: expiresAt - now }, "billing granted a shorter hold than an image job may need; raise BILLING_HOLD_MAX_TTL or lower IMAGE_QUEUE_TIMEOUT / IMAGE_RUN_DEADLINE_MAX");
            }
            return { holdId: r.holdId, amount: r.amount };
          });
        } catch (err) {
          if (err instanceof JobLimitError) throw resourceExhausted(err.message);
          if (err instanceof RateLimitedError) throw resourceExhausted(err.message);
          if (err instanceof IdempotencyConflictError) throw failedPrecondition(err.message);
          if (err instanceof BillingCallError) {
            const c = err.callError;
            if (c.code === Code.ResourceExhausted) {
              // One statement (the kit's wording) with billing's available credits, not billing's message appended.
              throw notEnoughCredits(`this job (${resolved.count} × ${pricePerImage})`, amount, availableCreditsOf(c.rawMessage) ?? 0n);
            }
            if (c.code === Code.FailedPrecondition || c.code === Code.NotFound) throw failedPrecondition(`credits: ${c.rawMessage}`);
            throw unavailable("billing is unavailable; retry shortly");
          }
          throw err;
        }
        if (!submitted.replayed) deps.metrics.submitted.inc({ pool: newJob.modelId });
        return { job: await toJob(submitted.job) };
      },

      async getJob(req, ctx) {
        return { job: await toJob(await loadJob(ctx, req.jobId)) };
      },

      async *watchJob(req, ctx) {
        const { userId } = requirePrincipal(ctx, "user");
        checkUuid("job_id", req.jobId);
        const live = new LiveQueue<ImageJobLive>(64);
        // Subscribe before the first read, so no change between the read and the subscription is missed.
        const sub = deps.nc.subscribe(Subjects.live(req.jobId), {
          callback: (err, msg) => {
            if (err) return;
            try {
              live.push(fromBinary(ImageJobLiveSchema, msg.data));
            } catch {
              // not ours: ignore
            }
          },
        });
        try {
          let row = await store.findJob(req.jobId, userId);
          if (!row) throw notFound(`job ${req.jobId}`);
          let job = await toJob(row);
          yield create(WatchJobResponseSchema, { job });
          while (!isFinal(row.status) && !ctx.signal.aborted) {
            const msg = await live.next(settings.watchRefreshMs, ctx.signal);
            if (ctx.signal.aborted) break;
            const progressOnly = msg !== undefined && msg.status === JobStatus.UNSPECIFIED;
            if (progressOnly && row.status === "RUNNING") {
              yield create(WatchJobResponseSchema, { job, progressPercent: msg.progressPercent, preview: msg.preview,
                previewContentType: msg.previewContentType });
              continue;
            }
            const next = await store.findJob(req.jobId, userId);
            if (!next) return;
            const nextJob = await toJob(next);
            const changed = next.status !== row.status || nextJob.queuePosition !== job.queuePosition || nextJob.queuePhase !== job.queuePhase ||
              next.images.length !== row.images.length;
            row = next;
            job = nextJob;
            const update: MessageInitShape<typeof WatchJobResponseSchema> = { job };
            if (progressOnly) Object.assign(update, { progressPercent: msg.progressPercent, preview: msg.preview, previewContentType: msg.previewContentType });
            if (changed || progressOnly) yield create(WatchJobResponseSchema, update);
          }
        } finally {
          sub.unsubscribe();
        }
      },

      async listJobs(req, ctx) {
        const { userId } = requirePrincipal(ctx, "user");
        const { size, cursor } = pageRequest(req.page, 20);
        let status: string | undefined;
        if (req.status !== JobStatus.UNSPECIFIED) {
          status = jobStatusFromProto(req.status);
          if (!status) throw invalidArgument("status", `unknown status ${req.status}`);
        }
        const rows = await store.listJobs(userId, cursor, size, status);
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return {
          jobs: await Promise.all(page.map(toJob)),
          page: { nextPageToken: rows.length > size && last ? encodePageToken(last) : "" },
        };
      },

      async listImages(req, ctx) {
        const { userId } = requirePrincipal(ctx, "user");
        const { size, cursor } = pageRequest(req.page, 30);
        const rows = await store.listImages(userId, cursor, size);
        const page = rows.slice(0, size);
        const last = page[page.length - 1];
        return {
          images: await Promise.all(page.map((i) => imageToProto(i, signer))),
          page: { nextPageToken: rows.length > size && last ? encodePageToken(last) : "" },
        };
      },

      async cancelJob(req, ctx) {
        const { userId } = requirePrincipal(ctx, "user");
        checkUuid("job_id", req.jobId);
        const out = await store.cancel(req.jobId, userId);
        if (!out) throw notFound(`job ${req.jobId}`);
        lifecycle.changed(out.job, out.previousStatus);
        return { job: await toJob(out.job) };
      },

      async deleteImage(req, ctx) {
        const { userId } = requirePrincipal(ctx, "user");
        checkUuid("image_id", req.imageId);
        const img = await store.findImage(userId, req.imageId);
        if (!img) throw notFound(`image ${req.imageId}`);
        // Object first: if storage fails the record stays and the call can be repeated.
        try {
          await signer.store.delete(img.storageKey);
        } catch {
          throw unavailable("image storage is unavailable; retry shortly");
        }
        await store.deleteImage(userId, req.imageId);
        return {};
      },
    });

    router.service(ImageWorkerService, {
      async startJob(req, ctx) {
        requirePrincipal(ctx, "internal");
        checkUuid("job_id", req.jobId);
        if (req.workerId.length === 0 || req.workerId.length > 200) throw invalidArgument("worker_id", "must be 1-200 characters");
        if (!catalog.loaded) throw unavailable("the model catalog is not loaded yet; retry shortly");
        const out = await store.startJob(req.jobId, req.workerId);
        const spec = (job: JobRow) => create(JobSpecSchema, {
          jobId: job.id, userId: job.userId, workflowId: job.workflowId, modelId: job.modelId, prompt: job.prompt,
          negativePrompt: job.negativePrompt, width: job.width, height: job.height, count: job.count, steps: job.steps,
          seed: job.seed, styleId: job.styleId,
        });
        if (out.kind === "skip") {
          if (out.finished) lifecycle.changed(out.finished.job, out.finished.previousStatus);
          // "collect": failed at its deadline without a result; the worker collects ComfyUI's finished outputs, if any.
          return create(StartJobResponseSchema, { action: StartJobAction.SKIP, skipReason: out.reason, job: out.job ? spec(out.job) : undefined });
        }
        const job = out.job;
        if (!out.resumed) lifecycle.changed(job, "QUEUED");
        return create(StartJobResponseSchema, {
          action: StartJobAction.RUN,
          job: spec(job),
          // Unset when the workflow left the catalog: the worker then fails the job (invalid_workflow).
          workflow: catalog.getWorkflow(job.workflowId),
          runDeadline: job.runDeadline ? timestampFromDate(job.runDeadline) : undefined,
          attempt: job.attempts,
          resumed: out.resumed,
        });
      },
    });
  };
}
