// Admission in one call (issue 23): the limiter's Admit counts the rate AND takes a concurrency slot in one script,
// or neither; the scripts run by EVALSHA and survive a SCRIPT FLUSH; CreditsService Commit/Release free the lease
// they name (`release_lease_id`), harmlessly on a replay and never failing the money call for a bad lease id.
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { AdmitRefusal, ConcurrencyKind, LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { testServers } from "@luna/kit/testing";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createRateLimiter } from "../src/limits/limiter.js";
import { parseLimitPolicy } from "../src/limits/policy.js";
import { billingRoutes } from "../src/server/routes.js";
import { as, codeOf, fundedAccount, limiterOnDedicatedRedis, openLedgerDb, testPrincipal, type LedgerDb } from "./helpers.js";

let redis: Redis;
beforeAll(async () => {
  redis = new Redis(testServers().redisUrl, { maxRetriesPerRequest: 1 });
  await redis.ping(); // the limiter fails open until the connection is ready
});
afterAll(() => redis?.disconnect());

const uniq = (p: string) => `${p}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
// 3 chat requests a minute, 2 chat streams, 1 image job.
const policy = parseLimitPolicy(JSON.stringify({
  roles: { user: { rates: { chat: { limit: 3, per: "minute" } }, concurrency: { chat_stream: 2, image_job: 1 } } },
}));

/**
 * The commands Redis runs while `fn` does that touch keys under `prefix` (MONITOR on a second connection; other test
 * files share this Redis).
 */
async function commandsDuring(prefix: string, fn: () => Promise<unknown>): Promise<string[]> {
  const monitor = await redis.monitor();
  const seen: string[] = [];
  const end = `${prefix}:end`;
  monitor.on("monitor", (_time: string, args: string[]) => {
    // Only the calls themselves, not the commands their scripts run.
    const name = String(args[0]).toLowerCase();
    if (/^(eval|evalsha|echo)$/.test(name) && args.some((a) => String(a).startsWith(prefix))) seen.push(name);
  });
  try {
    await fn();
    await redis.echo(end); // MONITOR reports in order: once this is seen, the calls before it are too
    const deadline = Date.now() + 2000;
    while (!seen.includes("echo") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    seen.pop();
  } finally {
    monitor.disconnect();
  }
  return seen;
}

describe("limiter.admit", () => {
  it("admits by counting the rate and taking a slot, both at once", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    const a = await limiter.admit(user, "chat", "chat_stream");
    expect(a).toMatchObject({ admitted: true, rate: { limit: 3, remaining: 2 }, leaseLimit: 2, inUse: 1, degraded: false });
    expect(a.refused).toBeUndefined();
    expect(a.lease?.expiresAtMs).toBeGreaterThan(Date.now());
    // Both were counted: the rate has 2 left, the lease set 1 of 2 slots.
    expect((await limiter.check(user, "chat")).remaining).toBe(1);
    expect(await limiter.acquire(user, "chat_stream")).toMatchObject({ acquired: true, inUse: 2 });
    expect(await limiter.release(a.lease!)).toEqual({ released: true, degraded: false });
  });

  it("over the rate limit: refused as `rate` with a retry-after, and no slot is taken", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    for (let i = 0; i < 3; i++) expect((await limiter.check(user, "chat")).allowed).toBe(true);
    const r = await limiter.admit(user, "chat", "image_job");
    expect(r).toMatchObject({ admitted: false, refused: "rate", rate: { limit: 3, remaining: 0 }, leaseLimit: 1, inUse: 0 });
    expect(r.rate.retryAfterMs).toBeGreaterThan(15_000); // one request per 20 s at 3/min
    expect(r.lease).toBeUndefined();
    // The only image slot is still free.
    expect(await limiter.acquire(user, "image_job")).toMatchObject({ acquired: true, inUse: 1 });
  });

  it("no slot free: refused as `concurrency`, and the request is NOT counted against the rate", async () => {
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("t") });
    const user = uniq("u");
    const held = await limiter.admit(user, "chat", "image_job");
    expect(held).toMatchObject({ admitted: true, rate: { remaining: 2 }, inUse: 1 });
    for (let i = 0; i < 5; i++) {
      expect(await limiter.admit(user, "chat", "image_job")).toMatchObject({ admitted: false, refused: "concurrency", rate: { remaining: 2 }, inUse: 1 });
    }
    // The five refusals spent nothing: two requests of the budget are left, for Admit as for CheckRateLimit.
    await limiter.release(held.lease!);
    expect(await limiter.admit(user, "chat", "image_job")).toMatchObject({ admitted: true, rate: { remaining: 1 } });
    expect(await limiter.check(user, "chat")).toMatchObject({ allowed: true, remaining: 0 });
    expect(await limiter.admit(user, "chat", "chat_stream")).toMatchObject({ admitted: false, refused: "rate" });
  });

  it("concurrent admits never exceed the slots, and count exactly the admitted ones", async () => {
    const limiter = createRateLimiter(redis, parseLimitPolicy(JSON.stringify({
      roles: { user: { rates: { chat: { limit: 100, per: "hour" } }, concurrency: { chat_stream: 3 } } },
    })), { keyPrefix: uniq("t") });
    const user = uniq("u");
    const all = await Promise.all(Array.from({ length: 40 }, () => limiter.admit(user, "chat", "chat_stream")));
    expect(all.filter((r) => r.admitted)).toHaveLength(3);
    expect(all.filter((r) => r.refused === "concurrency")).toHaveLength(37);
    expect((await limiter.check(user, "chat")).remaining).toBe(100 - 3 - 1);
  });

  // Plain, and with auto-pipelining as the kit's connectRedis builds the services' client (scripts then leave in
  // pipelines: the body must still be sent only once per connection).
  it.each([["a plain client", false], ["an auto-pipelining client", true]])("runs its scripts by EVALSHA, and still works after SCRIPT FLUSH (falls back to EVAL on NOSCRIPT): %s", async (_, autoPipelining) => {
    const client = new Redis(testServers().redisUrl, { maxRetriesPerRequest: 1, enableAutoPipelining: autoPipelining });
    await client.ping();
    try {
      await evalshaAndFlush(client);
    } finally {
      client.disconnect();
    }
  });

  async function evalshaAndFlush(client: Redis) {
    const prefix = uniq("t");
    const limiter = createRateLimiter(client, policy, { keyPrefix: prefix });
    const user = uniq("u");
    // The first call of each script on a connection sends its body (EVAL).
    const first = await commandsDuring(prefix, async () => {
      await limiter.renew((await limiter.admit(user, "chat", "chat_stream")).lease!);
      await limiter.check(uniq("u"), "chat");
      await limiter.acquire(uniq("u"), "chat_stream");
    });
    expect(first).toEqual(["eval", "eval", "eval", "eval"]);
    const steady = await commandsDuring(prefix, async () => {
      const a = await limiter.admit(user, "chat", "chat_stream");
      await limiter.renew(a.lease!);
      await limiter.check(uniq("u"), "chat");
      await limiter.acquire(uniq("u"), "chat_stream");
    });
    expect(steady).toEqual(["evalsha", "evalsha", "evalsha", "evalsha"]);

    await redis.script("FLUSH");
    const v = uniq("u");
    const afterFlush = await commandsDuring(prefix, async () => {
      expect(await limiter.admit(v, "chat", "chat_stream")).toMatchObject({ admitted: true, degraded: false });
      expect(await limiter.check(v, "chat")).toMatchObject({ allowed: true, remaining: 1, degraded: false });
      const l = await limiter.acquire(v, "chat_stream");
      expect(l).toMatchObject({ acquired: true, inUse: 2, degraded: false });
      expect(await limiter.renew(l.lease!)).toMatchObject({ renewed: true, degraded: false });
    });
    // Each script: EVALSHA refused (NOSCRIPT), then the body once.
    expect(afterFlush.filter((c) => c === "eval")).toHaveLength(4);
    expect(afterFlush.filter((c) => c === "evalsha").length).toBeGreaterThanOrEqual(4);
    expect(await limiter.admit(v, "chat", "chat_stream")).toMatchObject({ admitted: false, refused: "concurrency" });
    // Steady again, also for calls leaving in the same tick (one pipeline when auto-pipelining).
    const again = await commandsDuring(prefix, () => Promise.all([limiter.admit(uniq("u"), "chat", "chat_stream"), limiter.check(uniq("u"), "chat")]));
    expect(again).toEqual(["evalsha", "evalsha"]);
  }

  it("Redis down: admits without counting (degraded, a placeholder lease), logged through the hook", async () => {
    const r = await limiterOnDedicatedRedis('{"roles":{"user":{"rates":{"x":{"limit":1,"per":"hour"}},"concurrency":{"image_job":1}}}}');
    const { limiter, failures, server } = r;
    try {
      const user = uniq("u");
      expect(await limiter.admit(user, "x", "image_job")).toMatchObject({ admitted: true, degraded: false });
      expect(await limiter.admit(user, "x", "image_job")).toMatchObject({ admitted: false, refused: "rate" });
      await server.stop();
      const down = await Promise.all([1, 2].map(() => limiter.admit(user, "x", "image_job")));
      for (const d of down) {
        expect(d).toMatchObject({ admitted: true, degraded: true, leaseLimit: 1, inUse: 0, rate: { limit: 1, remaining: 1 } });
        expect(await limiter.renew(d.lease!)).toMatchObject({ renewed: true, degraded: true });
        expect(await limiter.release(d.lease!)).toEqual({ released: false, degraded: false });
      }
      expect(failures).toEqual(["admit", "admit"]);
    } finally {
      await r.dispose();
    }
  }, 60_000);
});

describe("over RPC", () => {
  let t: LedgerDb;
  let transport: ReturnType<typeof createRouterTransport>;
  const warnings: Array<{ obj: object; msg?: string }> = [];
  const internal = as("internal", "chat-router");

  beforeAll(async () => {
    t = await openLedgerDb();
    const limiter = createRateLimiter(redis, policy, { keyPrefix: uniq("h") });
    transport = createRouterTransport(billingRoutes({
      ledger: t.ledger, limiter, rateLimitDomain: "luna", log: { warn: (obj, msg) => warnings.push({ obj, msg }) },
    }), { router: { interceptors: [testPrincipal()] } });
  });
  afterEach(async () => {
    await t.assertInvariants();
  });
  afterAll(async () => {
    await t?.close();
  });


  it("Admit: internal callers only; every bad field is INVALID_ARGUMENT naming it", async () => {
    const limits = createClient(LimitsService, transport);
    const ok = { userId: "u", feature: "chat", kind: ConcurrencyKind.CHAT_STREAM };
    expect((await codeOf(limits.admit(ok, as("user", "u")))).code).toBe(Code.PermissionDenied);
    const cases: Array<[string, Partial<typeof ok> & Record<string, unknown>, RegExp]> = [
      ["user_id", { userId: "" }, /user_id: is required/],
      ["user_id", { userId: "a b" }, /user_id: must be 1-200 characters/],
      ["role", { role: "root" }, /role: unknown role "root" \(known: .*user/],
      ["feature", { feature: "" }, /feature: is required/],
      ["feature", { feature: "../x" }, /feature: must be 1-64 characters of \[a-z0-9._-\]/],
      ["kind", { kind: ConcurrencyKind.UNSPECIFIED }, /kind: must be CONCURRENCY_KIND_CHAT_STREAM or CONCURRENCY_KIND_IMAGE_JOB/],
      ["ttl", { ttl: { seconds: -5n, nanos: 0 } }, /ttl: must not be negative/],
      ["ttl", { ttl: { seconds: 0n, nanos: 5_000_000 } }, /ttl: must be at least 1s/],
    ];
    for (const [field, over, message] of cases) {
      const e = await codeOf(limits.admit({ ...ok, ...over }, internal));
      expect(e.code, field).toBe(Code.InvalidArgument);
      expect(e.message, field).toMatch(message);
    }
    // The bad calls counted nothing: the user's three requests are all there.
    expect(await limits.checkRateLimit({ userId: "u", feature: "chat" }, internal)).toMatchObject({ allowed: true, remaining: 2 });
  });

  it("Admit: says which limit refused, with the rate and lease facts", async () => {
    const limits = createClient(LimitsService, transport);
    const user = uniq("u");
    const req = { userId: user, feature: "chat", kind: ConcurrencyKind.IMAGE_JOB, ttl: { seconds: 30n, nanos: 0 } };
    const a = await limits.admit(req, internal);
    expect(a).toMatchObject({ admitted: true, refused: AdmitRefusal.UNSPECIFIED, rateLimit: 3, rateRemaining: 2, leaseLimit: 1, inUse: 1, degraded: false });
    expect(a.leaseId).toMatch(/^l1\.image_job\./);
    expect(a.retryAfter).toBeUndefined();
    const expiresIn = Number(a.expiresAt!.seconds) - Date.now() / 1000;
    expect(expiresIn).toBeGreaterThan(25);
    expect(expiresIn).toBeLessThanOrEqual(31);
    const busy = await limits.admit(req, internal);
    expect(busy).toMatchObject({ admitted: false, refused: AdmitRefusal.CONCURRENCY, leaseId: "", leaseLimit: 1, inUse: 1, rateRemaining: 2 });
    expect(busy.expiresAt).toBeUndefined();
    await limits.checkRateLimit({ userId: user, feature: "chat", cost: 2 }, internal);
    const over = await limits.admit({ ...req, kind: ConcurrencyKind.CHAT_STREAM }, internal);
    expect(over).toMatchObject({ admitted: false, refused: AdmitRefusal.RATE, rateLimit: 3, rateRemaining: 0, leaseId: "", leaseLimit: 2, inUse: 0 });
    expect(Number(over.retryAfter!.seconds)).toBeGreaterThan(10);
    // The lease it handed out is an ordinary lease.
    expect((await limits.renewLease({ leaseId: a.leaseId }, internal)).renewed).toBe(true);
    expect((await limits.releaseLease({ leaseId: a.leaseId }, internal)).released).toBe(true);
  });

  it("Commit and Release with release_lease_id free the slot (in_use goes back); a replay is harmless", async () => {
    const limits = createClient(LimitsService, transport);
    const credits = createClient(CreditsService, transport);
    const user = await fundedAccount(t.store, 1000n);
    // A feature without a configured limit (the role's default, 120 a minute): only the slots refuse here.
    const admit = () => limits.admit({ userId: user, feature: "reply", kind: ConcurrencyKind.CHAT_STREAM }, internal);
    const reserve = (key: string) => credits.reserve({ accountId: user, amount: 100n, reason: "chat", reference: key, idempotencyKey: key }, internal);
    const one = await admit();
    const two = await admit();
    expect(two.inUse).toBe(2);
    expect((await admit()).refused).toBe(AdmitRefusal.CONCURRENCY);

    const h1 = await reserve("k1");
    const usage = { model: "m", feature: "chat", inputTokens: 10n, outputTokens: 20n };
    const c = await credits.commit({ holdId: h1.holdId, amount: 40n, usage, releaseLeaseId: one.leaseId }, internal);
    expect(c.hold).toMatchObject({ charged: 40n });
    expect(c.leaseReleased).toBe(true); // the caller needs no ReleaseLease (an older billing answers false)
    expect((await limits.releaseLease({ leaseId: one.leaseId }, internal)).released).toBe(false); // already freed
    const three = await admit();
    expect(three).toMatchObject({ admitted: true, inUse: 2 });

    // A replayed commit naming the (already freed) lease: same answer, nothing else freed, nothing fails.
    let replayed = "";
    const again = await credits.commit({ holdId: h1.holdId, amount: 40n, usage, releaseLeaseId: one.leaseId }, { ...internal, onHeader: (h) => { replayed = h.get("idempotent-replayed") ?? ""; } });
    expect(replayed).toBe("true");
    expect(again.hold).toEqual(c.hold);
    expect((await admit()).refused).toBe(AdmitRefusal.CONCURRENCY); // two and three still hold their slots

    const h2 = await reserve("k2");
    expect((await credits.release({ holdId: h2.holdId, releaseLeaseId: two.leaseId }, internal)).leaseReleased).toBe(true);
    expect((await limits.releaseLease({ leaseId: two.leaseId }, internal)).released).toBe(false);
    // A replayed release frees the lease it names too (ZREM is idempotent): here `three`, which was still held.
    await credits.release({ holdId: h2.holdId, releaseLeaseId: three.leaseId }, internal);
    expect((await limits.releaseLease({ leaseId: three.leaseId }, internal)).released).toBe(false);
    expect(await limits.acquireLease({ userId: user, kind: ConcurrencyKind.CHAT_STREAM }, internal)).toMatchObject({ acquired: true, inUse: 1 });
  });

  it("a refused commit frees nothing; an unknown or malformed lease id never fails the commit (logged)", async () => {
    const limits = createClient(LimitsService, transport);
    const credits = createClient(CreditsService, transport);
    const user = await fundedAccount(t.store, 1000n);
    const lease = await limits.admit({ userId: user, feature: "reply", kind: ConcurrencyKind.IMAGE_JOB }, internal);
    const h = await credits.reserve({ accountId: user, amount: 50n, reason: "chat", reference: "r", idempotencyKey: "r" }, internal);
    const usage = { model: "m", feature: "chat", inputTokens: 1n, outputTokens: 1n };
    // More than the hold: FAILED_PRECONDITION, and the lease stays taken.
    expect((await codeOf(credits.commit({ holdId: h.holdId, amount: 51n, usage, releaseLeaseId: lease.leaseId }, internal))).code).toBe(Code.FailedPrecondition);
    expect((await limits.admit({ userId: user, feature: "reply", kind: ConcurrencyKind.IMAGE_JOB }, internal)).refused).toBe(AdmitRefusal.CONCURRENCY);

    warnings.length = 0;
    const unknown = "l1.image_job.dQ.00000000-0000-4000-8000-000000000000";
    for (const releaseLeaseId of ["forged", "x".repeat(5000), unknown]) {
      const hold = await credits.reserve({ accountId: user, amount: 5n, reason: "chat", reference: "q", idempotencyKey: `q${releaseLeaseId.length}` }, internal);
      expect((await credits.commit({ holdId: hold.holdId, amount: 1n, usage, releaseLeaseId }, internal)).hold?.charged).toBe(1n);
    }
    const rel = await credits.reserve({ accountId: user, amount: 5n, reason: "chat", reference: "z", idempotencyKey: "z" }, internal);
    expect((await credits.release({ holdId: rel.holdId, releaseLeaseId: "forged" }, internal)).hold?.released).toBe(5n);
    // The two malformed ids of the commits and the one of the release are logged; an unknown well-formed id is a no-op.
    expect(warnings.map((w) => w.msg)).toEqual(Array(3).fill("release_lease_id is not a lease id; nothing freed"));
    expect((await limits.admit({ userId: user, feature: "reply", kind: ConcurrencyKind.IMAGE_JOB }, internal)).refused).toBe(AdmitRefusal.CONCURRENCY);
  });
});
