// Admin grants and reversals record their audit fact (luna.events.audit.billing) in billing's outbox in the same
// statement as the money move: one row per grant or reversal that happened, none for an idempotent replay, none for
// a refused one. Real Postgres; the handlers through an in-memory Connect transport with the caller's principal and
// client address set as the kit's server sets them.
import { randomUUID } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { BillingAdminService } from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import { AdminActionRecordedSchema, type AdminActionRecorded } from "@luna/contracts/luna/events/v1/audit_events_pb.js";
import { testServers } from "@luna/kit/testing";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRateLimiter } from "../src/limits/limiter.js";
import { parseLimitPolicy } from "../src/limits/policy.js";
import { billingRoutes } from "../src/server/routes.js";
import { as, fundedAccount, openLedgerDb, testPrincipal, type LedgerDb } from "./helpers.js";

let t: LedgerDb;
let redis: Redis;
let admin: ReturnType<typeof createClient<typeof BillingAdminService>>;
let kicks = 0;
const ADMIN_ID = randomUUID();

beforeAll(async () => {
  t = await openLedgerDb({ plainStore: true });
  redis = new Redis(testServers().redisUrl, { maxRetriesPerRequest: 1 });
  const limiter = createRateLimiter(redis, parseLimitPolicy("{}"), { keyPrefix: `aa${process.pid}${Date.now()}` });
  const transport = createRouterTransport(
    billingRoutes({ ledger: t.ledger, limiter, rateLimitDomain: "luna", kickOutbox: () => void kicks++ }),
    { router: { interceptors: [testPrincipal({ clientAddress: "203.0.113.7" })] } },
  );
  admin = createClient(BillingAdminService, transport);
});
afterAll(async () => {
  redis?.disconnect();
  await t?.close();
});

const asAdmin = as("admin", ADMIN_ID);

/** The audit events in billing's outbox about `target`, oldest first. */
async function auditEvents(target: string): Promise<AdminActionRecorded[]> {
  const { rows } = await t.pool.query<{ subject: string; payload: Buffer }>(
    "SELECT subject, payload FROM outbox_events WHERE subject LIKE 'luna.events.audit.%' ORDER BY seq");
  return rows.map((r) => {
    expect(r.subject).toBe("luna.events.audit.billing");
    return fromBinary(AdminActionRecordedSchema, r.payload);
  }).filter((e) => e.meta?.subjectId === target);
}

describe("admin actions in the audit outbox", () => {
  it("a grant writes one audit event with actor, target, amount and reason; its idempotent retry writes none", async () => {
    const account = await fundedAccount(t.store, 0n);
    const req = { accountId: account, amount: 250n, reason: "goodwill", idempotencyKey: `k-${randomUUID()}` };
    const kicksBefore = kicks;
    const first = await admin.grantCredits(req, asAdmin);
    expect(kicks).toBe(kicksBefore + 1); // the relay is woken for the new event
    const again = await admin.grantCredits(req, asAdmin);
    expect(again.transferId).toBe(first.transferId);

    const events = await auditEvents(account);
    expect(events).toHaveLength(1);
    const ev = events[0]!;
    expect(ev).toMatchObject({ action: "credits.granted", actorUserId: ADMIN_ID, service: "billing", source: "203.0.113.7" });
    expect(ev.detail.case).toBe("creditsGranted");
    expect(ev.detail.value).toMatchObject({ accountId: account, amount: 250n, reason: "goodwill", transferId: first.transferId,
      idempotencyKey: req.idempotencyKey });
    // a check that can fail: the event names this grant, not some other one
    expect(ev.detail.value).not.toMatchObject({ amount: 251n });
    // The event id is the outbox row's id (the Nats-Msg-Id) and the inbox key downstream.
    const { rows } = await t.pool.query("SELECT 1 FROM outbox_events WHERE id = $1", [ev.meta!.eventId]);
    expect(rows).toHaveLength(1);
  });

  it("a user's account (a user id) is the event's subject user", async () => {
    const account = await fundedAccount(t.store, 0n, randomUUID());
    await admin.grantCredits({ accountId: account, amount: 1n, reason: "r", idempotencyKey: "k" }, asAdmin);
    expect((await auditEvents(account))[0]).toMatchObject({ subjectUserId: account, action: "credits.granted" });
  });

  it("concurrent retries of one grant write one audit event", async () => {
    const account = await fundedAccount(t.store, 0n);
    const req = { accountId: account, amount: 40n, reason: "burst", idempotencyKey: `k-${randomUUID()}` };
    const results = await Promise.all(Array.from({ length: 8 }, () => admin.grantCredits(req, asAdmin)));
    expect(new Set(results.map((r) => r.transferId)).size).toBe(1);
    expect(await auditEvents(account)).toHaveLength(1);
    expect((await t.store.getAccount(account))?.balance).toBe(40n);
  });

  it("a refused grant (closed account, conflicting key) and a non-admin caller write nothing", async () => {
    const closed = await fundedAccount(t.store, 0n);
    await t.store.markAccountClosed(closed);
    await expect(admin.grantCredits({ accountId: closed, amount: 5n, reason: "x", idempotencyKey: "k1" }, asAdmin))
      .rejects.toMatchObject({ code: Code.FailedPrecondition });
    expect(await auditEvents(closed)).toHaveLength(0);

    const open = await fundedAccount(t.store, 0n);
    await admin.grantCredits({ accountId: open, amount: 5n, reason: "x", idempotencyKey: "k2" }, asAdmin);
    await expect(admin.grantCredits({ accountId: open, amount: 6n, reason: "x", idempotencyKey: "k2" }, asAdmin))
      .rejects.toMatchObject({ code: Code.FailedPrecondition });
    expect(await auditEvents(open)).toHaveLength(1);

    const err = await admin.grantCredits({ accountId: open, amount: 5n, reason: "x", idempotencyKey: "k3" }, as("user", randomUUID()))
      .catch((e: unknown) => e);
    expect(ConnectError.from(err).code).toBe(Code.PermissionDenied);
    expect(await auditEvents(open)).toHaveLength(1);
  });

  it("a reversal writes one audit event naming the account, the transfers and the amount; a replay writes none", async () => {
    const account = await fundedAccount(t.store, 0n);
    const grant = await admin.grantCredits({ accountId: account, amount: 70n, reason: "oops", idempotencyKey: "g" }, asAdmin);
    const rev = await admin.reverseTransfer({ transferId: grant.transferId, reason: "granted by mistake" }, asAdmin);
    const replay = await admin.reverseTransfer({ transferId: grant.transferId, reason: "granted by mistake" }, asAdmin);
    expect(replay.transferId).toBe(rev.transferId);

    const events = (await auditEvents(account)).filter((e) => e.action === "credits.reversed");
    expect(events).toHaveLength(1);
    // test account ids are not UUIDs: subject_user_id stays empty, the detail names the account
    expect(events[0]).toMatchObject({ actorUserId: ADMIN_ID, subjectUserId: "", service: "billing" });
    expect(events[0]!.detail.value).toMatchObject({ accountId: account, amount: 70n, reason: "granted by mistake",
      reversedTransferId: grant.transferId, reversalTransferId: rev.transferId });
  });

  it("a refused reversal (credits already spent) writes nothing", async () => {
    const account = await fundedAccount(t.store, 0n);
    const grant = await admin.grantCredits({ accountId: account, amount: 30n, reason: "r", idempotencyKey: "g" }, asAdmin);
    await t.ledger.reserve({ accountId: account, amount: 30n, idempotencyKey: "h", reason: "chat", reference: "h", ttlMs: 600_000 });
    await expect(admin.reverseTransfer({ transferId: grant.transferId, reason: "no" }, asAdmin))
      .rejects.toMatchObject({ code: Code.FailedPrecondition });
    expect((await auditEvents(account)).filter((e) => e.action === "credits.reversed")).toHaveLength(0);
    await expect(admin.reverseTransfer({ transferId: randomUUID(), reason: "no" }, asAdmin)).rejects.toMatchObject({ code: Code.NotFound });
  });
});
