// The ImageService contract: bad input on every field (INVALID_ARGUMENT naming it, no job, no hold), per-user
// limits and credits, queue positions, pagination, per-user isolation, signed URLs (expired or tampered → 403),
// image deletion, and access rules.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { ImageWorkerService } from "@luna/contracts/luna/image/v1/image_worker_service_pb.js";
import { invalidPageSize, invalidPageToken } from "@luna/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signImageUrl } from "../src/index.js";
import { startHarness, TEST_IMAGE_CONFIG, type Harness } from "./harness.js";
import { waitForJob, waitForNoHold } from "./helpers.js";

let h: Harness;

beforeAll(async () => {
  h = await startHarness({ worker0: false });
});

afterAll(async () => {
  await h?.close();
});

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

describe("validation", () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["missing workflow", { workflowId: "" }, "workflow_id: is required"],
    ["unknown workflow", { workflowId: "no-such-flow" }, 'workflow_id: unknown workflow "no-such-flow"'],
    ["path-like workflow", { workflowId: "../../etc/passwd" }, "workflow_id: must be a workflow id"],
    ["empty prompt", { prompt: "   " }, "prompt: is required"],
    ["huge prompt", { prompt: "x".repeat(2001) }, "prompt: must be at most 2000 characters"],
    ["NUL in prompt", { prompt: "a\u0000b" }, "prompt: must not contain NUL"],
    ["negative prompt unsupported", { negativePrompt: "ugly" }, "negative_prompt: is not supported"],
    ["size not offered", { width: 500, height: 500 }, "width: 500x500 is not offered"],
    ["height not offered", { width: 1024, height: 1000 }, "height: 1024x1000 is not offered"],
    ["negative width", { width: -8, height: 1024 }, "width: must not be negative"],
    ["too many images", { count: 5 }, "count: must be between 1 and 4"],
    ["negative count", { count: -1 }, "count: must not be negative"],
    ["steps of a fixed workflow", { steps: 10 }, "steps: is fixed at 4"],
    ["steps out of range", { workflowId: "sdxl", steps: 60 }, "steps: must be between 15 and 50"],
    ["unknown style", { workflowId: "sdxl", styleId: "cubism" }, 'style_id: "cubism" is not offered'],
    ["style on a workflow without styles", { styleId: "pixel-art" }, "style_id: this workflow offers no styles"],
    ["negative seed", { seed: -1n }, "seed: must be an integer between 0 and"],
    ["seed above 2^53", { seed: 2n ** 53n }, "seed: must be an integer between 0 and"],
    ["idempotency key with spaces", { idempotencyKey: "a b" }, "idempotency_key: must be printable ASCII"],
    ["idempotency key too long", { idempotencyKey: "k".repeat(129) }, "idempotency_key: must be at most 128 characters"],
  ];

  it.each(cases)("%s → INVALID_ARGUMENT, nothing stored or held", async (_name, fields, message) => {
    const user = await h.newUser();
    const err = await errorOf(user.client.submitJob({ workflowId: "flux-schnell", prompt: "ok", ...fields }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(message);
    expect((await user.client.listJobs({})).jobs).toHaveLength(0);
    expect(await h.balance(user.id)).toMatchObject({ balance: 1000n, held: 0n });
  });

  it("rejects malformed ids and page tokens on the other RPCs", async () => {
    const user = await h.newUser();
    expect((await errorOf(user.client.getJob({ jobId: "" }))).rawMessage).toBe("job_id: is required");
    expect((await errorOf(user.client.getJob({ jobId: "../x" }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(user.client.cancelJob({ jobId: "nope" }))).code).toBe(Code.InvalidArgument);
    expect((await errorOf(user.client.deleteImage({ imageId: "1" }))).rawMessage).toContain("image_id:");
    // The kit's wording, as in every service's lists.
    expect((await errorOf(user.client.listJobs({ page: { pageToken: "garbage" } }))).rawMessage).toBe(invalidPageToken("page.page_token").rawMessage);
    expect((await errorOf(user.client.listImages({ page: { pageSize: -1 } }))).rawMessage).toBe(invalidPageSize("page.page_size", -1).rawMessage);
    expect((await errorOf(user.client.listJobs({ status: 99 as JobStatus }))).rawMessage).toContain("status");
    const watch = async () => {
      for await (const _ of user.client.watchJob({ jobId: "x" })) {
        // unreachable
      }
    };
    expect((await errorOf(watch())).code).toBe(Code.InvalidArgument);
  });

  it("the same idempotency key with a different request is refused", async () => {
    const user = await h.newUser();
    await user.client.submitJob({ workflowId: "flux-schnell", prompt: "one", idempotencyKey: "k1" });
    const err = await errorOf(user.client.submitJob({ workflowId: "flux-schnell", prompt: "two", idempotencyKey: "k1" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toContain("idempotency_key");
    // Another user may use the same key.
    const other = await h.newUser();
    const { job } = await other.client.submitJob({ workflowId: "flux-schnell", prompt: "two", idempotencyKey: "k1" });
    expect(job!.status).toBe(JobStatus.QUEUED);
    for (const u of [user, other]) for (const j of (await u.client.listJobs({})).jobs) await u.client.cancelJob({ jobId: j.id });
  });
});

describe("limits, queue and pagination (no worker running)", () => {
  it("admits 1 running + 5 queued jobs per user, reports queue positions, then refuses", async () => {
    const user = await h.newUser();
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const { job } = await user.client.submitJob({ workflowId: "flux-schnell", prompt: `job ${i}` });
      ids.push(job!.id);
    }
    const err = await errorOf(user.client.submitJob({ workflowId: "flux-schnell", prompt: "one too many" }));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain("at most 1 running and 5 queued");
    expect(await h.balance(user.id)).toMatchObject({ held: 300n });

    const third = (await user.client.getJob({ jobId: ids[3]! })).job!;
    expect(third.queuePosition).toBe(3);
    expect(third.estimatedStartAt).toBeDefined();

    // Pagination: newest first, no duplicates, stable across pages.
    const seen: string[] = [];
    let token = "";
    do {
      const page = await user.client.listJobs({ page: { pageSize: 4, pageToken: token } });
      seen.push(...page.jobs.map((j) => j.id));
      token = page.page!.nextPageToken;
    } while (token);
    expect(seen).toEqual([...ids].reverse());

    await user.client.cancelJob({ jobId: ids[0]! });
    await user.client.submitJob({ workflowId: "flux-schnell", prompt: "room again" });
    for (const j of (await user.client.listJobs({ status: JobStatus.QUEUED })).jobs) await user.client.cancelJob({ jobId: j.id });
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n });
  });

  it("refuses a job the user cannot afford, without holding anything", async () => {
    const user = await h.newUser();
    for (let i = 0; i < 5; i++) await user.client.submitJob({ workflowId: "flux-schnell", prompt: `big ${i}`, count: 4 });
    expect(await h.balance(user.id)).toMatchObject({ held: 1000n });
    const err = await errorOf(user.client.submitJob({ workflowId: "flux-schnell", prompt: "broke", count: 1 }));
    expect(err.code).toBe(Code.ResourceExhausted);
    // One statement with the need and the balance (the kit's wording), not billing's message appended to ours.
    expect(err.rawMessage).toBe("not enough credits: this job (1 × 50) needs 50 credits, 0 available");
    expect((await user.client.listJobs({})).jobs).toHaveLength(5);
    for (const j of (await user.client.listJobs({})).jobs) await user.client.cancelJob({ jobId: j.id });
    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n });
    await h.assertLedgerConsistent();
  });
});

describe("isolation, URLs and deletion", () => {
  it("keeps users apart, serves only valid signed URLs, and deletes images", async () => {
    const w = await h.startWorker();
    const alice = await h.newUser();
    const bob = await h.newUser();
    const { job } = await alice.client.submitJob({ workflowId: "flux-schnell", prompt: "alice's cat", count: 2 });
    const done = await waitForJob(alice.client, job!.id);
    expect(done.status).toBe(JobStatus.SUCCEEDED);
    const [img0, img1] = done.images;

    // Bob sees none of it.
    expect((await errorOf(bob.client.getJob({ jobId: job!.id }))).code).toBe(Code.NotFound);
    expect((await errorOf(bob.client.cancelJob({ jobId: job!.id }))).code).toBe(Code.NotFound);
    expect((await errorOf(bob.client.deleteImage({ imageId: img0!.id }))).code).toBe(Code.NotFound);
    expect((await bob.client.listJobs({})).jobs).toHaveLength(0);
    expect((await bob.client.listImages({})).images).toHaveLength(0);
    const watchAsBob = async () => {
      for await (const _ of bob.client.watchJob({ jobId: job!.id })) {
        // unreachable
      }
    };
    expect((await errorOf(watchAsBob())).code).toBe(Code.NotFound);

    // Signed URLs: valid → 200; expired, tampered signature or key → 403; path tricks → 400.
    const url = new URL(img0!.url, h.baseUrl);
    expect((await fetch(url)).status).toBe(200);
    const key = decodeURIComponent(url.pathname.slice("/images/".length));
    const secret = TEST_IMAGE_CONFIG.IMAGE_URL_SECRET!;
    const expired = signImageUrl({ secret, baseUrl: h.baseUrl, key, expiresAt: new Date(Date.now() - 1000) });
    expect((await fetch(expired)).status).toBe(403);
    const tampered = new URL(url);
    tampered.searchParams.set("exp", String(Number(url.searchParams.get("exp")) + 3600));
    expect((await fetch(tampered)).status).toBe(403);
    const otherKey = new URL(img1!.url, h.baseUrl);
    otherKey.search = url.search; // image 1's path with image 0's signature
    expect((await fetch(otherKey)).status).toBe(403);
    expect((await fetch(`${h.baseUrl}/images/..%2F..%2Fetc%2Fpasswd?exp=9999999999&sig=${"A".repeat(43)}`)).status).toBe(400);
    expect((await fetch(`${h.baseUrl}/images/${key}`)).status).toBe(403);
    expect((await fetch(url, { method: "POST" })).status).toBe(405);

    // Delete: the record and the file go; the URL then answers 404; a second delete is NOT_FOUND.
    await alice.client.deleteImage({ imageId: img0!.id });
    expect((await fetch(url)).status).toBe(404);
    expect((await errorOf(alice.client.deleteImage({ imageId: img0!.id }))).code).toBe(Code.NotFound);
    expect((await alice.client.listImages({})).images.map((i) => i.id)).toEqual([img1!.id]);
    expect((await alice.client.getJob({ jobId: job!.id })).job!.images.map((i) => i.id)).toEqual([img1!.id]);
    await w.stop();
  });

  it("requires a user token; the worker RPC requires an internal one", async () => {
    const anonymous = createClient(ImageService, createGrpcTransport({ baseUrl: h.baseUrl }));
    expect((await errorOf(anonymous.listJobs({}))).code).toBe(Code.Unauthenticated);
    const user = await h.newUser();
    const asUser = createClient(ImageWorkerService, user.transport);
    expect((await errorOf(asUser.startJob({ jobId: "00000000-0000-4000-8000-000000000000", workerId: "w" }))).code).toBe(Code.PermissionDenied);
  });
});
