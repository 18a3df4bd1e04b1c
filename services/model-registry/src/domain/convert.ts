// Mapping between the registry's records and the luna.models.v1 messages.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { effectiveWorkflowStatus, negativePromptSupported } from "@luna/kit";
import {
  CatalogModelSchema,
  CatalogWorkflowSchema,
  ModelKind,
  ModelSchema,
  ModelStatus,
  ModelUpstreamSchema,
  UpstreamProbe,
  WorkflowSchema,
  type CatalogModel,
  type CatalogWorkflow,
  type Model,
  type Workflow,
} from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelSpecSchema, WorkflowSpecSchema, type ModelSpec, type WorkflowSpec } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { effectiveModelStatus, type StatusName } from "./status.js";
import type { ModelInput, ModelRecord, WorkflowInput, WorkflowRecord } from "./types.js";

export const STATUS_ENUM: Record<StatusName, ModelStatus> = {
  AVAILABLE: ModelStatus.AVAILABLE,
  DEGRADED: ModelStatus.DEGRADED,
  OFFLINE: ModelStatus.OFFLINE,
  STANDBY: ModelStatus.STANDBY,
  DISABLED: ModelStatus.DISABLED,
};

export const KIND_ENUM = { TEXT: ModelKind.TEXT, IMAGE: ModelKind.IMAGE } as const;

export const PROBE_ENUM = { OPENAI: UpstreamProbe.OPENAI, COMFYUI: UpstreamProbe.COMFYUI, WORKER: UpstreamProbe.WORKER } as const;

/** The public view of a model. */
export function modelToProto(m: ModelRecord): Model {
  const { status, reason } = effectiveModelStatus(m);
  return create(ModelSchema, {
    id: m.id,
    displayName: m.displayName,
    description: m.description,
    kind: KIND_ENUM[m.kind],
    tags: m.tags,
    contextWindow: m.contextWindow,
    maxOutputTokens: m.maxOutputTokens,
    prices: { inputPer1kTokens: m.prices.inputPer1k, outputPer1kTokens: m.prices.outputPer1k, perImage: m.prices.perImage },
    status: STATUS_ENUM[status],
    statusReason: reason,
    sortOrder: m.sortOrder,
    version: m.version,
    updatedAt: timestampFromDate(m.updatedAt),
    scaleToZero: m.scaleToZero,
    coldStartSeconds: m.coldStartSeconds,
  });
}

/** The internal view: the model with its upstream and replica health. */
export function catalogModelToProto(m: ModelRecord): CatalogModel {
  return create(CatalogModelSchema, {
    model: modelToProto(m),
    upstream: create(ModelUpstreamSchema, {
      modelId: m.id,
      baseUrls: m.upstream.baseUrls,
      resolveUrl: m.upstream.resolveUrl,
      apiKeyEnv: m.upstream.apiKeyEnv,
      servedModelName: m.upstream.servedModelName,
      probe: PROBE_ENUM[m.upstream.probe],
      replicas: m.health.replicas.map((r) => ({ baseUrl: r.baseUrl, healthy: r.healthy, detail: r.detail, checkedAt: timestampFromDate(r.checkedAt) })),
    }),
  });
}

/** The public view of a workflow; its status combines its own switch with its model's status. */
export function workflowToProto(w: WorkflowRecord, model: ModelRecord | undefined): Workflow {
  const { status, reason } = effectiveWorkflowStatus(w, model ? modelToProto(model) : undefined);
  const p = w.parameters;
  return create(WorkflowSchema, {
    id: w.id,
    modelId: w.modelId,
    displayName: w.displayName,
    description: w.description,
    tags: w.tags,
    parameters: {
      sizes: p.sizes,
      defaultSize: p.defaultSize,
      maxImages: p.maxImages,
      minSteps: p.minSteps,
      maxSteps: p.maxSteps,
      defaultSteps: p.defaultSteps,
      styles: p.styles,
      defaultStyleId: p.defaultStyleId,
      negativePromptSupported: negativePromptSupported(w.template),
      maxPromptChars: p.maxPromptChars,
    },
    pricePerImage: w.pricePerImage,
    status,
    statusReason: reason,
    sortOrder: w.sortOrder,
    version: w.version,
    updatedAt: timestampFromDate(w.updatedAt),
    coldStartSeconds: model?.coldStartSeconds ?? 0,
  });
}

/** The internal view: the workflow with its template. */
export function catalogWorkflowToProto(w: WorkflowRecord, model: ModelRecord | undefined): CatalogWorkflow {
  return create(CatalogWorkflowSchema, {
    workflow: workflowToProto(w, model),
    template: { graphJson: w.template.graphJson, bindings: w.template.bindings, styleLoras: w.template.styleLoras },
    enabled: w.enabled,
    disabledReason: w.disabledReason,
  });
}

/** The spec an operator would send for this input (used to check seeds through the same validation). */
export function modelInputToSpec(m: ModelInput): ModelSpec {
  return create(ModelSpecSchema, {
    id: m.id,
    displayName: m.displayName,
    description: m.description,
    kind: KIND_ENUM[m.kind],
    tags: m.tags,
    contextWindow: m.contextWindow,
    maxOutputTokens: m.maxOutputTokens,
    prices: { inputPer1kTokens: m.prices.inputPer1k, outputPer1kTokens: m.prices.outputPer1k, perImage: m.prices.perImage },
    sortOrder: m.sortOrder,
    upstream: { ...m.upstream, probe: PROBE_ENUM[m.upstream.probe] },
    scaleToZero: m.scaleToZero,
    coldStartSeconds: m.coldStartSeconds,
  });
}

export function workflowInputToSpec(w: WorkflowInput): WorkflowSpec {
  return create(WorkflowSpecSchema, {
    id: w.id,
    modelId: w.modelId,
    displayName: w.displayName,
    description: w.description,
    tags: w.tags,
    parameters: w.parameters,
    pricePerImage: w.pricePerImage,
    sortOrder: w.sortOrder,
    template: w.template,
  });
}
