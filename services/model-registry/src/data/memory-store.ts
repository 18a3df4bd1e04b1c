// An in-memory CatalogStore with the same rules as the Prisma store, for handler tests and tools. Events that the
// Prisma store would put in the outbox are appended to `events` instead.
import { catalogModelToProto, catalogWorkflowToProto } from "../domain/convert.js";
import { checkModelUpsert, checkWorkflowUpsert } from "../domain/rules.js";
import { healthFingerprint } from "../domain/status.js";
import type { ModelRecord, WorkflowRecord } from "../domain/types.js";
import type { OutboxEvent } from "@luna/kit";
import { catalogAuditEvent, changedModelFields, changedWorkflowFields } from "../events/admin-audit.js";
import type { ChangedEntry } from "../events/model-changed.js";
import type { CatalogStore } from "./store.js";

export interface MemoryStore extends CatalogStore {
  /** Every change announced, oldest first. */
  events: ChangedEntry[];
  /** Every admin audit event (the Prisma store's luna.events.audit.model-registry), oldest first. */
  audits: OutboxEvent[];
}

const byOrder = (a: { sortOrder: number; id: string }, b: { sortOrder: number; id: string }) =>
  a.sortOrder - b.sortOrder || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export function createMemoryStore(): MemoryStore {
  const models = new Map<string, ModelRecord>();
  const workflows = new Map<string, WorkflowRecord>();
  const events: ChangedEntry[] = [];
  const audits: OutboxEvent[] = [];
  const clone = <T>(v: T): T => structuredClone(v);

  const saveModel = (rec: ModelRecord) => {
    models.set(rec.id, rec);
    events.push({ case: "model", value: catalogModelToProto(rec) });
    return clone(rec);
  };
  const saveWorkflow = (rec: WorkflowRecord) => {
    workflows.set(rec.id, rec);
    events.push({ case: "workflow", value: catalogWorkflowToProto(rec, models.get(rec.modelId)) });
    return clone(rec);
  };

  return {
    events,
    audits,
    async listModels() {
      return [...models.values()].sort(byOrder).map(clone);
    },
    async getModel(id) {
      const m = models.get(id);
      return m && clone(m);
    },
    async listWorkflows() {
      return [...workflows.values()].sort(byOrder).map(clone);
    },
    async getWorkflow(id) {
      const w = workflows.get(id);
      return w && clone(w);
    },
    async upsertModel(input, expectedVersion, actor) {
      const existing = models.get(input.id);
      const count = [...workflows.values()].filter((w) => w.modelId === input.id).length;
      checkModelUpsert(existing, input, expectedVersion, count);
      const now = new Date();
      const record: ModelRecord = existing
        ? { ...existing, ...clone(input), version: existing.version + 1n, updatedAt: now }
        : {
            ...clone(input),
            enabled: true,
            disabledReason: "",
            health: { status: "OFFLINE", reason: "awaiting first health check", replicas: [] },
            version: 1n,
            updatedAt: now,
          };
      if (actor) audits.push(catalogAuditEvent(actor, "model", existing ? "updated" : "created", record, { changedFields: changedModelFields(existing, record) }));
      return { record: saveModel(record), created: !existing };
    },
    async setModelEnabled(id, enabled, reason, actor) {
      const m = models.get(id);
      if (!m) return undefined;
      const disabledReason = enabled ? "" : reason;
      if (m.enabled === enabled && m.disabledReason === disabledReason) return clone(m);
      const record = { ...m, enabled, disabledReason, version: m.version + 1n, updatedAt: new Date() };
      if (actor) audits.push(catalogAuditEvent(actor, "model", enabled ? "enabled" : "disabled", record, { reason }));
      return saveModel(record);
    },
    async upsertWorkflow(input, expectedVersion, actor) {
      const existing = workflows.get(input.id);
      checkWorkflowUpsert(existing, input, expectedVersion, models.get(input.modelId));
      const now = new Date();
      const record: WorkflowRecord = existing
        ? { ...existing, ...clone(input), version: existing.version + 1n, updatedAt: now }
        : { ...clone(input), enabled: true, disabledReason: "", version: 1n, updatedAt: now };
      if (actor) {
        audits.push(catalogAuditEvent(actor, "workflow", existing ? "updated" : "created", record,
          { changedFields: changedWorkflowFields(existing, record) }));
      }
      return { record: saveWorkflow(record), created: !existing };
    },
    async setWorkflowEnabled(id, enabled, reason, actor) {
      const w = workflows.get(id);
      if (!w) return undefined;
      const disabledReason = enabled ? "" : reason;
      if (w.enabled === enabled && w.disabledReason === disabledReason) return clone(w);
      const record = { ...w, enabled, disabledReason, version: w.version + 1n, updatedAt: new Date() };
      if (actor) audits.push(catalogAuditEvent(actor, "workflow", enabled ? "enabled" : "disabled", record, { reason }));
      return saveWorkflow(record);
    },
    async recordHealth(id, health) {
      const m = models.get(id);
      if (!m || healthFingerprint(m.health) === healthFingerprint(health)) return undefined;
      return saveModel({ ...m, health: clone(health), version: m.version + 1n, updatedAt: new Date() });
    },
    async seed(seedModels, seedWorkflows) {
      const inserted = { models: [] as string[], workflows: [] as string[] };
      for (const m of seedModels) {
        if (models.has(m.id)) continue;
        await this.upsertModel(m, 0n);
        inserted.models.push(m.id);
      }
      for (const w of seedWorkflows) {
        if (workflows.has(w.id) || models.get(w.modelId)?.kind !== "IMAGE") continue;
        await this.upsertWorkflow(w, 0n);
        inserted.workflows.push(w.id);
      }
      return inserted;
    },
  };
}
