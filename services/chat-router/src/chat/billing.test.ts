// BillingClient against in-memory fakes of billing's CreditsService and LimitsService (createRouterTransport).
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { HoldStatus } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { AdmitRefusal, LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { notEnoughCredits } from "@luna/kit";
import { describe, expect, it } from "vitest";
import { BillingClient } from "./billing.js";

const log = { warn: () => {}, error: () => {} };
const prices = { inputPer1k: 10n, outputPer1k: 1000n };
const input = { userId: "u1", messageId: "m1", prices, promptTokens: 100, outputTokens: 500, minOutputTokens: 16, ttlMs: 60_000 };

function fakeBilling(available: bigint, opts: { replayStatus?: HoldStatus; failCommits?: number; refuse?: AdmitRefusal } = {}) {
  const reserves: bigint[] = [];
  const settledLeases: string[] = [];
  const freedLeases: string[] = [];
  let commits = 0;
  const transport = createRouterTransport((router) => {
    router.service(CreditsService, {
      reserve(req, ctx) {
        reserves.push(req.amount);
        if (opts.replayStatus !== undefined) {
          ctx.responseHeader.set("idempotent-replayed", "true");
          return { holdId: "h-old", amount: req.amount, available: 0n };
        }
        // Billing's refusal, in the kit's wording (the chat client reads the available credits back from it).
        if (req.amount > available) throw notEnoughCredits("the request", req.amount, available);
        return { holdId: "h1", amount: req.amount, available: available - req.amount };
      },
      getHold: () => ({ hold: { id: "h-old", status: opts.replayStatus ?? HoldStatus.OPEN } }),
      commit(req) {
        settledLeases.push(req.releaseLeaseId);
        if (commits++ < (opts.failCommits ?? 0)) throw new ConnectError("down", Code.Unavailable);
        return { hold: { id: req.holdId, status: HoldStatus.COMMITTED, charged: req.amount }, leaseReleased: req.releaseLeaseId !== "" };
      },
      release: (req) => {
        settledLeases.push(req.releaseLeaseId);
        return { hold: { id: req.holdId, status: HoldStatus.RELEASED }, leaseReleased: req.releaseLeaseId !== "" };
      },
    });
    router.service(LimitsService, {
      releaseLease: (req) => {
        freedLeases.push(req.leaseId);
        return { released: true };
      },
      admit: (req) => {
        if (opts.refuse === AdmitRefusal.RATE) return { refused: AdmitRefusal.RATE, rateLimit: 20, retryAfter: { seconds: 3n, nanos: 0 }, leaseLimit: 2, inUse: 1 };
        if (opts.refuse === AdmitRefusal.CONCURRENCY) return { refused: AdmitRefusal.CONCURRENCY, rateLimit: 20, rateRemaining: 5, leaseLimit: 2, inUse: 2 };
        return { admitted: true, leaseId: `lease-of-${req.userId}`, rateLimit: 20, rateRemaining: 19, leaseLimit: 2, inUse: 1 };
      },
    });
  });
  return { client: new BillingClient(transport, log), reserves, settledLeases, freedLeases };
}

describe("BillingClient.reserveReply", () => {
  it("holds the worst case when it is affordable", async () => {
    const { client, reserves } = fakeBilling(10_000n);
    const h = await client.reserveReply(input);
    expect(h).toEqual({ holdId: "h1", amount: 501n, available: 10_000n - 501n, outputTokens: 500 });
    expect(reserves).toEqual([501n]);
  });

  it("lowers the output budget to what the available credits pay for, with the same idempotency key", async () => {
    const { client, reserves } = fakeBilling(101n);
    const h = await client.reserveReply(input);
    // 101 credits - 1 for the prompt → 100 output tokens at 1 credit each.
    expect(h.outputTokens).toBe(100);
    expect(h.amount).toBe(101n);
    expect(reserves).toEqual([501n, 101n]);
  });

  it("refuses with RESOURCE_EXHAUSTED and the balance below a minimal reply", async () => {
    const { client } = fakeBilling(10n);
    const err = await client.reserveReply(input).catch((e: unknown) => e as ConnectError);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((err as ConnectError).rawMessage).toBe("not enough credits: a reply (100 prompt tokens and at least 16 reply tokens) needs 17 credits, 10 available");
  });

  it("refuses a replayed hold that is no longer open", async () => {
    const { client } = fakeBilling(10_000n, { replayStatus: HoldStatus.RELEASED });
    const err = await client.reserveReply(input).catch((e: unknown) => e as ConnectError);
    expect((err as ConnectError).code).toBe(Code.Aborted);
  });

  it("needs no hold for a free model", async () => {
    const { client, reserves } = fakeBilling(0n);
    const h = await client.reserveReply({ ...input, prices: { inputPer1k: 0n, outputPer1k: 0n } });
    expect(h.holdId).toBe("");
    expect(reserves).toEqual([]);
  });
});

describe("BillingClient limits and settlement", () => {
  it("turns Admit's refusals into RESOURCE_EXHAUSTED with the limit that refused", async () => {
    const p = { userId: "u1", role: "user" as const, tokenId: "t" };
    const rate = await fakeBilling(0n, { refuse: AdmitRefusal.RATE }).client.admit(p, 60_000).catch((e: unknown) => e as ConnectError);
    expect((rate as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((rate as ConnectError).rawMessage).toBe("rate limit: at most 20 chat requests per minute; retry in 3s");
    const lease = await fakeBilling(0n, { refuse: AdmitRefusal.CONCURRENCY }).client.admit(p, 60_000).catch((e: unknown) => e as ConnectError);
    expect((lease as ConnectError).code).toBe(Code.ResourceExhausted);
    expect((lease as ConnectError).rawMessage).toBe("too many replies in progress: at most 2 at a time");
    expect(await fakeBilling(0n).client.admit(p, 60_000)).toBe("lease-of-u1");
  });

  it("retries a commit through a transient billing outage, naming the lease to free on every attempt", async () => {
    const { client, settledLeases } = fakeBilling(0n, { failCommits: 2 });
    const hold = await client.commit("h1", 7n, { model: "m", inputTokens: 1, outputTokens: 2 }, "lease-1");
    expect(hold?.charged).toBe(7n);
    expect(settledLeases).toEqual(["lease-1", "lease-1", "lease-1"]);
    await client.release("h2", "lease-2");
    await client.release("h3");
    expect(settledLeases.slice(3)).toEqual(["lease-2", ""]);
  });

  it("asks for no ReleaseLease when billing freed the lease with the hold", async () => {
    const { client, freedLeases } = fakeBilling(0n);
    await client.commit("h1", 7n, { model: "m", inputTokens: 1, outputTokens: 2 }, "lease-1");
    await client.release("h2", "lease-2");
    await new Promise((r) => setTimeout(r, 10));
    expect(freedLeases).toEqual([]);
  });
});

/**
 * Billing as the version before Admit and release_lease_id answers (services are released independently): no Admit
 * (UNIMPLEMENTED), and Commit/Release ignore the lease they are given.
 */
function olderBilling(opts: { rateAllowed?: boolean; leaseAcquired?: boolean } = {}) {
  const calls: string[] = [];
  const transport = createRouterTransport((router) => {
    router.service(CreditsService, {
      commit: (req) => (calls.push("commit"), { hold: { id: req.holdId, status: HoldStatus.COMMITTED, charged: req.amount } }),
      release: (req) => (calls.push("release"), { hold: { id: req.holdId, status: HoldStatus.RELEASED } }),
    });
    router.service(LimitsService, {
      checkRateLimit: () => (calls.push("checkRateLimit"), { allowed: opts.rateAllowed ?? true, limit: 20, retryAfter: { seconds: 2n, nanos: 0 } }),
      acquireLease: () => (calls.push("acquireLease"), { acquired: opts.leaseAcquired ?? true, leaseId: "old-lease", limit: 2 }),
      releaseLease: (req) => (calls.push(`releaseLease ${req.leaseId}`), { released: true }),
    });
  });
  return { client: new BillingClient(transport, log), calls };
}

describe("BillingClient with a billing of the version before Admit", () => {
  const p = { userId: "u1", role: "user" as const, tokenId: "t" };

  it("admits with CheckRateLimit + AcquireLease, and stops asking for Admit for a while", async () => {
    const { client, calls } = olderBilling();
    expect(await client.admit(p, 60_000)).toBe("old-lease");
    expect(await client.admit(p, 60_000)).toBe("old-lease");
    expect(calls.sort()).toEqual(["acquireLease", "acquireLease", "checkRateLimit", "checkRateLimit"]);
  });

  it("refuses with the same messages, and frees a lease taken for a request the rate refused", async () => {
    const rate = olderBilling({ rateAllowed: false });
    const err = await rate.client.admit(p, 60_000).catch((e: unknown) => e as ConnectError);
    expect((err as ConnectError).rawMessage).toBe("rate limit: at most 20 chat requests per minute; retry in 2s");
    await new Promise((r) => setTimeout(r, 10));
    expect(rate.calls).toContain("releaseLease old-lease");
    const busy = await olderBilling({ leaseAcquired: false }).client.admit(p, 60_000).catch((e: unknown) => e as ConnectError);
    expect((busy as ConnectError).rawMessage).toBe("too many replies in progress: at most 2 at a time");
  });

  it("frees the lease itself when billing's Commit or Release ignored it", async () => {
    const { client, calls } = olderBilling();
    await client.commit("h1", 7n, { model: "m", inputTokens: 1, outputTokens: 2 }, "lease-1");
    await client.release("h2", "lease-2");
    await client.release("h3");
    await new Promise((r) => setTimeout(r, 10));
    expect(calls).toEqual(["commit", "releaseLease lease-1", "release", "releaseLease lease-2", "release"]);
  });
});

describe("BillingClient.holdsOf (the sweeper's look for a message's holds of any status)", () => {
  it("reads every page, asking for the message's chat holds", async () => {
    const asked: Array<{ reason: string; reference: string; pageToken: string }> = [];
    const transport = createRouterTransport((router) => {
      router.service(CreditsService, {
        listHolds: (req) => {
          asked.push({ reason: req.reason, reference: req.reference, pageToken: req.pageToken });
          return req.pageToken === ""
            ? { holds: [{ id: "h2", status: HoldStatus.COMMITTED, charged: 3n }], nextPageToken: "p2" }
            : { holds: [{ id: "h1", status: HoldStatus.RELEASED }], nextPageToken: "" };
        },
      });
    });
    const holds = await new BillingClient(transport, log).holdsOf("m1");
    expect(holds?.map((h) => [h.id, h.status])).toEqual([["h2", HoldStatus.COMMITTED], ["h1", HoldStatus.RELEASED]]);
    expect(asked).toEqual([{ reason: "chat", reference: "m1", pageToken: "" }, { reason: "chat", reference: "m1", pageToken: "p2" }]);
  });

  it("a billing without ListHolds (UNIMPLEMENTED): undefined, logged once, not asked again for a while; other errors are thrown", async () => {
    const warnings: string[] = [];
    let calls = 0;
    const older = createRouterTransport((router) => {
      router.service(CreditsService, { getHold: () => ({ hold: { id: "h" } }) });
    }, { router: { interceptors: [(next) => (req) => (calls++, next(req))] } });
    const client = new BillingClient(older, { warn: (_o, msg) => void warnings.push(msg ?? ""), error: () => {} });
    expect(await client.holdsOf("m1")).toBeUndefined();
    expect(await client.holdsOf("m2")).toBeUndefined();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/no CreditsService\.ListHolds/);
    expect(calls).toBe(1); // the second sweep did not ask again
    const down = createRouterTransport((router) => {
      router.service(CreditsService, { listHolds: () => { throw new ConnectError("down", Code.Unavailable); } });
    });
    await expect(new BillingClient(down, log).holdsOf("m1")).rejects.toMatchObject({ code: Code.Unavailable });
  });
});
