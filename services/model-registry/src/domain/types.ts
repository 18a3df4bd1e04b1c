// The registry's own view of catalog entries, independent of Prisma rows and protobuf messages.

export type ModelKindName = "TEXT" | "IMAGE";
/** Health as probed; DISABLED is not a health state but an operator switch (see `effectiveModelStatus`). */
/** STANDBY: a scale-to-zero model without a healthy replica (its pool is at zero on purpose, or waking). */
export type HealthStatusName = "AVAILABLE" | "DEGRADED" | "OFFLINE" | "STANDBY";

export interface Prices {
  inputPer1k: bigint;
  outputPer1k: bigint;
  perImage: bigint;
}

/**
 * How replicas are probed: OPENAI (vLLM `/health` + `/v1/models`), COMFYUI (`/system_stats`), WORKER (the image
 * worker's admin `/readyz`, which checks its ComfyUI: a cluster pool, where ComfyUI is only reachable in its pod).
 */
export type UpstreamProbeName = "OPENAI" | "COMFYUI" | "WORKER";

/** The probe a kind gets when the spec leaves it unspecified (and rows written before probes were configurable). */
export function defaultProbe(kind: ModelKindName): UpstreamProbeName {
  return kind === "TEXT" ? "OPENAI" : "COMFYUI";
}

export interface UpstreamInput {
  baseUrls: string[];
  resolveUrl: string;
  apiKeyEnv: string;
  servedModelName: string;
  probe: UpstreamProbeName;
}

/** A model's editable fields, validated. */
export interface ModelInput {
  id: string;
  displayName: string;
  description: string;
  kind: ModelKindName;
  tags: string[];
  contextWindow: number;
  maxOutputTokens: number;
  prices: Prices;
  sortOrder: number;
  upstream: UpstreamInput;
  /** The pool may be at zero replicas on purpose: without a healthy replica the model is STANDBY, not OFFLINE. */
  scaleToZero: boolean;
  /** Expected seconds from a request to a ready replica when the pool is at zero (0 without scale to zero). */
  coldStartSeconds: number;
}

export interface ReplicaHealthRecord {
  baseUrl: string;
  healthy: boolean;
  detail: string;
  checkedAt: Date;
}

export interface HealthRecord {
  status: HealthStatusName;
  reason: string;
  replicas: ReplicaHealthRecord[];
}

export interface ModelRecord extends ModelInput {
  enabled: boolean;
  disabledReason: string;
  health: HealthRecord;
  version: bigint;
  updatedAt: Date;
}

export interface ImageSizeInput {
  width: number;
  height: number;
}

export interface StyleInput {
  id: string;
  displayName: string;
  description: string;
}

/** A workflow's user-visible parameters (mirrors luna.models.v1.WorkflowParameters). */
export interface WorkflowParametersInput {
  sizes: ImageSizeInput[];
  defaultSize: ImageSizeInput;
  maxImages: number;
  minSteps: number;
  maxSteps: number;
  defaultSteps: number;
  styles: StyleInput[];
  defaultStyleId: string;
  maxPromptChars: number;
}

export interface BindingInput {
  /** luna.models.v1.WorkflowParameter value. */
  parameter: number;
  nodeId: string;
  inputName: string;
}

export interface StyleLoraInput {
  styleId: string;
  loraName: string;
  strengthModel: number;
  strengthClip: number;
}

export interface WorkflowTemplateInput {
  /** The operator's JSON text, kept as written. */
  graphJson: string;
  bindings: BindingInput[];
  styleLoras: StyleLoraInput[];
}

/** A workflow's editable fields, validated. */
export interface WorkflowInput {
  id: string;
  modelId: string;
  displayName: string;
  description: string;
  tags: string[];
  parameters: WorkflowParametersInput;
  pricePerImage: bigint;
  sortOrder: number;
  template: WorkflowTemplateInput;
}

export interface WorkflowRecord extends WorkflowInput {
  enabled: boolean;
  disabledReason: string;
  version: bigint;
  updatedAt: Date;
}
