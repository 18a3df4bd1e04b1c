// The Redis limiter: GCRA rate limits, expiring concurrency leases, accuracy across processes, and fail-open when
// Redis is down.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { testServers } from "@luna/kit/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRateLimiter, parseLeaseId } from "../src/limits/limiter.js";
import { parseLimitPolicy } from "../src/limits/policy.js";
import { limiterOnDedicatedRedis, workerArgs } from "./helpers.js";

let redis: Redis;
beforeAll(async () => {
  redis = new Redis(testServers().redisUrl, { maxRetriesPerRequest: 1 });
  await redis.ping(); // the limiter fails open until the connection is ready
});
afterAll(() => redis?.disconnect());

const uniq = (p: string) => `${p}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
const policy = parseLimitPolicy(
  JSON.stringify({
    roles: {
      user: { rates: { chat: { limit: 5, per: "minute" } }, concurrency: { chat_stream: 2, image_job: 1 } },
      admin: { rates: { chat: { limit: 50, per: "minute" } } },
    },
  }),
);

describe("rate limits", () => {
  it("admits the limit, then refuses with a retry-after, per user and feature", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    const decisions = [];
    for (let i = 0; i < 7; i++) decisions.push(await limiter.check(user, "chat"));
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, true, true, false, false]);
    expect(decisions.map((d) => d.remaining)).toEqual([4, 3, 2, 1, 0, 0, 0]);
    expect(decisions[5]!.retryAfterMs).toBeGreaterThan(10_000); // one request per 12 s at 5/min
    expect(decisions[5]!.retryAfterMs).toBeLessThanOrEqual(12_000);
    // another user, another feature and another role have their own budgets
    expect((await limiter.check(uniq("u"), "chat")).allowed).toBe(true);
    expect((await limiter.check(user, "image")).allowed).toBe(true);
    const admin = uniq("a");
    const adminDecisions = await Promise.all(Array.from({ length: 50 }, () => limiter.check(admin, "chat", { role: "admin" })));
    expect(adminDecisions.every((d) => d.allowed && !d.degraded)).toBe(true);
  });

  it("counts a cost of several units", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    expect((await limiter.check(user, "chat", { cost: 4 })).allowed).toBe(true);
    expect((await limiter.check(user, "chat", { cost: 2 })).allowed).toBe(false);
    expect((await limiter.check(user, "chat", { cost: 1 })).allowed).toBe(true);
  });

  it("a limit of 0 refuses everything", async () => {
    const limiter = createRateLimiter(redis, parseLimitPolicy('{"roles":{"user":{"rates":{"off":{"limit":0,"per":"minute"}}}}}'), { keyPrefix: uniq("t") });
    expect((await limiter.check(uniq("u"), "off")).allowed).toBe(false);
  });

  it("10× the limit at once through 4 processes: admitted / limit ≤ 1.01, no false rejections", async () => {
    const LIMIT = 400;
    const PROCESSES = 4;
    const subject = uniq("burst");
    const started = Date.now();
    const workers = Array.from({ length: PROCESSES }, () => {
      const child = spawn(process.execPath, workerArgs("limiter-burst.ts"), {
        env: { ...process.env, REDIS_URL: testServers().redisUrl, SUBJECT: subject, COUNT: String((LIMIT * 10) / PROCESSES), LIMIT: String(LIMIT), PER: "hour" },
        stdio: ["pipe", "pipe", "inherit"],
      });
      const lines = createInterface({ input: child.stdout });
      const ready = new Promise<void>((res) => lines.once("line", () => res()));
      const result = ready.then(() => new Promise<string>((res) => lines.once("line", res)));
      return { child, ready, result };
    });
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.stdin.write("go\n");
    const results = (await Promise.all(workers.map((w) => w.result))).map((l) => JSON.parse(l) as { admitted: number; degraded: number });
    const elapsedMs = Date.now() - started;
    const admitted = results.reduce((n, r) => n + r.admitted, 0);
    // GCRA refills one request per period/limit (9 s here): what could legitimately pass during the test.
    const refill = Math.floor(elapsedMs / ((3_600_000 / LIMIT)));
    console.log(`limiter accuracy: ${admitted} admitted of ${LIMIT * 10} sent, limit ${LIMIT} (ratio ${(admitted / LIMIT).toFixed(4)}), ` +
      `false rejections ${Math.max(0, LIMIT - admitted)}, refill allowance during the ${elapsedMs} ms test ${refill}`);
    expect(results.every((r) => r.degraded === 0)).toBe(true);
    expect(admitted / LIMIT).toBeLessThanOrEqual(1.01);
    expect(admitted).toBeGreaterThanOrEqual(LIMIT); // no false rejections
  }, 60_000);
});

describe("concurrency leases", () => {
  it("one image job at a time; release frees the slot; concurrent acquires never exceed the limit", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    const first = await limiter.acquire(user, "image_job");
    expect(first).toMatchObject({ acquired: true, limit: 1, inUse: 1, degraded: false });
    expect(await limiter.acquire(user, "image_job")).toMatchObject({ acquired: false, limit: 1, inUse: 1 });
    expect(parseLeaseId(first.lease!.id)).toMatchObject({ kind: "image_job", userId: user });
    expect(await limiter.release(first.lease!)).toEqual({ released: true, degraded: false });
    expect(await limiter.release(first.lease!)).toEqual({ released: false, degraded: false });

    const other = uniq("u");
    const many = await Promise.all(Array.from({ length: 40 }, () => limiter.acquire(other, "chat_stream")));
    expect(many.filter((r) => r.acquired)).toHaveLength(2);
  });

  it("a lease that is not renewed expires, so a crashed holder cannot keep the slot", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    const crashed = await limiter.acquire(user, "image_job", { ttlMs: 300 });
    expect(crashed.acquired).toBe(true);
    expect((await limiter.acquire(user, "image_job")).acquired).toBe(false);
    await new Promise((r) => setTimeout(r, 400));
    const next = await limiter.acquire(user, "image_job", { ttlMs: 300 });
    expect(next.acquired).toBe(true);
    expect(await limiter.renew(crashed.lease!)).toMatchObject({ renewed: false });
    // renewing a live lease keeps it past its first expiry
    expect(await limiter.renew(next.lease!, 1_000)).toMatchObject({ renewed: true });
    await new Promise((r) => setTimeout(r, 400));
    expect((await limiter.acquire(user, "image_job")).acquired).toBe(false);
  });

  it("treats malformed lease ids as nothing to release", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    expect(await limiter.release("nonsense")).toEqual({ released: false, degraded: false });
    expect(await limiter.renew("l1.bogus.x.y")).toMatchObject({ renewed: false });
  });
});

describe("Redis down", () => {
  it("fails open for rate and concurrency limits (logged via the hook), and recovers when Redis returns", async () => {
    const r = await limiterOnDedicatedRedis('{"roles":{"user":{"rates":{"x":{"limit":1,"per":"hour"}}}}}');
    const { limiter, failures, server, client } = r;
    try {
      const user = uniq("u");
      expect((await limiter.check(user, "x")).allowed).toBe(true);
      expect((await limiter.check(user, "x")).allowed).toBe(false);
      await server.stop();
      const down = await Promise.all([1, 2, 3].map(() => limiter.check(user, "x")));
      expect(down.every((d) => d.allowed && d.degraded)).toBe(true);
      const lease = await limiter.acquire(user, "image_job");
      expect(lease).toMatchObject({ acquired: true, degraded: true });
      expect(await limiter.release(lease.lease!)).toEqual({ released: false, degraded: false });
      expect(failures).toEqual(["check", "check", "check", "acquire"]);
      await server.restart();
      const deadline = Date.now() + 10_000;
      while (client.status !== "ready" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const back = await limiter.check(uniq("u"), "x");
      expect(back).toMatchObject({ allowed: true, degraded: false });
    } finally {
      await r.dispose();
    }
  }, 60_000);
});
