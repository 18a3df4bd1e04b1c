// Billing's RPCs through an in-memory Connect transport (createRouterTransport) over the real ledger and limiter:
// auth per service, bad input on every field (INVALID_ARGUMENT naming the field, nothing written), idempotent
// replays byte-identical, and Envoy's ShouldRateLimit.
import { create, toBinary } from "@bufbuild/protobuf";
import { DurationSchema, type Duration } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Transport } from "@connectrpc/connect";
import { RateLimitResponse_Code, RateLimitService } from "@luna/contracts/envoy/service/ratelimit/v3/rls_pb.js";
import { BillingAdminService } from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { CreditsService, ReserveResponseSchema, ReserveRequestSchema } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { LedgerEntryKind } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { ConcurrencyKind, LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { invalidPageSize, invalidPageToken } from "@luna/kit";
import { beforeAll, describe, expect, it } from "vitest";
import { as, billingRoutesHarness, codeOf, fundedAccount, type LedgerDb, newAccountId } from "./helpers.js";

// The caller's identity comes from a test header instead of a JWT (helpers.ts testPrincipal, as()).
const h = billingRoutesHarness('{"roles":{"user":{"rates":{"chat":{"limit":3,"per":"minute"}}}}}');
let t: LedgerDb;
let transport: Transport;
beforeAll(() => {
  t = h.t;
  transport = h.transport;
});

const internal = as("internal", "chat-router");
const admin = as("admin", "root");


async function counts() {
  const r = await t.pool.query<{ holds: number; entries: number; keys: number; accounts: number }>(
    `SELECT (SELECT count(*) FROM holds)::int AS holds, (SELECT count(*) FROM ledger_transfers)::int AS entries,
            (SELECT count(*) FROM idempotency_keys)::int AS keys, (SELECT count(*) FROM accounts)::int AS accounts`,
  );
  return r.rows[0]!;
}

describe("auth", () => {
  it("CreditsService and LimitsService only for internal callers; admin tools only for admins", async () => {
    const credits = createClient(CreditsService, transport);
    const req = { accountId: "u1", amount: 1n, reason: "chat", idempotencyKey: "k" };
    expect((await codeOf(credits.reserve(req))).code).toBe(Code.Unauthenticated);
    expect((await codeOf(credits.reserve(req, as("user", "u1")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(credits.reserve(req, as("admin")))).code).toBe(Code.PermissionDenied);
    const limits = createClient(LimitsService, transport);
    expect((await codeOf(limits.checkRateLimit({ userId: "u1", feature: "chat" }, as("user", "u1")))).code).toBe(Code.PermissionDenied);
    const adminClient = createClient(BillingAdminService, transport);
    expect((await codeOf(adminClient.grantCredits({ accountId: "u1", amount: 5n, reason: "x", idempotencyKey: "k" }, as("user", "u1")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(adminClient.checkInvariants({}, internal))).code).toBe(Code.PermissionDenied);
  });

  it("BillingService shows the caller's own account only", async () => {
    const me = await fundedAccount(t.store, 70n);
    const billing = createClient(BillingService, transport);
    expect(await billing.getBalance({}, as("user", me))).toMatchObject({ balance: 70n, held: 0n, available: 70n });
    expect(await billing.getBalance({}, as("user", newAccountId()))).toMatchObject({ balance: 0n, available: 0n });
    expect((await codeOf(billing.getBalance({}))).code).toBe(Code.Unauthenticated);
  });
});

describe("credits flow over RPC", () => {
  it("reserve → commit with usage → history; replays are byte-identical and marked", async () => {
    const me = await fundedAccount(t.store, 1000n);
    const credits = createClient(CreditsService, transport);
    const req = { accountId: me, amount: 100n, reason: "chat", reference: "msg-1", idempotencyKey: "msg-1", ttl: create(DurationSchema, { seconds: 120n }) };
    const headers: string[] = [];
    const responses = await Promise.all(
      Array.from({ length: 50 }, () =>
        credits.reserve(req, { ...internal, onHeader: (h) => headers.push(h.get("idempotent-replayed") ?? "") }),
      ),
    );
    const bytes = new Set(responses.map((r) => Buffer.from(toBinary(ReserveResponseSchema, r)).toString("hex")));
    expect(bytes.size).toBe(1);
    expect(headers.filter((h) => h === "")).toHaveLength(1);
    expect(responses[0]!.available).toBe(900n);
    const expiresIn = Number(responses[0]!.expiresAt!.seconds) - Date.now() / 1000;
    expect(expiresIn).toBeGreaterThan(100);
    expect(expiresIn).toBeLessThanOrEqual(121);

    const other = await codeOf(credits.reserve({ ...req, amount: 101n }, internal));
    expect(other.code).toBe(Code.FailedPrecondition);
    expect(other.message).toMatch(/idempotency_key "msg-1" was already used/);

    const commit = await credits.commit(
      { holdId: responses[0]!.holdId, amount: 42n, usage: { model: "llama-3.1-8b", feature: "chat", inputTokens: 100n, outputTokens: 320n } },
      internal,
    );
    expect(commit.hold).toMatchObject({ charged: 42n, released: 58n });
    expect((await credits.getHold({ holdId: responses[0]!.holdId }, internal)).hold?.charged).toBe(42n);

    const billing = createClient(BillingService, transport);
    const history = await billing.listLedgerEntries({ page: { pageSize: 2 } }, as("user", me));
    expect(history.entries.map((e) => e.kind)).toEqual([LedgerEntryKind.RELEASE, LedgerEntryKind.CHARGE]);
    expect(history.entries[1]).toMatchObject({ amount: 42n, balanceDelta: -42n, description: "chat · llama-3.1-8b · 100 in / 320 out tokens" });
    const rest = await billing.listLedgerEntries({ page: { pageSize: 2, pageToken: history.page!.nextPageToken } }, as("user", me));
    expect(rest.entries.map((e) => e.kind)).toEqual([LedgerEntryKind.GRANT]);
    expect(rest.page!.nextPageToken).toBe("");
  });

  it("RESOURCE_EXHAUSTED carries the available amount", async () => {
    const me = await fundedAccount(t.store, 30n);
    const credits = createClient(CreditsService, transport);
    const e = await codeOf(credits.reserve({ accountId: me, amount: 31n, reason: "image", idempotencyKey: "j" }, internal));
    expect(e).toEqual({ code: Code.ResourceExhausted, message: "not enough credits: the request needs 31 credits, 30 available" });
  });

  it("admin: grant (idempotent), account, reversal, invariants", async () => {
    const me = newAccountId();
    await t.store.openAccount(me);
    const a = createClient(BillingAdminService, transport);
    const g1 = await a.grantCredits({ accountId: me, amount: 250n, reason: "beta bonus", idempotencyKey: "bonus-1" }, admin);
    const g2 = await a.grantCredits({ accountId: me, amount: 250n, reason: "beta bonus", idempotencyKey: "bonus-1" }, admin);
    expect(g2).toEqual(g1);
    await a.grantCredits({ accountId: me, amount: 5n, reason: "x", idempotencyKey: "k" }, admin);
    expect((await a.getAccount({ accountId: me }, admin)).account).toMatchObject({ balance: 255n, available: 255n });
    expect((await a.getAccount({ accountId: "system:grants" }, admin)).account!.balance).toBeLessThan(0n);
    expect((await codeOf(a.getAccount({ accountId: newAccountId() }, admin))).code).toBe(Code.NotFound);
    const rev = await a.reverseTransfer({ transferId: g1.transferId, reason: "granted twice by mistake" }, admin);
    expect(rev.amount).toBe(250n);
    const report = await a.checkInvariants({}, admin);
    expect(report).toMatchObject({ ok: true, violations: [] });
    expect(report.accountsChecked).toBeGreaterThan(2n);
  });
});

type ReserveFields = { accountId?: string; amount?: bigint; reason?: string; reference?: string; idempotencyKey?: string; ttl?: Duration };

describe("ListOpenHolds (the callers' sweepers find holds whose record was lost)", () => {
  it("open holds of one reason, by reference and age, paginated; resolved holds and other reasons left out", async () => {
    const credits = createClient(CreditsService, transport);
    const acct = await fundedAccount(t.store, 1000n);
    const reason = `sweep${Date.now() % 1_000_000}`;
    const ref = `ref-${acct}`;
    const reserve = (key: string, reference = ref, r = reason) =>
      credits.reserve({ accountId: acct, amount: 10n, reason: r, reference, idempotencyKey: key }, internal);
    const a = await reserve("a");
    const b = await reserve("b", `${ref}/other`);
    const c = await reserve("c");
    await reserve("d", ref, `${reason}x`);
    await credits.release({ holdId: c.holdId }, internal);
    const all = await credits.listOpenHolds({ reason }, internal);
    expect(all.holds.map((h) => h.id)).toEqual([a.holdId, b.holdId]);
    expect(all.holds[0]).toMatchObject({ accountId: acct, reference: ref, amount: 10n });
    expect((await credits.listOpenHolds({ reason, reference: ref }, internal)).holds.map((h) => h.id)).toEqual([a.holdId]);
    const p1 = await credits.listOpenHolds({ reason, pageSize: 1 }, internal);
    expect(p1.holds.map((h) => h.id)).toEqual([a.holdId]);
    const p2 = await credits.listOpenHolds({ reason, pageSize: 1, pageToken: p1.nextPageToken }, internal);
    expect(p2.holds.map((h) => h.id)).toEqual([b.holdId]);
    expect(p2.nextPageToken).toBe("");
    expect((await credits.listOpenHolds({ reason, createdBefore: all.holds[1]!.createdAt }, internal)).holds.map((h) => h.id)).toEqual([a.holdId]);
    expect((await credits.listOpenHolds({ reason, createdBefore: { seconds: 0n, nanos: 0 } }, internal)).holds).toEqual([]);
    // created_after is inclusive: a sweep resumes at its mark without missing a hold created at that instant.
    expect((await credits.listOpenHolds({ reason, createdAfter: all.holds[1]!.createdAt }, internal)).holds.map((h) => h.id)).toEqual([b.holdId]);
    expect((await credits.listOpenHolds({ reason, createdAfter: all.holds[0]!.createdAt, createdBefore: all.holds[1]!.createdAt }, internal)).holds.map((h) => h.id))
      .toEqual([a.holdId]);
    await credits.release({ holdId: a.holdId }, internal);
    await credits.release({ holdId: b.holdId }, internal);
    for (const [field, call] of [
      ["reason", () => credits.listOpenHolds({}, internal)],
      ["reason", () => credits.listOpenHolds({ reason: "A B" }, internal)],
      ["page_size", () => credits.listOpenHolds({ reason, pageSize: -1 }, internal)],
      ["page_token", () => credits.listOpenHolds({ reason, pageToken: "garbage!" }, internal)],
      ["page_token", () => credits.listOpenHolds({ reason, pageToken: Buffer.from("1~x").toString("base64url") }, internal)],
      ["created_before", () => credits.listOpenHolds({ reason, createdBefore: { seconds: -5n, nanos: 0 } }, internal)],
      ["created_after", () => credits.listOpenHolds({ reason, createdAfter: { seconds: 1n, nanos: 1_000_000_000 } }, internal)],
    ] as const) {
      const e = await codeOf(call());
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field}: `)) });
    }
    expect((await codeOf(credits.listOpenHolds({ reason }, as("user", acct)))).code).toBe(Code.PermissionDenied);
    // The kit's wording, as in every service's lists.
    expect((await codeOf(credits.listOpenHolds({ reason, pageSize: -1 }, internal))).message).toBe(invalidPageSize("page_size", -1).rawMessage);
    expect((await codeOf(credits.listOpenHolds({ reason, pageToken: "garbage!" }, internal))).message).toBe(invalidPageToken("page_token").rawMessage);
  });
});

describe("bad input on every field: INVALID_ARGUMENT naming the field, nothing written", () => {
  const HOLD = "00000000-0000-4000-8000-000000000000";
  const long = (n: number) => "x".repeat(n);

  it("CreditsService", async () => {
    const me = await fundedAccount(t.store, 100n);
    const credits = createClient(CreditsService, transport);
    const good: ReserveFields = { accountId: me, amount: 5n, reason: "chat", reference: "r", idempotencyKey: "k" };
    const before = await counts();
    const cases: Array<[string, ReserveFields]> = [
      ["account_id", { accountId: "" }],
      ["account_id", { accountId: "system:grants" }],
      ["account_id", { accountId: "../../etc/passwd" }],
      ["account_id", { accountId: long(129) }],
      ["amount", { amount: 0n }],
      ["amount", { amount: -5n }],
      ["amount", { amount: 10n ** 18n }],
      ["reason", { reason: "" }],
      ["reason", { reason: "Chat Reply" }],
      ["reason", { reason: long(65) }],
      ["reference", { reference: long(201) }],
      ["reference", { reference: "a\nb" }],
      ["idempotency_key", { idempotencyKey: "" }],
      ["idempotency_key", { idempotencyKey: long(201) }],
      ["idempotency_key", { idempotencyKey: "ключ" }],
      ["ttl", { ttl: create(DurationSchema, { seconds: -1n }) }],
      ["ttl", { ttl: create(DurationSchema, { nanos: 500_000_000 }) }],
    ];
    for (const [field, patch] of cases) {
      const e = await codeOf(credits.reserve(create(ReserveRequestSchema, { ...good, ...patch }), internal));
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field}: `)) });
    }
    for (const [field, call] of [
      ["hold_id", () => credits.commit({ holdId: "", amount: 1n }, internal)],
      ["hold_id", () => credits.commit({ holdId: "not-a-uuid", amount: 1n }, internal)],
      ["amount", () => credits.commit({ holdId: HOLD, amount: -1n }, internal)],
      ["usage.input_tokens", () => credits.commit({ holdId: HOLD, amount: 1n, usage: { inputTokens: -1n } }, internal)],
      ["usage.output_tokens", () => credits.commit({ holdId: HOLD, amount: 1n, usage: { outputTokens: 10n ** 15n } }, internal)],
      ["usage.images", () => credits.commit({ holdId: HOLD, amount: 1n, usage: { images: -1 } }, internal)],
      ["usage.model", () => credits.commit({ holdId: HOLD, amount: 1n, usage: { model: "<script>" } }, internal)],
      ["usage.feature", () => credits.commit({ holdId: HOLD, amount: 1n, usage: { feature: "a b" } }, internal)],
      ["hold_id", () => credits.release({ holdId: "1; DROP TABLE holds" }, internal)],
      ["hold_id", () => credits.getHold({ holdId: "" }, internal)],
    ] as const) {
      const e = await codeOf(call());
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field.replace(".", "\\.")}: `)) });
    }
    expect((await codeOf(credits.commit({ holdId: HOLD, amount: 1n }, internal))).code).toBe(Code.NotFound);
    expect(await counts()).toEqual(before);
  });

  it("BillingService and BillingAdminService", async () => {
    const me = await fundedAccount(t.store, 100n);
    const billing = createClient(BillingService, transport);
    const a = createClient(BillingAdminService, transport);
    const before = await counts();
    for (const [field, call] of [
      ["page.page_size", () => billing.listLedgerEntries({ page: { pageSize: -1 } }, as("user", me))],
      ["page.page_token", () => billing.listLedgerEntries({ page: { pageToken: "garbage!" } }, as("user", me))],
      ["page.page_token", () => billing.listLedgerEntries({ page: { pageToken: Buffer.from("1~../x").toString("base64url") } }, as("user", me))],
      ["account_id", () => a.grantCredits({ accountId: "", amount: 1n, reason: "r", idempotencyKey: "k" }, admin)],
      ["account_id", () => a.grantCredits({ accountId: "system:revenue", amount: 1n, reason: "r", idempotencyKey: "k" }, admin)],
      ["amount", () => a.grantCredits({ accountId: me, amount: 0n, reason: "r", idempotencyKey: "k" }, admin)],
      ["amount", () => a.grantCredits({ accountId: me, amount: -100n, reason: "r", idempotencyKey: "k" }, admin)],
      ["reason", () => a.grantCredits({ accountId: me, amount: 1n, reason: "", idempotencyKey: "k" }, admin)],
      ["reason", () => a.grantCredits({ accountId: me, amount: 1n, reason: long(201), idempotencyKey: "k" }, admin)],
      ["idempotency_key", () => a.grantCredits({ accountId: me, amount: 1n, reason: "r", idempotencyKey: "" }, admin)],
      ["account_id", () => a.getAccount({ accountId: "" }, admin)],
      ["account_id", () => a.getAccount({ accountId: "system:nope" }, admin)],
      ["transfer_id", () => a.reverseTransfer({ transferId: "x", reason: "r" }, admin)],
      ["reason", () => a.reverseTransfer({ transferId: HOLD, reason: "" }, admin)],
    ] as const) {
      const e = await codeOf(call());
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field.replace(".", "\\.")}: `)) });
    }
    expect(await counts()).toEqual(before);
  });

  it("LimitsService", async () => {
    const limits = createClient(LimitsService, transport);
    for (const [field, call] of [
      ["user_id", () => limits.checkRateLimit({ userId: "", feature: "chat" }, internal)],
      ["user_id", () => limits.checkRateLimit({ userId: "a b", feature: "chat" }, internal)],
      ["role", () => limits.checkRateLimit({ userId: "u", role: "root", feature: "chat" }, internal)],
      ["feature", () => limits.checkRateLimit({ userId: "u", feature: "" }, internal)],
      ["feature", () => limits.checkRateLimit({ userId: "u", feature: "../x" }, internal)],
      ["cost", () => limits.checkRateLimit({ userId: "u", feature: "chat", cost: 2_000_000 }, internal)],
      ["user_id", () => limits.acquireLease({ userId: "", kind: ConcurrencyKind.IMAGE_JOB }, internal)],
      ["kind", () => limits.acquireLease({ userId: "u", kind: ConcurrencyKind.UNSPECIFIED }, internal)],
      ["ttl", () => limits.acquireLease({ userId: "u", kind: ConcurrencyKind.IMAGE_JOB, ttl: { seconds: -5n } }, internal)],
      ["lease_id", () => limits.renewLease({ leaseId: "" }, internal)],
      ["lease_id", () => limits.releaseLease({ leaseId: "forged" }, internal)],
    ] as const) {
      const e = await codeOf(call());
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field}: `)) });
    }
  });
});

describe("limits over RPC", () => {
  it("LimitsService: rate checks and leases", async () => {
    const limits = createClient(LimitsService, transport);
    const user = newAccountId("lim");
    const d = [];
    for (let i = 0; i < 4; i++) d.push(await limits.checkRateLimit({ userId: user, feature: "chat" }, internal));
    expect(d.map((x) => x.allowed)).toEqual([true, true, true, false]);
    expect(d[3]!.retryAfter!.seconds).toBeGreaterThan(0n);
    const lease = await limits.acquireLease({ userId: user, kind: ConcurrencyKind.IMAGE_JOB }, internal);
    expect(lease).toMatchObject({ acquired: true, limit: 1, inUse: 1 });
    expect((await limits.acquireLease({ userId: user, kind: ConcurrencyKind.IMAGE_JOB }, internal)).acquired).toBe(false);
    expect((await limits.renewLease({ leaseId: lease.leaseId }, internal)).renewed).toBe(true);
    expect((await limits.releaseLease({ leaseId: lease.leaseId }, internal)).released).toBe(true);
    expect((await limits.acquireLease({ userId: user, kind: ConcurrencyKind.IMAGE_JOB }, internal)).acquired).toBe(true);
  });

  it("Envoy ShouldRateLimit: per-descriptor statuses, OVER_LIMIT when any is over, unknown domains unlimited", async () => {
    const rls = createClient(RateLimitService, transport);
    const user = newAccountId("env");
    const req = {
      domain: "luna",
      descriptors: [
        { entries: [{ key: "user_id", value: user }, { key: "feature", value: "chat" }] },
        { entries: [{ key: "something", value: "else" }] },
      ],
    };
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push(await rls.shouldRateLimit(req));
    expect(codes.map((c) => c.overallCode)).toEqual([RateLimitResponse_Code.OK, RateLimitResponse_Code.OK, RateLimitResponse_Code.OK, RateLimitResponse_Code.OVER_LIMIT]);
    expect(codes[0]!.statuses).toHaveLength(2);
    expect(codes[0]!.statuses[0]).toMatchObject({ code: RateLimitResponse_Code.OK, limitRemaining: 2, currentLimit: { requestsPerUnit: 3, unit: 2 } });
    expect(codes[3]!.statuses[1]!.code).toBe(RateLimitResponse_Code.OK);
    expect((await rls.shouldRateLimit({ ...req, domain: "other" })).overallCode).toBe(RateLimitResponse_Code.OK);
    // a descriptor-level override and hits_addend
    const overridden = await rls.shouldRateLimit({
      domain: "luna",
      hitsAddend: 5,
      descriptors: [{ entries: [{ key: "user_id", value: newAccountId("env") }], limit: { requestsPerUnit: 4, unit: 2 } }],
    });
    expect(overridden.overallCode).toBe(RateLimitResponse_Code.OVER_LIMIT);
    const flood = await codeOf(rls.shouldRateLimit({ domain: "luna", descriptors: Array.from({ length: 65 }, () => ({ entries: [] })) }));
    expect(flood).toEqual({ code: Code.InvalidArgument, message: "descriptors: at most 64 per request (got 65)" });
  });
});
