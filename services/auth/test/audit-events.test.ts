// Other services' admin actions in auth's audit log (luna.events.audit.*): billing beside auth (its own database,
// its outbox relay) and the model registry's store and handlers (their own database and relay), all on one NATS of
// this file's own, real Postgres and Redis. A grant and a reversal by an admin, a catalog edit and switch appear in
// ListAuditEvents with actor, target and detail; a health change does not; a redelivered or re-published event and
// an idempotent retry of the grant add no row; poison events are dead-lettered without a row.
import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import type { AuditEvent } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { AdminActionRecordedSchema } from "@luna/contracts/luna/events/v1/audit_events_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { authInterceptor, clientAddressKey, createLogger, publishEvent, startOutboxRelay, type OutboxRelay } from "@luna/kit";
import { createTestDatabase, startDedicatedNats, type TestDatabase } from "@luna/kit/testing";
import {
  authRules as registryRules, createPrismaClient, createPrismaStore, defaultCatalog, migrationsDir as registryMigrations, modelInputToSpec,
  routes as registryRoutes,
} from "@luna/model-registry";
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIT_INBOX_CONSUMER, handleAuditEvent } from "../src/events/audit-events.js";
import { AuthStore } from "../src/data/store.js";
import { startBillingBeside, type BillingBeside } from "./billing-beside.js";
import { startAuth, type Harness } from "./harness.js";

let nats: Awaited<ReturnType<typeof startDedicatedNats>>;
let h: Harness;
let billing: BillingBeside;
let registryDb: TestDatabase;
let prisma: ReturnType<typeof createPrismaClient>;
let registryRelay: OutboxRelay;
let catalog: ReturnType<typeof createPrismaStore>;
let models: Client<typeof ModelAdminService>;
let adminId: string;
const silent = createLogger({ service: "audit-test", level: "silent" });

beforeAll(async () => {
  nats = await startDedicatedNats();
  h = await startAuth({}, { natsUrl: nats.url });
  billing = await startBillingBeside(h, { revocationCheckMs: 1000 });
  registryDb = await createTestDatabase({ migrationsDir: registryMigrations, prefix: "registry" });
  prisma = createPrismaClient(registryDb.url);
  registryRelay = startOutboxRelay({ databaseUrl: registryDb.url, js: jetstream(h.nc), log: silent, prune: false });
  catalog = createPrismaStore({ prisma, afterCommit: () => registryRelay.kick() });
  await catalog.seed(defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188" }).models, []);
  // The registry's handlers behind the kit's auth interceptor, verifying auth's real tokens; the client address is
  // set as the kit's server sets it.
  const verifier = h.verifier;
  models = createClient(ModelAdminService, createRouterTransport(registryRoutes({ store: catalog, log: silent }), {
    router: { interceptors: [authInterceptor({ verifier, rules: registryRules }), (next) => (req) => {
      req.contextValues.set(clientAddressKey, "198.51.100.9");
      return next(req);
    }] },
  }));
  adminId = (await h.verifier.verify(await h.adminToken())).userId;
}, 120_000);

afterAll(async () => {
  await registryRelay?.stop();
  await prisma?.$disconnect();
  await registryDb?.drop();
  await billing?.close();
  await h?.close();
  await nats?.dispose();
});

const asAdmin = async () => h.bearer(await h.adminToken());

/** Polls ListAuditEvents (as the admin) until `ok` holds. */
async function auditLog(kinds: string[], ok: (events: AuditEvent[]) => boolean, what: string, timeoutMs = 15_000): Promise<AuditEvent[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { events } = await h.admin.listAuditEvents({ kinds, page: { pageSize: 500 } }, await asAdmin());
    if (ok(events)) return events;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; audit log: ${JSON.stringify(events.map((e) => [e.kind, e.detailsJson]))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const details = (e: AuditEvent) => JSON.parse(e.detailsJson) as Record<string, unknown>;

describe("admin actions of other services in the audit log", () => {
  it("a credit grant by an admin appears with actor, target account and amount; its idempotent retries add nothing", async () => {
    const { user } = await h.signUp();
    const accountId = user!.id;
    // billing opens the account from auth's user.created (its own consumer on the same NATS)
    const req = { accountId, amount: 321n, reason: "support goodwill", idempotencyKey: `grant-${randomUUID()}` };
    for (let i = 0; ; i++) {
      try {
        await billing.admin.grantCredits(req, await asAdmin());
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100)); // the account is not open yet
      }
    }
    await billing.admin.grantCredits(req, await asAdmin()); // idempotent retry (replay)
    await billing.admin.grantCredits(req, await asAdmin());
    // A later grant to the same account is a marker: once it is in the log, so is everything published before it.
    await billing.admin.grantCredits({ ...req, amount: 1n, reason: "marker", idempotencyKey: `marker-${randomUUID()}` }, await asAdmin());
    const events = (await auditLog(["credits.granted"], (es) => es.some((e) => e.subjectId === accountId && details(e).reason === "marker"),
      "the marker grant")).filter((e) => e.subjectId === accountId);
    expect(events).toHaveLength(2);
    const grant = events.find((e) => details(e).reason === "support goodwill")!;
    expect(grant).toMatchObject({ kind: "credits.granted", actorId: adminId, subjectId: accountId, source: "127.0.0.1" });
    expect(grant.requestId).not.toBe("");
    expect(details(grant)).toMatchObject({ service: "billing", accountId, amount: "321", reason: "support goodwill", idempotencyKey: req.idempotencyKey });

    // the admin's actions are found by the admin's id, the grant by the account's
    const byAdmin = await h.admin.listAuditEvents({ userId: adminId, kinds: ["credits.granted"], page: { pageSize: 500 } }, await asAdmin());
    expect(byAdmin.events.map((e) => e.id)).toContain(grant.id);
  });

  it("a reversal appears with the account, both transfers and the amount", async () => {
    const { user } = await h.signUp();
    const accountId = user!.id;
    let transferId = "";
    for (let i = 0; !transferId; i++) {
      transferId = await billing.admin.grantCredits({ accountId, amount: 50n, reason: "by mistake", idempotencyKey: "g" }, await asAdmin())
        .then((r) => r.transferId, async (err: unknown) => {
          if (i > 100) throw err;
          await new Promise((r) => setTimeout(r, 100));
          return "";
        });
    }
    const rev = await billing.admin.reverseTransfer({ transferId, reason: "wrong account" }, await asAdmin());
    const [e] = (await auditLog(["credits.reversed"], (es) => es.some((x) => x.subjectId === accountId), "the reversal"))
      .filter((x) => x.subjectId === accountId);
    expect(e).toMatchObject({ kind: "credits.reversed", actorId: adminId });
    expect(details(e!)).toMatchObject({ accountId, amount: "50", reason: "wrong account", reversedTransferId: transferId,
      reversalTransferId: rev.transferId });
  });

  it("a catalog edit and a disable appear with the entry and what changed; a health status change does not", async () => {
    const id = defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188" }).models[0]!.id;
    const before = await catalog.getModel(id);
    expect(before).toBeDefined();
    // a health change first (the registry's prober would make it): model.changed is published, no audit fact
    expect(await catalog.recordHealth(id, { status: "AVAILABLE", reason: "", replicas: [] })).toBeDefined();
    const edited = await models.upsertModel({ model: { ...modelInputToSpec(before!), displayName: "Llama (edited)" },
      expectedVersion: before!.version + 1n }, await asAdmin());
    expect(edited.created).toBe(false);
    await models.setModelEnabled({ modelId: id, enabled: false, reason: "upstream maintenance" }, await asAdmin());
    const events = (await auditLog(["model.disabled"], (es) => es.some((e) => details(e).entryId === id), "the model switch"));
    expect(events.filter((e) => details(e).entryId === id)).toHaveLength(1);
    expect(events[0]).toMatchObject({ kind: "model.disabled", actorId: adminId, subjectId: "", source: "198.51.100.9" });
    expect(details(events[0]!)).toMatchObject({ service: "model-registry", entryType: "model", entryId: id, enabled: false,
      reason: "upstream maintenance" });
    // everything the registry recorded for this model: the edit and the switch, not the health change (which
    // bumped the version too)
    const all = await h.db.auditEvent.findMany({ where: { details: { path: ["entryId"], equals: id } }, orderBy: { createdAt: "asc" } });
    expect(all.map((e) => e.kind)).toEqual(["model.updated", "model.disabled"]);
    expect(all[0]).toMatchObject({ actorId: adminId, details: expect.objectContaining({ changedFields: ["displayName"], version: String(before!.version + 2n) }) });
    expect(details(events[0]!).version).toBe(String(before!.version + 3n));
  });

  it("a redelivered or re-published event adds no row; poison events are refused without a row", async () => {
    const eventId = randomUUID();
    const accountId = randomUUID();
    const data = toBinary(AdminActionRecordedSchema, create(AdminActionRecordedSchema, {
      meta: { eventId, occurredAt: timestampNow(), subjectId: accountId },
      action: "credits.granted", actorUserId: adminId, subjectUserId: accountId, service: "billing", source: "10.0.0.1", requestId: "r-1",
      detail: { case: "creditsGranted", value: { accountId, amount: 7n, reason: "dup", transferId: randomUUID(), idempotencyKey: "k" } },
    }));
    // Re-published with other Nats-Msg-Ids (past the stream's duplicate window, say): the inbox drops the copies.
    for (let i = 0; i < 3; i++) await publishEvent(jetstream(h.nc), "luna.events.audit.billing", data, { msgId: `${eventId}-${i}` });
    // Redelivery straight to the handler, as the consumer gets it after a lost ack.
    const store = new AuthStore(h.db);
    const log = { error: () => undefined, warn: () => undefined, info: () => undefined, debug: () => undefined };
    const msg = { subject: "luna.events.audit.billing", data, msgId: eventId };
    expect(await handleAuditEvent({ store, log }, msg)).toBe("ack");
    expect(await handleAuditEvent({ store, log }, msg)).toBe("ack");
    await auditLog(["credits.granted"], (es) => es.some((e) => e.id === eventId), "the event");
    expect(await h.db.auditEvent.count({ where: { id: eventId } })).toBe(1);
    expect(await h.db.auditEvent.count({ where: { subjectId: accountId } })).toBe(1);
    expect(await h.db.$queryRawUnsafe<unknown[]>("SELECT 1 FROM inbox_events WHERE consumer = $1 AND event_id = $2", AUDIT_INBOX_CONSUMER, eventId))
      .toHaveLength(1);
    const row = await h.db.auditEvent.findUniqueOrThrow({ where: { id: eventId } });
    expect(row).toMatchObject({ kind: "credits.granted", actorId: adminId, subjectId: accountId, requestId: "r-1", source: "10.0.0.1" });

    // Poison: each one is refused ("term": dead-lettered by the consumer) and leaves no row.
    const poison = (over: Record<string, unknown>) => {
      const id = randomUUID();
      return { id, data: toBinary(AdminActionRecordedSchema, create(AdminActionRecordedSchema, {
        meta: { eventId: id, occurredAt: timestampNow(), subjectId: accountId }, action: "credits.granted", actorUserId: adminId,
        service: "billing", detail: { case: "creditsGranted", value: { accountId, amount: 1n } }, ...over,
      })) };
    };
    const bad = [
      poison({ action: "credits.stolen" }),
      poison({ actorUserId: "" }),
      poison({ actorUserId: "not-a-uuid" }),
      poison({ subjectUserId: "not-a-uuid" }),
      poison({ action: "model.disabled" }), // action and detail disagree
      poison({ meta: { eventId: "nope" } }),
    ];
    for (const p of bad) expect(await handleAuditEvent({ store, log }, { subject: "luna.events.audit.billing", data: p.data, msgId: p.id })).toBe("term");
    expect(await handleAuditEvent({ store, log }, { subject: "luna.events.audit.billing", data: Buffer.from([0xff, 0xfe, 0x01]), msgId: randomUUID() }))
      .toBe("term");
    // a well-formed one passes the same checks (so the refusals above are about their defect)
    const good = poison({});
    expect(await handleAuditEvent({ store, log }, { subject: "luna.events.audit.billing", data: good.data, msgId: good.id })).toBe("ack");
    expect(await h.db.auditEvent.count({ where: { id: { in: bad.map((p) => p.id) } } })).toBe(0);
    expect(await h.db.auditEvent.count({ where: { id: good.id } })).toBe(1);
  });

  it("the audit kinds of other services are accepted as ListAuditEvents filters", async () => {
    for (const kind of ["credits.granted", "credits.reversed", "model.created", "model.updated", "model.enabled", "model.disabled",
      "workflow.created", "workflow.updated", "workflow.enabled", "workflow.disabled"]) {
      await h.admin.listAuditEvents({ kinds: [kind] }, await asAdmin());
    }
    await expect(h.admin.listAuditEvents({ kinds: ["credits.grantedd"] }, await asAdmin())).rejects.toThrow(/unknown kind/);
  });
});
