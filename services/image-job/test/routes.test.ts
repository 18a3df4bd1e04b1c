// Handlers through an in-memory router (createRouterTransport) over a real database, with the catalog, billing and
// NATS faked: the answers that need a dependency in a particular state.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { ImageWorkerService, StartJobAction } from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { CatalogWorkflowSchema, ModelStatus, WorkflowParameter as P, type CatalogWorkflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { principalKey, type Principal } from "@luna/kit";
import { createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import type pg from "pg";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJobStore, createPool, type JobStore } from "../src/data/job-store.js";
import { migrationsDir } from "../src/index.js";
import { createImageJobMetrics } from "../src/metrics.js";
import { createQueueEstimator } from "../src/server/queue-estimate.js";
import { routes } from "../src/server/routes.js";
import { createLocalStore } from "../src/storage/local-store.js";

let db: TestDatabase;
let pool: pg.Pool;
let store: JobStore;

beforeAll(async () => {
  db = await createTestDatabase({ migrationsDir, prefix: "imgroutes" });
  pool = createPool(db.url, 4, { warn: () => undefined });
  store = createJobStore({ pool, maxRunningPerUser: 1, maxQueuedPerUser: 5, afterCommit: () => undefined });
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

const GRAPH = JSON.stringify({
  "1": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "x.safetensors" } },
  "2": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["1", 1] } },
  "4": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
  "5": { class_type: "KSampler", inputs: { model: ["1", 0], positive: ["2", 0], negative: ["2", 0], latent_image: ["4", 0], seed: 0 } },
});

function wf(status = ModelStatus.AVAILABLE): CatalogWorkflow {
  return create(CatalogWorkflowSchema, {
    enabled: status !== ModelStatus.DISABLED,
    disabledReason: status === ModelStatus.DISABLED ? "maintenance" : "",
    workflow: { id: "tiny", modelId: "tiny-model", pricePerImage: 10n, status, statusReason: status === ModelStatus.DISABLED ? "maintenance" : "",
      parameters: { sizes: [{ width: 64, height: 64 }], defaultSize: { width: 64, height: 64 }, maxImages: 2, minSteps: 4, maxSteps: 4,
        defaultSteps: 4, maxPromptChars: 100 } },
    template: { graphJson: GRAPH, bindings: [
      { parameter: P.PROMPT, nodeId: "2", inputName: "text" }, { parameter: P.SEED, nodeId: "5", inputName: "seed" },
      { parameter: P.WIDTH, nodeId: "4", inputName: "width" }, { parameter: P.HEIGHT, nodeId: "4", inputName: "height" },
      { parameter: P.BATCH_SIZE, nodeId: "4", inputName: "batch_size" },
    ] },
  });
}

interface Setup {
  loaded?: boolean;
  workflow?: CatalogWorkflow | undefined;
  reserve?: () => { holdId: string; amount: bigint; expiresAt?: Date } | ConnectError;
  principal?: Principal;
  rate?: () => { allowed: boolean; limit: number; retryAfter?: { seconds: bigint; nanos: number } };
}

function clients(s: Setup) {
  const catalog = { loaded: s.loaded ?? true, getWorkflow: (id: string) => (id === "tiny" ? s.workflow : undefined) };
  const reserves: string[] = [];
  const billing = createRouterTransport((router) => router.service(LimitsService, {
    checkRateLimit: () => (s.rate?.() ?? { allowed: true, limit: 10 }),
  }).service(CreditsService, {
    async reserve(req) {
      reserves.push(req.idempotencyKey);
      const r = s.reserve?.() ?? { holdId: `hold-${req.reference}`, amount: req.amount };
      if (r instanceof ConnectError) throw r;
      return { holdId: r.holdId, amount: r.amount, expiresAt: timestampFromDate(r.expiresAt ?? new Date(Date.now() + 3_600_000)), available: 0n };
    },
  }));
  const metrics = createImageJobMetrics(new Registry(), async () => []);
  const lifecycle = { changed: () => undefined, discardObjects: () => undefined };
  const transport = createRouterTransport(routes({
    store, catalog, credits: createClient(CreditsService, billing), limits: createClient(LimitsService, billing), lifecycle,
    signer: { store: createLocalStore({ dir: "/tmp/unused-image-store", secret: "s".repeat(32), baseUrl: "" }), urlTtlMs: 60_000 },
    estimateQueue: createQueueEstimator({ store, defaultRunMs: 1000 }),
    nc: { subscribe: () => ({ unsubscribe: () => undefined }) } as never,
    metrics,
    log: { warn: () => undefined },
    settings: { runDeadline: { baseMs: 1000, perMegapixelStepMs: 0, maxMs: 1000 }, queueTimeoutMs: 60_000, deadlineGraceMs: 0, watchRefreshMs: 100, callTimeoutMs: 1000 },
  }), { router: { interceptors: [(next) => async (req) => {
    req.contextValues.set(principalKey, s.principal ?? { userId: "route-user", role: "user", tokenId: "t" });
    return next(req);
  }] } });
  return { images: createClient(ImageService, transport), worker: createClient(ImageWorkerService, transport), reserves };
}

async function codeOf(p: Promise<unknown>): Promise<[Code, string]> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return [e.code, e.rawMessage];
  }
  return [0 as Code, ""];
}

describe("SubmitJob with its dependencies in odd states", () => {
  it("is UNAVAILABLE until the catalog is loaded", async () => {
    const { images } = clients({ loaded: false, workflow: wf() });
    expect(await codeOf(images.submitJob({ workflowId: "tiny", prompt: "x" }))).toEqual([Code.Unavailable, expect.stringContaining("catalog")]);
  });

  it("refuses a disabled workflow with its reason", async () => {
    const { images, reserves } = clients({ workflow: wf(ModelStatus.DISABLED) });
    expect(await codeOf(images.submitJob({ workflowId: "tiny", prompt: "x" }))).toEqual([Code.FailedPrecondition, "workflow tiny is disabled: maintenance"]);
    expect(reserves).toHaveLength(0);
  });

  it("accepts an OFFLINE workflow (jobs wait for the pool, e.g. scaled to zero)", async () => {
    const { images } = clients({ workflow: wf(ModelStatus.OFFLINE), principal: { userId: "offline-user", role: "user", tokenId: "t" } });
    const { job } = await images.submitJob({ workflowId: "tiny", prompt: "x", count: 2 });
    expect(job!.creditsReserved).toBe(20n);
  });

  it("maps billing failures and stores nothing", async () => {
    const principal = { userId: "billing-user", role: "user" as const, tokenId: "t" };
    for (const [err, code] of [
      [new ConnectError("billing down", Code.Unavailable), Code.Unavailable],
      [new ConnectError("timeout", Code.DeadlineExceeded), Code.Unavailable],
      [new ConnectError("available 3", Code.ResourceExhausted), Code.ResourceExhausted],
      [new ConnectError("account closed", Code.FailedPrecondition), Code.FailedPrecondition],
    ] as const) {
      const { images } = clients({ workflow: wf(), reserve: () => err, principal });
      expect((await codeOf(images.submitJob({ workflowId: "tiny", prompt: "x" })))[0]).toBe(code);
    }
    expect((await pool.query("SELECT count(*)::int AS n FROM image_jobs WHERE user_id = $1", ["billing-user"])).rows[0].n).toBe(0);
  });

  it("checks the per-minute limit before reserving: refused or unreachable, nothing is reserved or stored", async () => {
    const principal = { userId: "rate-user", role: "user" as const, tokenId: "t" };
    const over = clients({ workflow: wf(), principal, rate: () => ({ allowed: false, limit: 10, retryAfter: { seconds: 7n, nanos: 0 } }) });
    expect(await codeOf(over.images.submitJob({ workflowId: "tiny", prompt: "x" }))).toEqual([Code.ResourceExhausted, "rate limit: at most 10 image jobs per minute; retry in 7s"]);
    expect(over.reserves).toEqual([]);
    const down = clients({ workflow: wf(), principal, rate: () => { throw new ConnectError("redis down", Code.Unavailable); } });
    expect((await codeOf(down.images.submitJob({ workflowId: "tiny", prompt: "x" })))[0]).toBe(Code.Unavailable);
    expect(down.reserves).toEqual([]);
    expect((await pool.query("SELECT count(*)::int AS n FROM image_jobs WHERE user_id = $1", ["rate-user"])).rows[0].n).toBe(0);
  });

  it("uses one billing key per job, and refuses a retried key whose hold has expired", async () => {
    const principal = { userId: "key-user", role: "user" as const, tokenId: "t" };
    const ok = clients({ workflow: wf(), principal });
    const { job } = await ok.images.submitJob({ workflowId: "tiny", prompt: "x", idempotencyKey: "same" });
    await ok.images.submitJob({ workflowId: "tiny", prompt: "x", idempotencyKey: "same" });
    expect(ok.reserves).toEqual([`image-job:${job!.id}`]);
    const stale = clients({ workflow: wf(), principal, reserve: () => ({ holdId: "old", amount: 10n, expiresAt: new Date(Date.now() - 1000) }) });
    expect(await codeOf(stale.images.submitJob({ workflowId: "tiny", prompt: "y", idempotencyKey: "other" })))
      .toEqual([Code.FailedPrecondition, expect.stringContaining("idempotency_key")]);
  });
});

describe("StartJob", () => {
  it("requires the internal role, and runs a job whose workflow left the catalog without a workflow (the worker fails it)", async () => {
    const user = clients({ workflow: wf(), principal: { userId: "gone-user", role: "user", tokenId: "t" } });
    const { job } = await user.images.submitJob({ workflowId: "tiny", prompt: "x" });
    expect((await codeOf(user.worker.startJob({ jobId: job!.id, workerId: "w" })))[0]).toBe(Code.PermissionDenied);
    const internal = clients({ workflow: undefined, principal: { userId: "image-worker", role: "internal", tokenId: "t" } });
    const start = await internal.worker.startJob({ jobId: job!.id, workerId: "w", deliveryCount: 1 });
    expect(start.action).toBe(StartJobAction.RUN);
    expect(start.workflow).toBeUndefined();
    expect(start.job!.prompt).toBe("x");
    expect(start.resumed).toBe(false);
    expect((await internal.worker.startJob({ jobId: job!.id, workerId: "w2", deliveryCount: 2 })).resumed).toBe(true);
    expect(await internal.worker.startJob({ jobId: "00000000-0000-4000-8000-000000000000", workerId: "w" }))
      .toMatchObject({ action: StartJobAction.SKIP, skipReason: "not_found" });
    expect((await codeOf(internal.worker.startJob({ jobId: job!.id, workerId: "" })))[0]).toBe(Code.InvalidArgument);
  });
});
