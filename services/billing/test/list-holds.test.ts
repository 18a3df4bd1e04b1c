// CreditsService.ListHolds: a reference's holds whatever their status, newest first, paged; for the callers'
// sweepers (chat-router learns that a reply's hold was committed before its replica died). Through an in-memory
// Connect transport over the real ledger (Postgres): bad input is INVALID_ARGUMENT naming the field, the call is
// internal only, and the lookup uses partial indexes (open holds; resolved holds by reference).
import { Code, createClient } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { HoldStatus } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { invalidPageSize, invalidPageToken } from "@luna/kit";
import { beforeAll, describe, expect, it } from "vitest";
import { LedgerStore } from "../src/data/ledger-store.js";
import type { Sql } from "../src/data/sql.js";
import { as, billingRoutesHarness, codeOf, fundedAccount, type LedgerDb } from "./helpers.js";

const h = billingRoutesHarness();
let t: LedgerDb;
let credits: ReturnType<typeof createClient<typeof CreditsService>>;
const internal = as("internal", "chat-router");
beforeAll(() => {
  t = h.t;
  credits = createClient(CreditsService, h.transport);
});

describe("ListHolds", () => {
  it("lists a reference's holds of every status, newest first, paged; other references and reasons left out", async () => {
    const acct = await fundedAccount(t.store, 1000n);
    const ref = `msg-${acct}`;
    const reserve = (key: string, reference = ref, reason = "chat") =>
      credits.reserve({ accountId: acct, amount: 10n, reason, reference, idempotencyKey: key }, internal);
    const released = await reserve("released");
    const committed = await reserve("committed");
    // Expired: a short deadline, then billing's own expiry sweep.
    const expired = (await t.ledger.reserve({ accountId: acct, amount: 10n, reason: "chat", reference: ref, idempotencyKey: "expired", ttlMs: 20 })).result;
    const open = await reserve("open");
    await reserve("other-ref", `${ref}/x`);
    await reserve("other-reason", ref, "image");
    await credits.release({ holdId: released.holdId }, internal);
    await credits.commit({ holdId: committed.holdId, amount: 4n, usage: { model: "m", feature: "chat", inputTokens: 1n, outputTokens: 2n, images: 0 } }, internal);
    await new Promise((r) => setTimeout(r, 50));
    await t.ledger.sweepExpiredHolds(100);

    const all = await credits.listHolds({ reason: "chat", reference: ref }, internal);
    expect(all.holds.map((h) => h.id)).toEqual([open.holdId, expired.holdId, committed.holdId, released.holdId]);
    expect(all.holds.map((h) => h.status)).toEqual([HoldStatus.OPEN, HoldStatus.EXPIRED, HoldStatus.COMMITTED, HoldStatus.RELEASED]);
    expect(all.holds[2]).toMatchObject({ accountId: acct, reference: ref, reason: "chat", amount: 10n, charged: 4n, released: 6n });
    expect(all.nextPageToken).toBe("");
    // ListOpenHolds still sees only the open one.
    expect((await credits.listOpenHolds({ reason: "chat", reference: ref }, internal)).holds.map((h) => h.id)).toEqual([open.holdId]);

    // Paging: every hold exactly once, in the same order.
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const p = await credits.listHolds({ reason: "chat", reference: ref, pageSize: 3, pageToken }, internal);
      seen.push(...p.holds.map((h) => h.id));
      pageToken = p.nextPageToken;
      pages++;
    } while (pageToken !== "");
    expect(pages).toBe(2);
    expect(seen).toEqual(all.holds.map((h) => h.id));
    const p1 = await credits.listHolds({ reason: "chat", reference: ref, pageSize: 1 }, internal);
    expect(p1.holds.map((h) => h.id)).toEqual([open.holdId]);
    expect((await credits.listHolds({ reason: "chat", reference: ref, pageSize: 1, pageToken: p1.nextPageToken }, internal)).holds.map((h) => h.id))
      .toEqual([expired.holdId]);

    expect((await credits.listHolds({ reason: "chat", reference: `${ref}-none` }, internal)).holds).toEqual([]);
    await credits.release({ holdId: open.holdId }, internal);
    for (const h of (await credits.listOpenHolds({ reason: "chat", reference: `${ref}/x` }, internal)).holds) await credits.release({ holdId: h.id }, internal);
    for (const h of (await credits.listOpenHolds({ reason: "image", reference: ref }, internal)).holds) await credits.release({ holdId: h.id }, internal);
  });

  it("bad input: INVALID_ARGUMENT naming the field; internal callers only", async () => {
    const ok = { reason: "chat", reference: "r" };
    for (const [field, req] of [
      ["reason", { reference: "r" }],
      ["reason", { ...ok, reason: "A B" }],
      ["reference", { reason: "chat" }],
      ["reference", { ...ok, reference: "x".repeat(201) }],
      ["reference", { ...ok, reference: "a\nb" }],
      ["page_size", { ...ok, pageSize: -1 }],
      ["page_token", { ...ok, pageToken: "garbage!" }],
      ["page_token", { ...ok, pageToken: Buffer.from("1~x").toString("base64url") }],
    ] as const) {
      const e = await codeOf(credits.listHolds(req, internal));
      expect({ field, ...e }).toMatchObject({ field, code: Code.InvalidArgument, message: expect.stringMatching(new RegExp(`^${field}: `)) });
    }
    expect((await codeOf(credits.listHolds({ reason: "chat" }, internal))).message).toBe("reference: is required");
    expect((await codeOf(credits.listHolds({ ...ok, pageSize: -1 }, internal))).message).toBe(invalidPageSize("page_size", -1).rawMessage);
    expect((await codeOf(credits.listHolds({ ...ok, pageToken: "garbage!" }, internal))).message).toBe(invalidPageToken("page_token").rawMessage);
    // A page size over the maximum is capped, not refused.
    expect((await credits.listHolds({ ...ok, pageSize: 10_000 }, internal)).holds).toEqual([]);
    expect((await codeOf(credits.listHolds(ok))).code).toBe(Code.Unauthenticated);
    expect((await codeOf(credits.listHolds(ok, as("user", "u1")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(credits.listHolds(ok, as("admin", "root")))).code).toBe(Code.PermissionDenied);
  });

  it("finds the reference's holds through the two partial indexes, not a scan of every hold", async () => {
    // The store's own statement, captured, then planned by Postgres as a generic plan (parameters unknown).
    let text = "";
    const capture: Sql = { query: async (q) => ((text = typeof q === "string" ? q : q.text), { rows: [], rowCount: 0 }) };
    await new LedgerStore(capture).listHolds({ reason: "chat", reference: "m", limit: 10 });
    const c = await t.pool.connect();
    const plan = async () => {
      const r = await c.query<{ "QUERY PLAN": string }>(`EXPLAIN EXECUTE list_holds('some-message', 'chat', NULL, NULL, 10)`);
      return r.rows.map((x) => x["QUERY PLAN"]).join("\n");
    };
    try {
      await c.query("BEGIN");
      await c.query(`PREPARE list_holds(text, text, bigint, text, int) AS ${text}`);
      // A test table is tiny (a scan would be cheapest): ask whether the indexes CAN serve the lookup.
      await c.query("SET LOCAL enable_seqscan = off");
      await c.query("SET LOCAL plan_cache_mode = force_generic_plan");
      const withIndex = await plan();
      expect(withIndex).toMatch(/holds_resolved_reference_idx/);
      expect(withIndex).toMatch(/holds_open_expires_at_idx/);
      expect(withIndex).not.toMatch(/Seq Scan/);
      // Without the index the resolved holds have nothing but a scan of every hold: the checks above would fail.
      await c.query("DROP INDEX holds_resolved_reference_idx");
      await c.query("DEALLOCATE list_holds");
      await c.query(`PREPARE list_holds(text, text, bigint, text, int) AS ${text}`);
      const without = await plan();
      expect(without).not.toMatch(/holds_resolved_reference_idx/);
      expect(without).toMatch(/Seq Scan on holds|Index Scan using holds_pkey|holds_account_id_idempotency_key_key/);
    } finally {
      await c.query("ROLLBACK");
      await c.query("DEALLOCATE ALL");
      c.release();
    }
  });
});
