// The catalog in Postgres through Prisma. Every write runs in one transaction that locks the row, applies the
// rules (domain/rules.ts), bumps the version and enqueues `model.changed` in the outbox; `afterCommit` then wakes
// the outbox relay so the event leaves within milliseconds. An admin's write (one given an actor) also enqueues its
// audit event in that transaction.
import { PrismaPg } from "@prisma/adapter-pg";
import { aborted, enqueueEvent } from "@luna/kit";
import { PrismaClient, Prisma, type CatalogModel as ModelRow, type CatalogWorkflow as WorkflowRow } from "../generated/prisma/client.js";
import { catalogModelToProto, catalogWorkflowToProto } from "../domain/convert.js";
import { checkModelUpsert, checkWorkflowUpsert } from "../domain/rules.js";
import { healthFingerprint } from "../domain/status.js";
import { defaultProbe } from "../domain/types.js";
import type {
  BindingInput,
  HealthRecord,
  HealthStatusName,
  ModelInput,
  ModelKindName,
  ModelRecord,
  ReplicaHealthRecord,
  StyleLoraInput,
  UpstreamProbeName,
  WorkflowInput,
  WorkflowParametersInput,
  WorkflowRecord,
} from "../domain/types.js";
import { catalogAuditEvent, changedModelFields, changedWorkflowFields } from "../events/admin-audit.js";
import { modelChangedEvent } from "../events/model-changed.js";
import type { CatalogStore } from "./store.js";

type Tx = Prisma.TransactionClient;

/** Serializes concurrent seeding by several registry replicas (any constant unique to this purpose). */
const SEED_LOCK_KEY = 0x6c756e617365n; // "luna" "se"

export function createPrismaClient(databaseUrl: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
}

const PROBES: ReadonlySet<string> = new Set<UpstreamProbeName>(["OPENAI", "COMFYUI", "WORKER"]);
const isProbeName = (s: string): s is UpstreamProbeName => PROBES.has(s);

function toModelRecord(r: ModelRow): ModelRecord {
  const replicas = (r.replicaHealth as unknown as Array<Omit<ReplicaHealthRecord, "checkedAt"> & { checkedAt: string }>).map((x) => ({
    baseUrl: x.baseUrl,
    healthy: x.healthy,
    detail: x.detail,
    checkedAt: new Date(x.checkedAt),
  }));
  const kind = r.kind as ModelKindName;
  return {
    id: r.id,
    displayName: r.displayName,
    description: r.description,
    kind,
    tags: r.tags,
    contextWindow: r.contextWindow,
    maxOutputTokens: r.maxOutputTokens,
    prices: { inputPer1k: r.priceInputPer1k, outputPer1k: r.priceOutputPer1k, perImage: r.pricePerImage },
    sortOrder: r.sortOrder,
    upstream: {
      baseUrls: r.upstreamBaseUrls,
      resolveUrl: r.upstreamResolveUrl,
      apiKeyEnv: r.upstreamApiKeyEnv,
      servedModelName: r.servedModelName,
      // "" in rows written before the probe was configurable: the kind's default, as before.
      probe: isProbeName(r.upstreamProbe) ? r.upstreamProbe : defaultProbe(kind),
    },
    scaleToZero: r.scaleToZero,
    coldStartSeconds: r.coldStartSeconds,
    enabled: r.enabled,
    disabledReason: r.disabledReason,
    health: { status: r.healthStatus as HealthStatusName, reason: r.healthReason, replicas },
    version: r.version,
    updatedAt: r.updatedAt,
  };
}

function toWorkflowRecord(r: WorkflowRow): WorkflowRecord {
  return {
    id: r.id,
    modelId: r.modelId,
    displayName: r.displayName,
    description: r.description,
    tags: r.tags,
    parameters: r.parameters as unknown as WorkflowParametersInput,
    pricePerImage: r.pricePerImage,
    sortOrder: r.sortOrder,
    template: {
      graphJson: r.graphJson,
      bindings: r.bindings as unknown as BindingInput[],
      styleLoras: r.styleLoras as unknown as StyleLoraInput[],
    },
    enabled: r.enabled,
    disabledReason: r.disabledReason,
    version: r.version,
    updatedAt: r.updatedAt,
  };
}

function modelColumns(m: ModelInput) {
  return {
    displayName: m.displayName,
    description: m.description,
    kind: m.kind,
    tags: m.tags,
    contextWindow: m.contextWindow,
    maxOutputTokens: m.maxOutputTokens,
    priceInputPer1k: m.prices.inputPer1k,
    priceOutputPer1k: m.prices.outputPer1k,
    pricePerImage: m.prices.perImage,
    sortOrder: m.sortOrder,
    upstreamBaseUrls: m.upstream.baseUrls,
    upstreamResolveUrl: m.upstream.resolveUrl,
    upstreamApiKeyEnv: m.upstream.apiKeyEnv,
    servedModelName: m.upstream.servedModelName,
    upstreamProbe: m.upstream.probe,
    scaleToZero: m.scaleToZero,
    coldStartSeconds: m.coldStartSeconds,
  };
}

function workflowColumns(w: WorkflowInput) {
  return {
    modelId: w.modelId,
    displayName: w.displayName,
    description: w.description,
    tags: w.tags,
    parameters: w.parameters as unknown as Prisma.InputJsonValue,
    pricePerImage: w.pricePerImage,
    sortOrder: w.sortOrder,
    graphJson: w.template.graphJson,
    bindings: w.template.bindings as unknown as Prisma.InputJsonValue,
    styleLoras: w.template.styleLoras as unknown as Prisma.InputJsonValue,
  };
}

function replicasJson(replicas: ReplicaHealthRecord[]): Prisma.InputJsonValue {
  return replicas.map((r) => ({ baseUrl: r.baseUrl, healthy: r.healthy, detail: r.detail, checkedAt: r.checkedAt.toISOString() }));
}

const ORDER = [{ sortOrder: "asc" as const }, { id: "asc" as const }];

function isUniqueViolation(err: unknown): boolean {
  return err instanceof Prisma.PrismaClientKnownRequestError && err.code === "P2002";
}

export interface PrismaStoreOptions {
  prisma: PrismaClient;
  /** Called after each committed write that enqueued events (wakes the outbox relay). */
  afterCommit?: () => void;
}

export function createPrismaStore({ prisma, afterCommit }: PrismaStoreOptions): CatalogStore {
  const lockModel = (tx: Tx, id: string) => tx.$executeRaw`SELECT 1 FROM models WHERE id = ${id} FOR UPDATE`;
  const lockWorkflow = (tx: Tx, id: string) => tx.$executeRaw`SELECT 1 FROM workflows WHERE id = ${id} FOR UPDATE`;

  const emitModel = (tx: Tx, rec: ModelRecord) => enqueueEvent(tx, modelChangedEvent({ case: "model", value: catalogModelToProto(rec) }));
  const emitWorkflow = async (tx: Tx, rec: WorkflowRecord) => {
    const model = await tx.catalogModel.findUnique({ where: { id: rec.modelId } });
    await enqueueEvent(tx, modelChangedEvent({ case: "workflow", value: catalogWorkflowToProto(rec, model ? toModelRecord(model) : undefined) }));
  };

  /** Runs a write transaction; a unique violation means a concurrent create of the same id won. */
  async function write<T>(fn: (tx: Tx) => Promise<T>, emitted: (result: T) => boolean): Promise<T> {
    let result: T;
    try {
      result = await prisma.$transaction(fn);
    } catch (err) {
      if (isUniqueViolation(err)) throw aborted("a concurrent change created the same entry; reload and retry");
      throw err;
    }
    if (emitted(result)) afterCommit?.();
    return result;
  }

  return {
    async listModels() {
      return (await prisma.catalogModel.findMany({ orderBy: ORDER })).map(toModelRecord);
    },
    async getModel(id) {
      const row = await prisma.catalogModel.findUnique({ where: { id } });
      return row ? toModelRecord(row) : undefined;
    },
    async listWorkflows() {
      return (await prisma.catalogWorkflow.findMany({ orderBy: ORDER })).map(toWorkflowRecord);
    },
    async getWorkflow(id) {
      const row = await prisma.catalogWorkflow.findUnique({ where: { id } });
      return row ? toWorkflowRecord(row) : undefined;
    },

    upsertModel(input, expectedVersion, actor) {
      return write(
        async (tx) => {
          await lockModel(tx, input.id);
          const row = await tx.catalogModel.findUnique({ where: { id: input.id } });
          const existing = row ? toModelRecord(row) : undefined;
          const workflowCount = existing ? await tx.catalogWorkflow.count({ where: { modelId: input.id } }) : 0;
          checkModelUpsert(existing, input, expectedVersion, workflowCount);
          const saved = existing
            ? await tx.catalogModel.update({
                where: { id: input.id },
                data: { ...modelColumns(input), version: { increment: 1 }, updatedAt: new Date() },
              })
            : await tx.catalogModel.create({ data: { id: input.id, ...modelColumns(input) } });
          const record = toModelRecord(saved);
          await emitModel(tx, record);
          if (actor) {
            await enqueueEvent(tx, catalogAuditEvent(actor, "model", existing ? "updated" : "created", record,
              { changedFields: changedModelFields(existing, record) }));
          }
          return { record, created: !existing };
        },
        () => true,
      );
    },

    setModelEnabled(id, enabled, reason, actor) {
      return write(
        async (tx) => {
          await lockModel(tx, id);
          const row = await tx.catalogModel.findUnique({ where: { id } });
          if (!row) return { record: undefined, changed: false };
          const disabledReason = enabled ? "" : reason;
          if (row.enabled === enabled && row.disabledReason === disabledReason) return { record: toModelRecord(row), changed: false };
          const saved = await tx.catalogModel.update({
            where: { id },
            data: { enabled, disabledReason, version: { increment: 1 }, updatedAt: new Date() },
          });
          const record = toModelRecord(saved);
          await emitModel(tx, record);
          if (actor) await enqueueEvent(tx, catalogAuditEvent(actor, "model", enabled ? "enabled" : "disabled", record, { reason }));
          return { record, changed: true };
        },
        (r) => r.changed,
      ).then((r) => r.record);
    },

    upsertWorkflow(input, expectedVersion, actor) {
      return write(
        async (tx) => {
          await lockWorkflow(tx, input.id);
          const row = await tx.catalogWorkflow.findUnique({ where: { id: input.id } });
          const model = await tx.catalogModel.findUnique({ where: { id: input.modelId } });
          checkWorkflowUpsert(row ?? undefined, input, expectedVersion, model ? toModelRecord(model) : undefined);
          const saved = row
            ? await tx.catalogWorkflow.update({
                where: { id: input.id },
                data: { ...workflowColumns(input), version: { increment: 1 }, updatedAt: new Date() },
              })
            : await tx.catalogWorkflow.create({ data: { id: input.id, ...workflowColumns(input) } });
          const record = toWorkflowRecord(saved);
          await emitWorkflow(tx, record);
          if (actor) {
            await enqueueEvent(tx, catalogAuditEvent(actor, "workflow", row ? "updated" : "created", record,
              { changedFields: changedWorkflowFields(row ? toWorkflowRecord(row) : undefined, record) }));
          }
          return { record, created: !row };
        },
        () => true,
      );
    },

    setWorkflowEnabled(id, enabled, reason, actor) {
      return write(
        async (tx) => {
          await lockWorkflow(tx, id);
          const row = await tx.catalogWorkflow.findUnique({ where: { id } });
          if (!row) return { record: undefined, changed: false };
          const disabledReason = enabled ? "" : reason;
          if (row.enabled === enabled && row.disabledReason === disabledReason) return { record: toWorkflowRecord(row), changed: false };
          const saved = await tx.catalogWorkflow.update({
            where: { id },
            data: { enabled, disabledReason, version: { increment: 1 }, updatedAt: new Date() },
          });
          const record = toWorkflowRecord(saved);
          await emitWorkflow(tx, record);
          if (actor) await enqueueEvent(tx, catalogAuditEvent(actor, "workflow", enabled ? "enabled" : "disabled", record, { reason }));
          return { record, changed: true };
        },
        (r) => r.changed,
      ).then((r) => r.record);
    },

    async recordHealth(id, health: HealthRecord) {
      // Most probe rounds change nothing: check without a transaction or row lock first.
      const before = await prisma.catalogModel.findUnique({ where: { id } });
      if (!before || healthFingerprint(toModelRecord(before).health) === healthFingerprint(health)) return undefined;
      return write(
        async (tx) => {
          await lockModel(tx, id);
          const row = await tx.catalogModel.findUnique({ where: { id } });
          if (!row) return undefined;
          const current = toModelRecord(row);
          if (healthFingerprint(current.health) === healthFingerprint(health)) return undefined;
          const saved = await tx.catalogModel.update({
            where: { id },
            data: {
              healthStatus: health.status,
              healthReason: health.reason,
              replicaHealth: replicasJson(health.replicas),
              version: { increment: 1 },
              updatedAt: new Date(),
            },
          });
          const record = toModelRecord(saved);
          await emitModel(tx, record);
          return record;
        },
        (r) => r !== undefined,
      );
    },

    seed(models, workflows) {
      return write(
        async (tx) => {
          await tx.$executeRaw`SELECT pg_advisory_xact_lock(${SEED_LOCK_KEY})`;
          const inserted = { models: [] as string[], workflows: [] as string[] };
          for (const m of models) {
            if (await tx.catalogModel.findUnique({ where: { id: m.id }, select: { id: true } })) continue;
            const record = toModelRecord(await tx.catalogModel.create({ data: { id: m.id, ...modelColumns(m) } }));
            await emitModel(tx, record);
            inserted.models.push(m.id);
          }
          for (const w of workflows) {
            if (await tx.catalogWorkflow.findUnique({ where: { id: w.id }, select: { id: true } })) continue;
            const model = await tx.catalogModel.findUnique({ where: { id: w.modelId } });
            // An operator may have turned the seeded image model into something else; then the workflow stays out.
            if (!model || model.kind !== "IMAGE") continue;
            const record = toWorkflowRecord(await tx.catalogWorkflow.create({ data: { id: w.id, ...workflowColumns(w) } }));
            await emitWorkflow(tx, record);
            inserted.workflows.push(w.id);
          }
          return inserted;
        },
        (r) => r.models.length + r.workflows.length > 0,
      );
    },
  };
}
