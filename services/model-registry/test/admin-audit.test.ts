// An admin's catalog changes record their audit fact (luna.events.audit.model-registry) in the registry's outbox in
// the transaction of the change: who (the verified token's user), what, which entry, which fields; health updates,
// seeding, no-op switches and refused edits record none. Real Postgres, the Prisma store, the handlers behind the
// kit's auth interceptor with real signed tokens.
import { randomUUID } from "node:crypto";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { AdminActionRecordedSchema, type AdminActionRecorded } from "@luna/contracts/luna/events/v1/audit_events_pb.js";
import { ModelAdminService, ModelSpecSchema } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createPrismaClient, createPrismaStore, migrationsDir } from "../src/index.js";
import type { CatalogStore } from "../src/data/store.js";
import { modelInputToSpec, workflowInputToSpec } from "../src/domain/convert.js";
import { defaultCatalog } from "../src/domain/seed-catalog.js";
import { routes } from "../src/server/routes.js";
import { createTestAuth, type TestAuth } from "./support.js";

const catalog = defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188" });
const ADMIN_ID = randomUUID();
let db: TestDatabase;
let prisma: ReturnType<typeof createPrismaClient>;
let store: CatalogStore;
let auth: TestAuth;
let admin: Client<typeof ModelAdminService>;
let asAdmin: { headers: { authorization: string } };

/** The audit events in the outbox, oldest first. */
async function audits(): Promise<AdminActionRecorded[]> {
  const rows = await prisma.outboxEvent.findMany({ where: { subject: { startsWith: "luna.events.audit." } }, orderBy: { seq: "asc" } });
  return rows.map((r) => {
    expect(r.subject).toBe("luna.events.audit.model-registry");
    const ev = fromBinary(AdminActionRecordedSchema, r.payload);
    expect(ev.meta?.eventId).toBe(r.id);
    return ev;
  });
}
const summary = (e: AdminActionRecorded) => ({ action: e.action, target: e.meta?.subjectId, actor: e.actorUserId, ...e.detail.value });

beforeAll(async () => {
  db = await createTestDatabase({ migrationsDir });
  prisma = createPrismaClient(db.url);
  store = createPrismaStore({ prisma });
  auth = await createTestAuth();
  asAdmin = { headers: { authorization: `Bearer ${await auth.token("admin", ADMIN_ID)}` } };
  admin = createClient(ModelAdminService, createRouterTransport(routes({ store, log: { info: () => undefined } }), {
    router: { interceptors: [auth.interceptor] },
  }));
});

beforeEach(async () => {
  await prisma.catalogWorkflow.deleteMany();
  await prisma.catalogModel.deleteMany();
  await prisma.outboxEvent.deleteMany();
});

afterAll(async () => {
  await prisma?.$disconnect();
  await db?.drop();
});

const spec = () => {
  const { $typeName: _, ...fields } = modelInputToSpec(catalog.models[0]!);
  return create(ModelSpecSchema, { ...fields, id: "audited-model" });
};

describe("catalog changes in the audit outbox", () => {
  it("create, edit, disable and enable of a model: one event each, with the admin, the entry and what changed", async () => {
    const created = await admin.upsertModel({ model: spec(), expectedVersion: 0n }, asAdmin);
    await admin.upsertModel({ model: { ...spec(), displayName: "Renamed", tags: ["x"] }, expectedVersion: created.model!.model!.version }, asAdmin);
    await admin.setModelEnabled({ modelId: "audited-model", enabled: false, reason: "maintenance window" }, asAdmin);
    await admin.setModelEnabled({ modelId: "audited-model", enabled: false, reason: "maintenance window" }, asAdmin); // no-op
    await admin.setModelEnabled({ modelId: "audited-model", enabled: true, reason: "back" }, asAdmin);

    const events = await audits();
    expect(events.map(summary)).toEqual([
      expect.objectContaining({ action: "model.created", target: "audited-model", actor: ADMIN_ID, entryType: "model", entryId: "audited-model",
        enabled: true, version: 1n, changedFields: expect.arrayContaining(["displayName", "prices", "upstream"]) }),
      expect.objectContaining({ action: "model.updated", changedFields: ["displayName", "tags"], version: 2n }),
      expect.objectContaining({ action: "model.disabled", enabled: false, reason: "maintenance window", version: 3n }),
      expect.objectContaining({ action: "model.enabled", enabled: true, reason: "back", version: 4n }),
    ]);
    for (const e of events) expect(e).toMatchObject({ service: "model-registry", subjectUserId: "" });
  });

  it("workflow edits and switches are recorded; a refused edit (stale version) is not", async () => {
    await store.seed(catalog.models, catalog.workflows);
    const sdxl = catalog.workflows.find((w) => w.id === "sdxl")!;
    const current = (await store.getWorkflow("sdxl"))!;
    await admin.upsertWorkflow({ workflow: { ...workflowInputToSpec(sdxl), displayName: "SDXL 2" }, expectedVersion: current.version }, asAdmin);
    await expect(admin.upsertWorkflow({ workflow: { ...workflowInputToSpec(sdxl), displayName: "SDXL 3" }, expectedVersion: current.version }, asAdmin))
      .rejects.toMatchObject({ code: Code.Aborted });
    await admin.setWorkflowEnabled({ workflowId: "sdxl", enabled: false, reason: "bad outputs" }, asAdmin);
    expect((await audits()).map(summary)).toEqual([
      expect.objectContaining({ action: "workflow.updated", target: "sdxl", actor: ADMIN_ID, changedFields: ["displayName"] }),
      expect.objectContaining({ action: "workflow.disabled", entryType: "workflow", entryId: "sdxl", enabled: false, reason: "bad outputs" }),
    ]);
  });

  it("seeding and health status changes record no audit event (no admin made them)", async () => {
    await store.seed(catalog.models, catalog.workflows);
    const id = catalog.models[0]!.id;
    const changed = await store.recordHealth(id, { status: "AVAILABLE", reason: "", replicas: [] });
    expect(changed?.health.status).toBe("AVAILABLE"); // the change happened (and model.changed was enqueued) ...
    expect(await prisma.outboxEvent.count({ where: { subject: "luna.events.model.changed" } })).toBeGreaterThan(0);
    expect(await audits()).toEqual([]); // ... but no audit event
  });

  it("a non-admin cannot change the catalog, and nothing is recorded", async () => {
    const asUser = { headers: { authorization: `Bearer ${await auth.token("user", randomUUID())}` } };
    await expect(admin.upsertModel({ model: spec(), expectedVersion: 0n }, asUser)).rejects.toMatchObject({ code: Code.PermissionDenied });
    expect(await audits()).toEqual([]);
  });
});
