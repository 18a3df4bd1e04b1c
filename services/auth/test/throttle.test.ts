// Brute-force limits and invite redemption races against real Redis and Postgres. Time is the harness clock, moved
// instead of waited for.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectRedis, createLogger } from "@luna/kit";
import { testServers } from "@luna/kit/testing";
import { PASSWORD, randomIp, rejection, startAuth, uniqueEmail, type Harness } from "./harness.js";
import { createRedisThrottle } from "../src/throttle/throttle.js";

const WRONG = "wrong password guess";

describe("invite redemption", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startAuth({ AUTH_INVITE_IP_MAX_ATTEMPTS: "5" });
  });
  afterAll(() => h?.close());

  it("20 concurrent redemptions of a single-use invite: exactly one succeeds", async () => {
    const [code] = await h.invites(1, 1);
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => h.clientsFrom(randomIp()).auth.signUp({ email: uniqueEmail(`race${i}`), password: PASSWORD, inviteCode: code!, displayName: `Racer ${i}` })),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(19);
    for (const f of failed) expect((f.reason as { code: Code }).code).toBe(Code.PermissionDenied);
    const invite = await h.db.invite.findFirstOrThrow({ where: { users: { some: {} }, codeHint: code!.slice(0, 4) } });
    expect(invite.usesLeft).toBe(0);
    expect(await h.db.user.count({ where: { inviteId: invite.id } })).toBe(1);
  });

  it("a code with 3 uses admits exactly 3 of 10 concurrent sign-ups", async () => {
    const [code] = await h.invites(1, 3);
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => h.clientsFrom(randomIp()).auth.signUp({ email: uniqueEmail(`multi${i}`), password: PASSWORD, inviteCode: code!, displayName: "M" })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(3);
  });

  it("limits failed redemption attempts per IP; other IPs are unaffected", async () => {
    const ip = randomIp();
    const client = h.clientsFrom(ip).auth;
    for (let i = 0; i < 5; i++) {
      const err = await rejection(client.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ" + i, displayName: "G" }));
      expect(err.code).toBe(Code.PermissionDenied);
    }
    const [good] = await h.invites(1);
    const blocked = await rejection(client.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: good!, displayName: "G" }));
    expect(blocked.code).toBe(Code.ResourceExhausted);
    expect(Number(blocked.metadata.get("retry-after"))).toBeGreaterThan(0);
    expect((await h.clientsFrom(randomIp()).auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: good!, displayName: "G" })).user).toBeDefined();
    h.clock.advance(h.config.AUTH_INVITE_IP_WINDOW + 1000);
    const [another] = await h.invites(1);
    expect((await client.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: another!, displayName: "G" })).user).toBeDefined();
  });
});

describe("sign-in throttling per account", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startAuth({ AUTH_SIGNIN_BASE_DELAY: "1s", AUTH_SIGNIN_MAX_DELAY: "8s" });
  });
  afterAll(() => h?.close());

  it("adds a progressive delay after 5 consecutive failures; success resets it", async () => {
    const email = uniqueEmail();
    await h.signUp(email);
    for (let i = 0; i < 5; i++) expect((await rejection(h.auth.signIn({ email, password: WRONG }))).code).toBe(Code.Unauthenticated);
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const blocked = await rejection(h.auth.signIn({ email, password: PASSWORD }));
      expect(blocked.code).toBe(Code.ResourceExhausted);
      const wait = Number(blocked.metadata.get("retry-after"));
      delays.push(wait);
      h.clock.advance(wait * 1000);
      expect((await rejection(h.auth.signIn({ email, password: WRONG }))).code).toBe(Code.Unauthenticated);
    }
    expect(delays).toEqual([1, 2, 4, 8, 8]);
    h.clock.advance(8000);
    expect((await h.auth.signIn({ email, password: PASSWORD })).user?.email).toBe(email);
    // Reset: the next failures are free again.
    for (let i = 0; i < 5; i++) expect((await rejection(h.auth.signIn({ email, password: WRONG }))).code).toBe(Code.Unauthenticated);
  });

  it("in delay mode, concurrent guesses get one attempt", async () => {
    const email = uniqueEmail();
    await h.signUp(email);
    for (let i = 0; i < 5; i++) await rejection(h.auth.signIn({ email, password: WRONG }));
    h.clock.advance(1000);
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => h.auth.signIn({ email, password: WRONG })));
    const codes = results.map((r) => (r as PromiseRejectedResult).reason.code as Code);
    expect(codes.filter((c) => c === Code.Unauthenticated)).toHaveLength(1);
    expect(codes.filter((c) => c === Code.ResourceExhausted)).toHaveLength(9);
  });

  it("throttles unknown emails exactly like real ones (no account enumeration)", async () => {
    const ghost = uniqueEmail("ghost");
    for (let i = 0; i < 5; i++) expect((await rejection(h.auth.signIn({ email: ghost, password: WRONG }))).code).toBe(Code.Unauthenticated);
    expect((await rejection(h.auth.signIn({ email: ghost, password: WRONG }))).code).toBe(Code.ResourceExhausted);
  });

  it("allows at most 100 failed sign-ins per account per hour, from any number of IPs, then recovers", async () => {
    const email = uniqueEmail();
    await h.signUp(email);
    let failures = 0;
    let blocked: Awaited<ReturnType<typeof rejection>> | undefined;
    const start = h.clock.now().getTime();
    while (h.clock.now().getTime() - start < 3_600_000 && !blocked) {
      const err = await rejection(h.clientsFrom(randomIp()).auth.signIn({ email, password: WRONG }));
      if (err.code === Code.Unauthenticated) failures++;
      else if (err.rawMessage.includes("try again")) {
        const wait = Number(err.metadata.get("retry-after"));
        if (failures >= 100) blocked = err;
        else h.clock.advance(wait * 1000);
      }
    }
    expect(failures).toBe(100);
    expect(await h.counter("luna_auth_sign_ins_total", "wrong_credentials")).toBeGreaterThanOrEqual(100);
    expect(blocked?.code).toBe(Code.ResourceExhausted);
    // Even the right password waits: the account is not guessable, but it is not locked for longer than the hour.
    expect((await rejection(h.auth.signIn({ email, password: PASSWORD }))).code).toBe(Code.ResourceExhausted);
    h.clock.advance(3_600_000);
    expect((await h.auth.signIn({ email, password: PASSWORD })).user?.email).toBe(email);
  });
});

describe("sign-in throttling under a burst", () => {
  let h: Harness;
  beforeAll(async () => {
    // A long first delay, so the real time a sequence of 100 calls takes never reopens the gate.
    h = await startAuth({ AUTH_SIGNIN_BASE_DELAY: "60s", AUTH_SIGNIN_MAX_DELAY: "120s" });
  });
  afterAll(() => h?.close());

  /** Real password checks (argon2 + compare) among the outcomes: each one answers UNAUTHENTICATED. */
  const checks = (codes: Code[]) => codes.filter((c) => c === Code.Unauthenticated).length;
  const codeOf = (r: PromiseSettledResult<unknown>) => (r.status === "rejected" ? (r.reason as { code: Code }).code : Code.Unknown);

  it("100 concurrent wrong passwords get exactly as many password checks as 100 sent one after another", async () => {
    const sequenced = uniqueEmail("seq");
    const burst = uniqueEmail("burst");
    await h.signUp(sequenced);
    await h.signUp(burst);
    const seqCodes: Code[] = [];
    for (let i = 0; i < 100; i++) seqCodes.push(codeOf((await Promise.allSettled([h.clientsFrom(randomIp()).auth.signIn({ email: sequenced, password: WRONG })]))[0]!));
    const before = await h.counter("luna_auth_sign_ins_total", "wrong_credentials");
    const results = await Promise.allSettled(Array.from({ length: 100 }, () => h.clientsFrom(randomIp()).auth.signIn({ email: burst, password: WRONG })));
    const burstCodes = results.map(codeOf);
    // 5 free failures; the fifth sets the progressive delay, which outlasts the rest of the run.
    expect(checks(seqCodes)).toBe(h.config.AUTH_SIGNIN_FREE_FAILURES);
    expect(checks(burstCodes)).toBe(checks(seqCodes));
    expect(burstCodes.filter((c) => c === Code.ResourceExhausted)).toHaveLength(100 - checks(seqCodes));
    expect(await h.counter("luna_auth_sign_ins_total", "wrong_credentials") - before).toBe(checks(seqCodes));
    // The gate holds for the burst's account like for the sequence's: the right password waits too.
    expect((await rejection(h.auth.signIn({ email: burst, password: PASSWORD }))).code).toBe(Code.ResourceExhausted);
  });
});

describe("sign-in throttling per IP", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startAuth({ AUTH_SIGNIN_IP_MAX_FAILURES: "10", AUTH_SIGNIN_IP_WINDOW: "15m" });
  });
  afterAll(() => h?.close());

  it("limits failures from one IP across accounts; other IPs and the window's end unblock", async () => {
    const ip = randomIp();
    const attacker = h.clientsFrom(ip).auth;
    for (let i = 0; i < 10; i++) expect((await rejection(attacker.signIn({ email: uniqueEmail(), password: WRONG }))).code).toBe(Code.Unauthenticated);
    const email = uniqueEmail();
    await h.signUp(email);
    const blocked = await rejection(attacker.signIn({ email, password: PASSWORD }));
    expect(blocked.code).toBe(Code.ResourceExhausted);
    expect((await h.clientsFrom(randomIp()).auth.signIn({ email, password: PASSWORD })).user).toBeDefined();
    h.clock.advance(15 * 60_000 + 1000);
    expect((await attacker.signIn({ email, password: PASSWORD })).user).toBeDefined();
  });

  it("uses the peer-facing hop of x-forwarded-for, not what the client prepended", async () => {
    const ip = randomIp();
    for (let i = 0; i < 10; i++) {
      // A client rotating a fake first entry still lands in the bucket of the address the gateway appended.
      await rejection(h.auth.signIn({ email: uniqueEmail(), password: WRONG }, { headers: { "x-forwarded-for": `${randomIp()}, ${ip}` } }));
    }
    const err = await rejection(h.auth.signIn({ email: uniqueEmail(), password: WRONG }, { headers: { "x-forwarded-for": `1.2.3.4, ${ip}` } }));
    expect(err.code).toBe(Code.ResourceExhausted);
  });
});

describe("client address behind several proxies (the kit's trusted-proxy setting)", () => {
  // Test clients reach the server from 127.0.0.1: that peer plays the gateway, and x-forwarded-for carries what a
  // load balancer and the gateway appended. Each case's attacker rotates a fake first entry on every attempt.
  const attack = async (h: Harness, forwarded: () => string) => {
    for (let i = 0; i < 5; i++) {
      const err = await rejection(h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: `ZZZZZ-ZZZZZ-ZZZZZ-ZZZZ${i}`, displayName: "G" }, { headers: { "x-forwarded-for": forwarded() } }));
      expect(err.code).toBe(Code.PermissionDenied);
    }
  };
  const redeem = async (h: Harness, forwardedFor: string) => {
    const [code] = await h.invites(1);
    return h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: code!, displayName: "G" }, { headers: { "x-forwarded-for": forwardedFor } }).then(() => "ok", (e: unknown) => ConnectError.from(e).code);
  };

  for (const [name, trustedProxies] of [
    ["hop count (LUNA_TRUSTED_PROXY_HOPS=2)", { hops: 2, cidrs: [] }],
    ["CIDR list (LUNA_TRUSTED_PROXIES=127.0.0.0/8,10.99.0.0/16)", { hops: 0, cidrs: ["127.0.0.0/8", "10.99.0.0/16"] }],
  ] as const) {
    it(`invite throttles key on the client, not on a proxy: ${name}`, async () => {
      const h = await startAuth({ AUTH_INVITE_IP_MAX_ATTEMPTS: "5" }, { trustedProxies: { hops: trustedProxies.hops, cidrs: [...trustedProxies.cidrs] } });
      try {
        const attacker = randomIp().replace(/^10\./, "203.");
        const balancer = "10.99.0.7";
        await attack(h, () => `${randomIp()}, ${attacker}, ${balancer}`);
        // The attacker is out of attempts, whatever it prepends; everybody else behind the same balancer is not.
        expect(await redeem(h, `${randomIp()}, ${attacker}, ${balancer}`)).toBe(Code.ResourceExhausted);
        expect(await redeem(h, `198.51.100.23, ${balancer}`)).toBe("ok");
        expect(await redeem(h, `198.51.100.24, ${balancer}`)).toBe("ok");
      } finally {
        await h.close();
      }
    });
  }
});

describe("requests without a known client IP", () => {
  it("share no IP bucket (per-account limits still apply)", async () => {
    const log = createLogger({ service: "auth-test", level: "silent" });
    const redis = connectRedis(testServers().redisUrl, { log });
    try {
      const throttle = createRedisThrottle({
        redis, log, keyPrefix: `luna:auth-test:${Date.now()}:`,
        signIn: { maxFailuresPerHour: 100, freeFailures: 50, baseDelayMs: 1000, maxDelayMs: 1000, ipMaxFailures: 2, ipWindowMs: 60_000 },
        invite: { ipMaxAttempts: 2, ipWindowMs: 60_000 },
      });
      for (let i = 0; i < 5; i++) {
        const d = await throttle.beginSignIn(uniqueEmail(), "unknown");
        expect(d.allowed).toBe(true);
        if (d.allowed) await throttle.signInFailed("x", "unknown", d.attemptId);
        expect((await throttle.beginInviteRedemption("unknown")).allowed).toBe(true);
      }
      // A known IP with the same policy is limited after 2.
      const ip = randomIp();
      expect((await throttle.beginSignIn(uniqueEmail(), ip)).allowed).toBe(true);
      expect((await throttle.beginSignIn(uniqueEmail(), ip)).allowed).toBe(true);
      expect((await throttle.beginSignIn(uniqueEmail(), ip)).allowed).toBe(false);
    } finally {
      redis.disconnect();
    }
  });
});

describe("throttle without Redis", () => {
  it("fails open (documented): attempts are allowed while Redis is unreachable", async () => {
    const log = createLogger({ service: "auth-test", level: "silent" });
    const redis = connectRedis("redis://127.0.0.1:1", { log, commandTimeoutMs: 200, connectTimeoutMs: 200, maxRetriesPerRequest: 0 });
    try {
      const throttle = createRedisThrottle({
        redis, log,
        signIn: { maxFailuresPerHour: 1, freeFailures: 1, baseDelayMs: 1000, maxDelayMs: 1000, ipMaxFailures: 1, ipWindowMs: 1000 },
        invite: { ipMaxAttempts: 1, ipWindowMs: 1000 },
      });
      expect((await throttle.beginSignIn("a@b.io", "10.0.0.1")).allowed).toBe(true);
      expect((await throttle.beginInviteRedemption("10.0.0.1")).allowed).toBe(true);
    } finally {
      redis.disconnect();
    }
  });
});
