// Connect handlers: validate → store (which applies the write rules and emits events) → map to messages.
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { auditActorOf, invalidArgument, invalidPageSize, invalidPageToken, notFound, requirePrincipal, type Logger } from "@luna/kit";
import { ModelKind } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { PageRequest } from "@luna/contracts/luna/common/v1/common_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import type { CatalogStore } from "../data/store.js";
import { catalogModelToProto, catalogWorkflowToProto, modelToProto, workflowToProto } from "../domain/convert.js";
import { effectiveModelStatus } from "../domain/status.js";
import type { ModelRecord, WorkflowRecord } from "../domain/types.js";
import { checkId, checkReason, validateModelSpec, validateWorkflowSpec, type Problem } from "../domain/validate.js";

export interface RouteDeps {
  store: CatalogStore;
  log: Pick<Logger, "info">;
  /** Told about every model whose state an admin call changed (keeps the status metric current). */
  onModelChanged?: (model: ModelRecord) => void;
}

/** Method rules for the kit's auth interceptor. */
export const authRules = {
  "luna.models.v1.ModelService": "public",
  "luna.models.v1.ModelAdminService": "admin",
  "luna.models.v1.ModelUpstreamService": "internal",
} as const;

export const PAGE = { defaultSize: 100, maxSize: 500 } as const;

/** Throws INVALID_ARGUMENT naming the first bad field and listing the rest, when there are problems. */
function throwIfInvalid(problems: Problem[]): void {
  const [first, ...rest] = problems;
  if (!first) return;
  const more = rest.map((p) => `; ${p.field}: ${p.message}`).join("");
  throw invalidArgument(first.field, `${first.message}${more}`);
}

function requireValidId(field: string, id: string): void {
  const problems: Problem[] = [];
  checkId(field, id, problems);
  throwIfInvalid(problems);
}

/** Offset pagination behind an opaque token (the catalog is small and ordered by sort order, then id). */
function paginate<T>(items: T[], page: PageRequest | undefined): { items: T[]; nextPageToken: string } {
  const size = page?.pageSize ?? 0;
  if (size < 0) throw invalidPageSize("page.page_size", size);
  const limit = Math.min(size || PAGE.defaultSize, PAGE.maxSize);
  let offset = 0;
  const token = page?.pageToken ?? "";
  if (token) {
    const decoded = /^[A-Za-z0-9_-]{1,32}$/.test(token) ? Buffer.from(token, "base64url").toString("utf8") : "";
    const m = /^o:(\d{1,9})$/.exec(decoded);
    if (!m) throw invalidPageToken("page.page_token");
    offset = Number(m[1]);
  }
  const slice = items.slice(offset, offset + limit);
  const next = offset + limit < items.length ? Buffer.from(`o:${offset + limit}`).toString("base64url") : "";
  return { items: slice, nextPageToken: next };
}

function checkKindFilter(kind: ModelKind): void {
  if (kind !== ModelKind.UNSPECIFIED && kind !== ModelKind.TEXT && kind !== ModelKind.IMAGE) {
    throw invalidArgument("kind", `must be MODEL_KIND_TEXT, MODEL_KIND_IMAGE or unspecified, got ${kind}`);
  }
}

function checkExpectedVersion(v: bigint): void {
  if (v < 0n) throw invalidArgument("expected_version", `must be >= 0, got ${v}`);
}

function checkEnableReason(reason: string): void {
  const problems: Problem[] = [];
  checkReason("reason", reason, problems);
  throwIfInvalid(problems);
}

const KIND_NAME = { [ModelKind.TEXT]: "TEXT", [ModelKind.IMAGE]: "IMAGE" } as Record<number, string>;

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  const { store, log } = deps;

  const modelsById = async () => new Map((await store.listModels()).map((m) => [m.id, m]));
  const workflowVisible = (w: WorkflowRecord, models: Map<string, ModelRecord>) => {
    const m = models.get(w.modelId);
    return w.enabled && m !== undefined && effectiveModelStatus(m).status !== "DISABLED";
  };
  const admin = (ctx: HandlerContext) => requirePrincipal(ctx, "admin");
  /** The acting admin, whose changes the store records in the audit log (luna.events.audit.model-registry). */
  const auditor = (ctx: HandlerContext) => auditActorOf(ctx);

  return (router) => {
    router.service(ModelService, {
      async listModels(req) {
        checkKindFilter(req.kind);
        const wanted = KIND_NAME[req.kind];
        const visible = (await store.listModels()).filter((m) => m.enabled && (!wanted || m.kind === wanted));
        const { items, nextPageToken } = paginate(visible, req.page);
        return { models: items.map(modelToProto), page: { nextPageToken } };
      },
      async getModel(req) {
        requireValidId("model_id", req.modelId);
        const m = await store.getModel(req.modelId);
        if (!m) throw notFound(`model ${req.modelId}`);
        return { model: modelToProto(m) };
      },
      async listWorkflows(req) {
        if (req.modelId !== "") requireValidId("model_id", req.modelId);
        const models = await modelsById();
        // An unknown filter id is the caller's mistake (luna.common.v1's rule), not "no workflows".
        if (req.modelId !== "" && !models.has(req.modelId)) throw invalidArgument("model_id", `the catalog has no model "${req.modelId}"`);
        const visible = (await store.listWorkflows()).filter((w) => (req.modelId === "" || w.modelId === req.modelId) && workflowVisible(w, models));
        const { items, nextPageToken } = paginate(visible, req.page);
        return { workflows: items.map((w) => workflowToProto(w, models.get(w.modelId))), page: { nextPageToken } };
      },
      async getWorkflow(req) {
        requireValidId("workflow_id", req.workflowId);
        const w = await store.getWorkflow(req.workflowId);
        if (!w) throw notFound(`workflow ${req.workflowId}`);
        return { workflow: workflowToProto(w, await store.getModel(w.modelId)) };
      },
    });

    router.service(ModelAdminService, {
      async upsertModel(req, ctx) {
        const who = auditor(ctx);
        const { input, problems } = validateModelSpec(req.model);
        throwIfInvalid(problems);
        checkExpectedVersion(req.expectedVersion);
        const { record, created } = await store.upsertModel(input!, req.expectedVersion, who);
        log.info({ admin: who.userId, model: record.id, version: String(record.version), created }, "model upserted");
        deps.onModelChanged?.(record);
        return { model: catalogModelToProto(record), created };
      },
      async setModelEnabled(req, ctx) {
        const who = auditor(ctx);
        requireValidId("model_id", req.modelId);
        checkEnableReason(req.reason);
        const record = await store.setModelEnabled(req.modelId, req.enabled, req.reason, who);
        if (!record) throw notFound(`model ${req.modelId}`);
        log.info({ admin: who.userId, model: record.id, enabled: req.enabled, reason: req.reason }, "model switched");
        deps.onModelChanged?.(record);
        return { model: catalogModelToProto(record) };
      },
      async upsertWorkflow(req, ctx) {
        const who = auditor(ctx);
        const { input, problems } = validateWorkflowSpec(req.workflow);
        throwIfInvalid(problems);
        checkExpectedVersion(req.expectedVersion);
        const { record, created } = await store.upsertWorkflow(input!, req.expectedVersion, who);
        log.info({ admin: who.userId, workflow: record.id, version: String(record.version), created }, "workflow upserted");
        return { workflow: catalogWorkflowToProto(record, await store.getModel(record.modelId)), created };
      },
      async setWorkflowEnabled(req, ctx) {
        const who = auditor(ctx);
        requireValidId("workflow_id", req.workflowId);
        checkEnableReason(req.reason);
        const record = await store.setWorkflowEnabled(req.workflowId, req.enabled, req.reason, who);
        if (!record) throw notFound(`workflow ${req.workflowId}`);
        log.info({ admin: who.userId, workflow: record.id, enabled: req.enabled, reason: req.reason }, "workflow switched");
        return { workflow: catalogWorkflowToProto(record, await store.getModel(record.modelId)) };
      },
      async getAdminCatalog(_req, ctx) {
        admin(ctx);
        const models = await modelsById();
        return {
          models: [...models.values()].map(catalogModelToProto),
          workflows: (await store.listWorkflows()).map((w) => catalogWorkflowToProto(w, models.get(w.modelId))),
        };
      },
    });

    router.service(ModelUpstreamService, {
      async getCatalogSnapshot(_req, ctx) {
        requirePrincipal(ctx, "internal");
        const models = await modelsById();
        return {
          models: [...models.values()].map(catalogModelToProto),
          workflows: (await store.listWorkflows()).map((w) => catalogWorkflowToProto(w, models.get(w.modelId))),
        };
      },
      async getModelUpstream(req, ctx) {
        requirePrincipal(ctx, "internal");
        requireValidId("model_id", req.modelId);
        const m = await store.getModel(req.modelId);
        if (!m) throw notFound(`model ${req.modelId}`);
        return { model: catalogModelToProto(m) };
      },
    });
  };
}
