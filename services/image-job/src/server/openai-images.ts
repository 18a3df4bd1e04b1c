/**
 * `POST /v1/images/generations`, the OpenAI-compatible door of image-job (issue 22). Synchronous from the client's
 * view: the request becomes an ordinary job — SubmitJob then WatchJob of this module's own ImageService, called
 * in-process as the caller (the kit's direct transport applies the same access rules), so the job has the same
 * validation, per-user job limits, hold, queue and settlement as one submitted over Connect — and the answer waits
 * for it. `model` names a workflow; `size` is one of its sizes ("WxH"); `response_format` is `url` (a signed,
 * expiring URL) or `b64_json`. A client that leaves before the job ends cancels it (its credits are released).
 */
import type { ConnectRouter } from "@connectrpc/connect";
import { createClient } from "@connectrpc/connect";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { JobStatus, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import {
  authenticateOpenAI, badRequest, createDirectTransport, modelNotFound, OpenAIError, readJsonBody, sendJson, serveOpenAI,
  type CatalogCache, type HttpContext, type MethodRules, type NodeServerRequest, type NodeServerResponse,
} from "@luna/kit";
import { verifyImageUrl } from "../domain/url-signing.js";
import type { ImageStore } from "../storage/store.js";

export const OPENAI_IMAGES_PATH = "/v1/images/generations";

export interface OpenAIImagesDeps {
  routes: (router: ConnectRouter) => void;
  rules: MethodRules;
  catalog: Pick<CatalogCache, "getWorkflow" | "loaded">;
  imageStore: ImageStore;
  /** The local store's URL secret (b64_json reads local images from the store, not over HTTP). */
  urlSecret: string;
  /** Longest wait for a job (IMAGE_OPENAI_WAIT_TIMEOUT); then 504 and the job is cancelled. */
  waitTimeoutMs: number;
  log: { error(obj: object, msg?: string): void };
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

/** The validated request. */
export function parseImagesRequest(body: Record<string, unknown>) {
  if (typeof body.model !== "string" || body.model === "") throw badRequest("model", "is required (a workflow id, see GET /v1/models)");
  if (typeof body.prompt !== "string" || body.prompt.trim() === "") throw badRequest("prompt", "is required");
  const n = body.n ?? 1;
  if (!isInt(n) || n < 1) throw badRequest("n", "must be a positive integer");
  let width = 0;
  let height = 0;
  if (body.size !== undefined && body.size !== null && body.size !== "auto") {
    const m = typeof body.size === "string" ? /^(\d{1,5})x(\d{1,5})$/.exec(body.size) : null;
    if (!m) throw badRequest("size", 'must be "WIDTHxHEIGHT", e.g. "1024x1024"');
    width = Number(m[1]);
    height = Number(m[2]);
  }
  const format = body.response_format ?? "url";
  if (format !== "url" && format !== "b64_json") throw badRequest("response_format", 'must be "url" or "b64_json"');
  return { workflowId: body.model, prompt: body.prompt, count: n, width, height, format };
}

function absolute(url: string, req: NodeServerRequest): string {
  if (!url.startsWith("/")) return url;
  const host = req.headers["x-forwarded-host"] ?? req.headers.host ?? req.headers[":authority"];
  const proto = req.headers["x-forwarded-proto"] === "https" ? "https" : "http";
  return host ? `${proto}://${String(host)}${url}` : url;
}

export function openAIImagesRoute(deps: OpenAIImagesDeps): (req: NodeServerRequest, res: NodeServerResponse, ctx: HttpContext) => boolean {
  async function bytesOf(url: string): Promise<Buffer> {
    // A local store's URL is ours: read the object directly. Others (S3) are fetched.
    if (url.startsWith("/") || deps.imageStore.kind === "local") {
      const path = url.startsWith("/") ? url : new URL(url).pathname + new URL(url).search;
      const check = verifyImageUrl({ secret: deps.urlSecret, pathAndQuery: path, now: new Date() });
      if (!check.ok) throw new OpenAIError(500, "could not read the image", "server_error");
      const obj = await deps.imageStore.get(check.key);
      if (!obj) throw new OpenAIError(500, "the image is gone", "server_error");
      return obj.body;
    }
    const r = await fetch(url);
    if (!r.ok) throw new OpenAIError(500, "could not read the image", "server_error");
    return Buffer.from(await r.arrayBuffer());
  }

  return (req, res, ctx) => {
    if ((req.url ?? "").split("?")[0] !== OPENAI_IMAGES_PATH) return false;
    return serveOpenAI(res, async () => {
      if (req.method !== "POST") throw new OpenAIError(405, "use POST", "invalid_request_error", "method_not_allowed");
      const principal = await authenticateOpenAI(req, ctx.verifier);
      const r = parseImagesRequest(await readJsonBody(req));
      if (!deps.catalog.loaded) throw new OpenAIError(503, "the model catalog is not loaded yet; try again shortly", "server_error", "catalog_unavailable");
      if (!deps.catalog.getWorkflow(r.workflowId)?.workflow) throw modelNotFound(r.workflowId);
      // The job is the caller's: the service's own handlers, with the caller's principal and access rules.
      const images = createClient(ImageService, createDirectTransport({
        routes: deps.routes, rules: deps.rules, principal, defaultTimeoutMs: deps.waitTimeoutMs,
        fallback: () => { throw new Error("ImageService has no client-streaming methods"); },
      }));
      const submitted = (await images.submitJob({ workflowId: r.workflowId, prompt: r.prompt, width: r.width, height: r.height, count: r.count })).job!;
      const ac = new AbortController();
      let job: Job = submitted;
      const gone = () => {
        if (job.status === JobStatus.QUEUED || job.status === JobStatus.RUNNING) {
          ac.abort();
          void images.cancelJob({ jobId: submitted.id }).catch(() => undefined);
        }
      };
      res.on("close", gone);
      const timer = setTimeout(() => ac.abort(), deps.waitTimeoutMs);
      try {
        for await (const update of images.watchJob({ jobId: submitted.id }, { signal: ac.signal })) {
          if (update.job) job = update.job;
          if (job.status !== JobStatus.QUEUED && job.status !== JobStatus.RUNNING) break;
        }
      } catch (err) {
        if (!ac.signal.aborted) throw err;
      } finally {
        clearTimeout(timer);
      }
      if (job.status === JobStatus.QUEUED || job.status === JobStatus.RUNNING) {
        if (!res.writableEnded && !res.destroyed) {
          await images.cancelJob({ jobId: submitted.id }).catch(() => undefined);
          throw new OpenAIError(504, `the image was not ready within ${Math.round(deps.waitTimeoutMs / 1000)} s; the job was cancelled`, "server_error", "timeout");
        }
        return;
      }
      if (job.status !== JobStatus.SUCCEEDED) {
        const status = job.errorCode === "model_unavailable" || job.errorCode === "queue_timeout" ? 503 : 500;
        throw new OpenAIError(status, job.errorMessage || "the image job failed", "server_error", job.errorCode || "job_failed");
      }
      const data = r.format === "url"
        ? job.images.map((i) => ({ url: absolute(i.url, req), revised_prompt: null }))
        : await Promise.all(job.images.map(async (i) => ({ b64_json: (await bytesOf(i.url)).toString("base64"), revised_prompt: null })));
      sendJson(res, 200, {
        created: Math.floor(Date.now() / 1000), data,
        luna: { job_id: job.id, credits_charged: job.creditsCharged.toString(), seed: job.seed.toString() },
      });
    }, deps.log);
  };
}
