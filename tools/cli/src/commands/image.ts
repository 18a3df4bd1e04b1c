// Image commands: `image` (submit a job, follow it with a progress bar, save the PNGs) and `gallery`.
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { JobStatus, QueuePhase, type Image, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { intArg, str, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { CliError, EXIT_INTERRUPTED, UsageError } from "../errors.js";
import { aboutSeconds, clip, count, dateTime, table } from "../format.js";
import type { Output } from "../io.js";
import { collectPages } from "./pages.js";

const DEFAULT_GALLERY_LIMIT = 30;
const BAR_WIDTH = 24;
/** Without a terminal, progress is reported as a line at every status change and at every this many percent. */
const PLAIN_PROGRESS_STEP = 25;

/** "1024x768" → [1024, 768]. */
export function parseSize(text: string, command: string): [number, number] {
  const m = /^(\d{2,5})x(\d{2,5})$/i.exec(text.trim());
  if (!m) throw new UsageError(`--size must look like 1024x1024, got "${text}"`, command);
  return [Number(m[1]), Number(m[2])];
}

export function statusWord(job: Job, now = Date.now()): string {
  switch (job.status) {
    case JobStatus.QUEUED:
      // The pool scaled to zero and is waking a GPU for it.
      if (job.queuePhase === QueuePhase.WAITING_FOR_GPU) {
        return `waiting for a GPU (${aboutSeconds(job.gpuReadyAt ? timestampMs(job.gpuReadyAt) - now : 0)})`;
      }
      return job.queuePosition > 0 ? `queued (${job.queuePosition} ahead)` : "queued (next)";
    case JobStatus.RUNNING:
      return "generating";
    case JobStatus.SUCCEEDED:
      return "done";
    case JobStatus.FAILED:
      return "failed";
    case JobStatus.CANCELLED:
      return "cancelled";
    default:
      return "waiting";
  }
}

/** A progress bar redrawn in place on a terminal, or sparse plain lines otherwise (logs, CI). */
export class ProgressView {
  private lastLine = "";
  private lastStep = -1;

  constructor(private readonly out: Output) {}

  update(job: Job, percent: number): void {
    const pct = job.status === JobStatus.SUCCEEDED ? 100 : Math.max(0, Math.min(100, percent));
    const word = statusWord(job);
    if (this.out.isTTY) {
      const filled = Math.round((pct / 100) * BAR_WIDTH);
      this.out.write(`\r\x1b[2K[${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}] ${String(pct).padStart(3)}%  ${word}`);
      return;
    }
    const step = Math.floor(pct / PLAIN_PROGRESS_STEP);
    if (word === this.lastLine && step === this.lastStep) return;
    this.lastLine = word;
    this.lastStep = step;
    this.out.write(`${word} ${pct}%\n`);
  }

  end(): void {
    if (this.out.isTTY) this.out.write("\n");
  }
}

/** Downloads an image's signed URL (relative URLs are on the API server) into `dir`; returns the file path. */
async function saveImage(ctx: Context, image: Image, dir: string): Promise<string> {
  const url = new URL(image.url, `${ctx.settings.url}/`);
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(ctx.settings.timeoutMs) });
  } catch (err) {
    throw new CliError(`downloading image ${image.id} failed: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`);
  }
  if (!res.ok) throw new CliError(`downloading image ${image.id} failed: HTTP ${res.status}${res.status === 403 ? " (the link expired; try again)" : ""}`);
  const ext = (res.headers.get("content-type") ?? image.contentType).includes("jpeg") ? "jpg" : "png";
  const file = join(dir, `${image.jobId}-${image.index + 1}.${ext}`);
  writeFileSync(file, Buffer.from(await res.arrayBuffer()));
  return file;
}

async function defaultWorkflow(ctx: Context): Promise<string> {
  const { workflows } = await ctx.clients.client(ModelService).listWorkflows({});
  const w = workflows.find((x) => x.status === ModelStatus.AVAILABLE) ?? workflows[0];
  if (!w) throw new CliError("no image workflow is available on this server");
  return w.id;
}

/** Follows a job until it is final, drawing progress; Ctrl-C cancels the job (twice: stops waiting). */
async function watchJob(ctx: Context, submitted: Job): Promise<{ job: Job; interrupted: boolean }> {
  const images = ctx.clients.client(ImageService);
  const view = new ProgressView(ctx.io.stderr);
  const abort = new AbortController();
  let interrupted = false;
  const off = ctx.io.onInterrupt(() => {
    if (interrupted) return abort.abort();
    interrupted = true;
    ctx.io.stderr.write(ctx.io.stderr.isTTY ? "\n" : "");
    ctx.note("Cancelling the job (Ctrl-C again stops waiting)…");
    images.cancelJob({ jobId: submitted.id }).catch(() => abort.abort());
  });
  let job = submitted;
  view.update(job, 0);
  try {
    for await (const ev of images.watchJob({ jobId: submitted.id }, { signal: abort.signal, timeoutMs: 0 })) {
      if (ev.job) job = ev.job;
      view.update(job, ev.progressPercent);
      if (isFinal(job)) break;
    }
    if (!isFinal(job)) job = (await images.getJob({ jobId: submitted.id })).job ?? job;
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    off();
    view.end();
  }
  return { job, interrupted };
}

function isFinal(job: Job): boolean {
  return job.status === JobStatus.SUCCEEDED || job.status === JobStatus.FAILED || job.status === JobStatus.CANCELLED;
}

export const imageCommands: CommandSpec<Context>[] = [
  {
    name: "image",
    summary: "Generate images, show progress, and save the PNGs.",
    details: "Ctrl-C cancels the job (its credits are released).\n" +
      "Example: luna image \"a lighthouse in a storm, oil painting\" --workflow flux-schnell --size 1024x1024 --count 2 --out ./art",
    positionals: [{ name: "<prompt>", description: "What to draw" }],
    options: {
      workflow: { type: "string", value: "ID", description: "Workflow (default: the first available; see `luna models`)" },
      size: { type: "string", value: "WxH", description: "One of the workflow's sizes (default: its default size)" },
      count: { type: "string", value: "N", description: "Images to generate (default 1)" },
      steps: { type: "string", value: "N", description: "Sampling steps (default: the workflow's)" },
      seed: { type: "string", value: "N", description: "Seed for repeatable results (default: random)" },
      style: { type: "string", value: "ID", description: "One of the workflow's styles" },
      negative: { type: "string", value: "TEXT", description: "Negative prompt (workflows that support it)" },
      out: { type: "string", value: "DIR", description: "Where to save the images (default: the current directory)" },
    },
    async run(ctx, args) {
      const cmd = "image";
      const prompt = args.positionals[0]!;
      if (!prompt.trim()) throw new UsageError("the prompt is empty", cmd);
      const sizeArg = str(args, "size");
      const [width, height] = sizeArg ? parseSize(sizeArg, cmd) : [0, 0];
      const imageCount = intArg(args.options.count, "--count", { min: 1, max: 100, default: 1 }, cmd);
      const steps = intArg(args.options.steps, "--steps", { min: 1, max: 1000, default: 0 }, cmd);
      const seedArg = args.options.seed;
      const seed = seedArg === undefined ? undefined : BigInt(intArg(seedArg, "--seed", { min: 0, max: Number.MAX_SAFE_INTEGER }, cmd));
      const outDir = resolve(str(args, "out") ?? ".");
      ctx.requireSession();
      const workflowId = str(args, "workflow") ?? (await defaultWorkflow(ctx));
      const { job } = await ctx.clients.client(ImageService).submitJob({
        workflowId, prompt, width, height, count: imageCount, steps, seed, styleId: str(args, "style") ?? "",
        negativePrompt: str(args, "negative") ?? "", idempotencyKey: `cli-${randomUUID()}`,
      });
      if (!job) throw new CliError("the server returned no job");
      ctx.note(`Job ${job.id}: ${job.count} × ${job.width}x${job.height} on ${job.workflowId}, ${count(job.creditsReserved, "credit")} held.`);
      const { job: final, interrupted } = await watchJob(ctx, job);
      if (final.status === JobStatus.CANCELLED) {
        ctx.note("The job was cancelled; its credits were released.");
        return interrupted ? EXIT_INTERRUPTED : 1;
      }
      if (final.status === JobStatus.FAILED) {
        throw new CliError(`the image job failed: ${final.errorMessage || final.errorCode} (nothing was charged)`);
      }
      if (final.status !== JobStatus.SUCCEEDED) {
        if (interrupted) return EXIT_INTERRUPTED;
        throw new CliError(`the job did not finish (status ${statusWord(final)}); see \`luna gallery\` later`);
      }
      mkdirSync(outDir, { recursive: true });
      for (const image of final.images) ctx.out(await saveImage(ctx, image, outDir));
      ctx.note(`${count(final.images.length, "image")}, ${count(final.creditsCharged, "credit")} charged.`);
    },
  },
  {
    name: "gallery",
    summary: "List your generated images, newest first.",
    options: {
      limit: { type: "string", value: "N", description: `How many (default ${DEFAULT_GALLERY_LIMIT})` },
      download: { type: "string", value: "DIR", description: "Also save the listed images into DIR" },
    },
    async run(ctx, args) {
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_GALLERY_LIMIT }, "gallery");
      ctx.requireSession();
      const service = ctx.clients.client(ImageService);
      const images = await collectPages<Image>(limit, async (page) => {
        const res = await service.listImages({ page });
        return { items: res.images, next: res.page?.nextPageToken };
      });
      if (images.length === 0) return ctx.out("No images yet. Try: luna image \"a cat astronaut\"");
      const rows = images.map((i) => [dateTime(i.createdAt), i.id, `${i.width}x${i.height}`, i.workflowId, clip(i.prompt, 50)]);
      for (const line of table(["WHEN", "IMAGE", "SIZE", "WORKFLOW", "PROMPT"], rows)) ctx.out(line);
      const dir = str(args, "download");
      if (dir) {
        mkdirSync(resolve(dir), { recursive: true });
        for (const image of images) ctx.note(`saved ${await saveImage(ctx, image, resolve(dir))}`);
      }
    },
  },
];
