import { describe, expect, it } from "vitest";
import {
  chargeFor,
  checkIdempotencyKey,
  deterministicUuid,
  imageStorageKey,
  isFinal,
  jobIdForKey,
  isJobStorageKey,
  jobStoragePrefix,
  poolDurable,
  poolToken,
  requestHash,
  resultEventId,
  runTimeoutMs,
  Subjects,
} from "./job.js";
import { estimateStartMs } from "./queue.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("ids", () => {
  it("derives stable, distinct UUIDs (version 8)", () => {
    expect(deterministicUuid("a")).toMatch(UUID);
    expect(deterministicUuid("a")).toBe(deterministicUuid("a"));
    expect(deterministicUuid("a")).not.toBe(deterministicUuid("b"));
    expect(jobIdForKey("u1", "k")).toBe(jobIdForKey("u1", "k"));
    // The same key of two users names two jobs; the separator keeps "u1"+"2k" apart from "u12"+"k".
    expect(jobIdForKey("u1", "k")).not.toBe(jobIdForKey("u2", "k"));
    expect(jobIdForKey("u1", "2k")).not.toBe(jobIdForKey("u12", "k"));
    expect(resultEventId("j")).not.toBe(deterministicUuid("j"));
  });

  it("fingerprints requests so that any difference changes the hash", () => {
    const base = { workflowId: "w", prompt: "p", negativePrompt: "", width: 0, height: 0, count: 1, steps: 0, seed: undefined, styleId: "" };
    const h = requestHash(base);
    expect(requestHash({ ...base })).toBe(h);
    expect(requestHash({ ...base, seed: 0n })).not.toBe(h);
    expect(requestHash({ ...base, prompt: "p " })).not.toBe(h);
    expect(requestHash({ ...base, count: 2 })).not.toBe(h);
  });

  it("checks idempotency keys", () => {
    expect(checkIdempotencyKey("abc-123_:.")).toBeUndefined();
    expect(checkIdempotencyKey("a b")).toMatch(/printable/);
    expect(checkIdempotencyKey("é")).toMatch(/printable/);
    expect(checkIdempotencyKey("k".repeat(129))).toMatch(/128/);
  });
});

describe("deadlines and charges", () => {
  const policy = { baseMs: 60_000, perMegapixelStepMs: 500, maxMs: 600_000 };
  it("grows with steps, size and images, and is capped", () => {
    expect(runTimeoutMs(policy, { steps: 4, width: 1000, height: 1000, count: 1 })).toBe(62_000);
    expect(runTimeoutMs(policy, { steps: 4, width: 1000, height: 1000, count: 4 })).toBe(68_000);
    expect(runTimeoutMs(policy, { steps: 50, width: 2000, height: 2000, count: 64 })).toBe(600_000);
  });

  it("charges price × images produced, never more than the hold", () => {
    expect(chargeFor({ pricePerImage: 50n, creditsReserved: 200n }, 3)).toBe(150n);
    expect(chargeFor({ pricePerImage: 50n, creditsReserved: 200n }, 9)).toBe(200n);
    expect(chargeFor({ pricePerImage: 50n, creditsReserved: 200n }, 0)).toBe(0n);
  });

  it("knows final statuses", () => {
    expect(["SUCCEEDED", "FAILED", "CANCELLED"].every(isFinal)).toBe(true);
    expect(["QUEUED", "RUNNING"].some(isFinal)).toBe(false);
  });
});

describe("names", () => {
  it("maps model ids to single subject tokens and valid durable names", () => {
    expect(poolToken("sdxl-base-1.0")).toBe("sdxl-base-1_0");
    expect(Subjects.jobQueue("sdxl-base-1.0")).toBe("luna.image.jobs.sdxl-base-1_0");
    expect(poolDurable("sdxl-base-1.0")).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(() => poolToken("a.*")).toThrow(/invalid model id/);
    expect(() => poolToken("")).toThrow();
  });

  it("names storage keys opaquely (job folder, no user id, no images/ segment) and keeps them inside the job's folder", () => {
    const job = "0b4a9c1e-7f7e-4d55-9a43-2b3f1c0d9e11";
    expect(imageStorageKey(job, 0)).toBe(`${job}/0.png`);
    expect(imageStorageKey(job, 2).startsWith(jobStoragePrefix(job))).toBe(true);
    const weird = imageStorageKey("../../etc", 0);
    expect(weird).not.toContain("..");
    expect(weird.split("/")).toHaveLength(2);
    // A result may name the job's own keys, or the keys workers wrote before (a job in flight across an upgrade).
    expect(isJobStorageKey(`${job}/1.png`, "user-1", job)).toBe(true);
    expect(isJobStorageKey(`images/user-1/${job}/1.png`, "user-1", job)).toBe(true);
    expect(isJobStorageKey(`images/user-2/${job}/1.png`, "user-1", job)).toBe(false);
    expect(isJobStorageKey("another-job/1.png", "user-1", job)).toBe(false);
  });
});

describe("queue estimate", () => {
  it("counts rounds of the busy workers", () => {
    expect(estimateStartMs(1000, { ahead: 0, running: 0, avgRunMs: 10_000 })).toBe(1000);
    expect(estimateStartMs(1000, { ahead: 0, running: 1, avgRunMs: 10_000 })).toBe(11_000);
    expect(estimateStartMs(1000, { ahead: 3, running: 0, avgRunMs: 10_000 })).toBe(31_000);
    expect(estimateStartMs(1000, { ahead: 3, running: 2, avgRunMs: 10_000 })).toBe(21_000);
  });
});
