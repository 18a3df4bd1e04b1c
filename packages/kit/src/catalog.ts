// The model catalog as its consumers (chat-router, image-job) see it:
// - `createCatalogCache`: an in-memory copy of the registry's catalog, loaded once through the registry's internal
//   RPC and kept current by `luna.events.model.changed`, so no request path calls the registry;
// - `validateWorkflowDefinition` / `resolveImageJobParams` / `renderWorkflow`: what a curated ComfyUI workflow
//   template means, in one place, used by the registry (to accept a template) and by image-job (to check a job and
//   render the graph it submits);
// - small helpers: `isServable`, `effectiveWorkflowStatus`, `resolveReplicaUrls`.
import { lookup as dnsLookup } from "node:dns/promises";
import { create, fromBinary } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { ModelChangedSchema } from "@luna/contracts/luna/events/v1/model_events_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import {
  ModelKind,
  ModelStatus,
  WorkflowParameter,
  WorkflowSchema,
  CatalogWorkflowSchema,
  type CatalogModel,
  type CatalogWorkflow,
  type Model,
  type ModelUpstream,
  type WorkflowParameters,
  type WorkflowTemplate,
} from "@luna/contracts/luna/models/v1/models_pb.js";

/** Subject of catalog change events (a `luna.events.v1.ModelChanged`). */
export const MODEL_CHANGED_SUBJECT = "luna.events.model.changed";

// ---------------------------------------------------------------------------------------------------------------
// Status helpers

/**
 * Whether requests may be accepted for a model or workflow in this status: AVAILABLE or DEGRADED, or STANDBY (its
 * pool is at zero on purpose; the request waits while a replica wakes).
 */
export function isServable(status: ModelStatus): boolean {
  return status === ModelStatus.AVAILABLE || status === ModelStatus.DEGRADED || status === ModelStatus.STANDBY;
}

/**
 * The status of a workflow given its own switch and its model's current state: DISABLED when either is disabled,
 * OFFLINE when the model is unknown, otherwise the model's status.
 */
export function effectiveWorkflowStatus(
  wf: { enabled: boolean; disabledReason: string },
  model: Pick<Model, "id" | "status" | "statusReason"> | undefined,
): { status: ModelStatus; reason: string } {
  if (!wf.enabled) return { status: ModelStatus.DISABLED, reason: wf.disabledReason || "workflow disabled" };
  if (!model) return { status: ModelStatus.OFFLINE, reason: "model unknown" };
  if (model.status === ModelStatus.DISABLED) {
    return { status: ModelStatus.DISABLED, reason: `model ${model.id} disabled${model.statusReason ? `: ${model.statusReason}` : ""}` };
  }
  return { status: model.status, reason: model.statusReason };
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream replicas

/** Resolves a host name to all its addresses (IPv4 and IPv6). Injected in tests. */
export type HostLookup = (host: string) => Promise<string[]>;

const defaultLookup: HostLookup = async (host) => (await dnsLookup(host, { all: true })).map((a) => a.address);

/** Removes a trailing slash so "http://h:8000/" and "http://h:8000" name the same replica. */
export function normalizeBaseUrl(url: string): string {
  return url.replace(/\/+$/, "");
}

/**
 * The replica base URLs of an upstream: its static `base_urls` plus one URL per address its `resolve_url` host
 * resolves to (a headless Service), deduplicated, in a stable order. A failed lookup contributes no replica (the
 * caller sees fewer replicas, never an exception).
 */
export async function resolveReplicaUrls(
  upstream: Pick<ModelUpstream, "baseUrls" | "resolveUrl">,
  opts: { lookup?: HostLookup } = {},
): Promise<string[]> {
  const urls = upstream.baseUrls.map(normalizeBaseUrl);
  if (upstream.resolveUrl) {
    const lookup = opts.lookup ?? defaultLookup;
    let template: URL | undefined;
    try {
      template = new URL(upstream.resolveUrl);
    } catch {
      template = undefined;
    }
    if (template) {
      let addresses: string[] = [];
      try {
        addresses = await lookup(template.hostname);
      } catch {
        addresses = [];
      }
      for (const address of [...addresses].sort()) {
        const u = new URL(template.href);
        u.hostname = address.includes(":") ? `[${address}]` : address;
        urls.push(normalizeBaseUrl(u.href));
      }
    }
  }
  return [...new Set(urls)];
}

// ---------------------------------------------------------------------------------------------------------------
// Workflow templates

/** One node of a ComfyUI API-format graph. */
export interface ComfyNode {
  class_type: string;
  inputs: Record<string, unknown>;
  _meta?: { title?: string };
}

/** A ComfyUI API-format graph: node id → node. A link is `["<source node id>", <output index>]`. */
export type ComfyGraph = Record<string, ComfyNode>;

/** Sanity limits for a template and a workflow's parameters (part of the contract, not tunables). */
export const WORKFLOW_LIMITS = {
  maxGraphJsonChars: 256 * 1024,
  maxNodes: 500,
  maxBindings: 100,
  minDimension: 64,
  maxDimension: 8192,
  /** Latent sizes must be multiples of 8 (the VAE downsamples by 8). */
  dimensionMultiple: 8,
  maxSizes: 32,
  maxImagesPerJob: 64,
  maxSteps: 500,
  maxStyles: 64,
  maxPromptChars: 100_000,
  maxLoraStrength: 10,
} as const;

type ParamType = "string" | "integer" | "number";

/** The value type each parameter writes into the graph. */
const PARAMETER_TYPES: Record<Exclude<WorkflowParameter, WorkflowParameter.UNSPECIFIED>, ParamType> = {
  [WorkflowParameter.PROMPT]: "string",
  [WorkflowParameter.NEGATIVE_PROMPT]: "string",
  [WorkflowParameter.SEED]: "integer",
  [WorkflowParameter.WIDTH]: "integer",
  [WorkflowParameter.HEIGHT]: "integer",
  [WorkflowParameter.BATCH_SIZE]: "integer",
  [WorkflowParameter.STEPS]: "integer",
  [WorkflowParameter.LORA_NAME]: "string",
  [WorkflowParameter.LORA_STRENGTH_MODEL]: "number",
  [WorkflowParameter.LORA_STRENGTH_CLIP]: "number",
  [WorkflowParameter.FILENAME_PREFIX]: "string",
};

/** Parameters every template must bind: without them a job's choices would silently not apply. */
const REQUIRED_PARAMETERS = [
  WorkflowParameter.PROMPT,
  WorkflowParameter.SEED,
  WorkflowParameter.WIDTH,
  WorkflowParameter.HEIGHT,
  WorkflowParameter.BATCH_SIZE,
] as const;

const LORA_PARAMETERS = new Set([
  WorkflowParameter.LORA_NAME,
  WorkflowParameter.LORA_STRENGTH_MODEL,
  WorkflowParameter.LORA_STRENGTH_CLIP,
]);

/**
 * LoRA loader classes a template may bind styles to, with the input that feeds each output. When a job has no
 * style, the renderer removes the node and reconnects its consumers to these inputs (output i ← input [i]).
 */
export const BYPASSABLE_LORA_NODES: Readonly<Record<string, readonly string[]>> = {
  LoraLoader: ["model", "clip"],
  LoraLoaderModelOnly: ["model"],
};

/** Largest seed: JSON numbers are exact only up to 2^53 - 1. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

const PLACEHOLDER = /\{\{\s*[^{}]*\s*\}\}/;
const STYLE_ID = /^[a-z0-9][a-z0-9.-]{0,63}$/;

/** A problem found in a workflow definition; `field` is a path such as `template.bindings[2].node_id`. */
export interface DefinitionProblem {
  field: string;
  message: string;
}

function paramName(p: WorkflowParameter): string {
  return WorkflowParameter[p] ?? String(p);
}

function hasControlChars(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

function isLink(v: unknown): v is [string, number] {
  return Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && Number.isInteger(v[1]);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function matchesType(v: unknown, t: ParamType): boolean {
  if (t === "string") return typeof v === "string";
  if (t === "integer") return typeof v === "number" && Number.isSafeInteger(v);
  return typeof v === "number" && Number.isFinite(v);
}

/**
 * Parses and checks the shape of an API-format graph: an object of nodes, each with a `class_type` and an
 * `inputs` object, whose links point at existing nodes. Returns the graph or the problems found.
 */
export function parseWorkflowGraph(graphJson: string, field = "template.graph_json"): { graph?: ComfyGraph; problems: DefinitionProblem[] } {
  const problems: DefinitionProblem[] = [];
  if (graphJson.length === 0) return { problems: [{ field, message: "is required" }] };
  if (graphJson.length > WORKFLOW_LIMITS.maxGraphJsonChars) {
    return { problems: [{ field, message: `is longer than ${WORKFLOW_LIMITS.maxGraphJsonChars} characters` }] };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(graphJson);
  } catch (err) {
    return { problems: [{ field, message: `is not valid JSON (${(err as Error).message})` }] };
  }
  if (!isPlainObject(parsed)) {
    return { problems: [{ field, message: 'must be a ComfyUI API-format graph: {"<node id>": {"class_type": ..., "inputs": {...}}}' }] };
  }
  const nodes: Record<string, unknown> = parsed;
  const ids = Object.keys(nodes);
  if (ids.length === 0) problems.push({ field, message: "has no nodes" });
  if (ids.length > WORKFLOW_LIMITS.maxNodes) problems.push({ field, message: `has more than ${WORKFLOW_LIMITS.maxNodes} nodes` });
  for (const id of ids) {
    const node: unknown = nodes[id];
    if (!isPlainObject(node)) {
      problems.push({ field, message: `node "${id}" is not an object` });
      continue;
    }
    if (typeof node.class_type !== "string" || node.class_type.length === 0) {
      problems.push({ field, message: `node "${id}" has no class_type` });
    }
    if (!isPlainObject(node.inputs)) {
      problems.push({ field, message: `node "${id}" has no inputs object` });
      continue;
    }
    for (const [input, value] of Object.entries(node.inputs)) {
      if (isLink(value) && !(value[0] in nodes)) {
        problems.push({ field, message: `node "${id}" input "${input}" links to missing node "${value[0]}"` });
      }
    }
  }
  return problems.length === 0 ? { graph: nodes as unknown as ComfyGraph, problems } : { problems };
}

/**
 * Checks a workflow's user-visible parameters and its template together; an empty list means the workflow can be
 * rendered for every choice its parameters allow. Checks: sizes, image count, steps range and defaults, styles;
 * the graph's shape; every binding points at an existing, unlinked node input holding a default of the right type;
 * the required parameters (prompt, seed, width, height, batch size; steps when choosable; LoRA name when styles are
 * offered) are bound; no `{{placeholder}}` string is left undeclared; one LoRA per style.
 */
export function validateWorkflowDefinition(parameters: WorkflowParameters | undefined, template: WorkflowTemplate | undefined): DefinitionProblem[] {
  const problems: DefinitionProblem[] = [];
  const add = (field: string, message: string) => problems.push({ field, message });
  const L = WORKFLOW_LIMITS;

  if (!parameters) {
    add("parameters", "is required");
  } else {
    if (parameters.sizes.length === 0) add("parameters.sizes", "must offer at least one size");
    if (parameters.sizes.length > L.maxSizes) add("parameters.sizes", `must offer at most ${L.maxSizes} sizes`);
    const seen = new Set<string>();
    parameters.sizes.forEach((s, i) => {
      for (const [name, v] of [["width", s.width], ["height", s.height]] as const) {
        if (v < L.minDimension || v > L.maxDimension || v % L.dimensionMultiple !== 0) {
          add(`parameters.sizes[${i}].${name}`, `must be a multiple of ${L.dimensionMultiple} between ${L.minDimension} and ${L.maxDimension}, got ${v}`);
        }
      }
      const key = `${s.width}x${s.height}`;
      if (seen.has(key)) add(`parameters.sizes[${i}]`, `duplicates ${key}`);
      seen.add(key);
    });
    if (!parameters.defaultSize) add("parameters.default_size", "is required");
    else if (!parameters.sizes.some((s) => s.width === parameters.defaultSize!.width && s.height === parameters.defaultSize!.height)) {
      add("parameters.default_size", `${parameters.defaultSize.width}x${parameters.defaultSize.height} is not one of parameters.sizes`);
    }
    if (parameters.maxImages < 1 || parameters.maxImages > L.maxImagesPerJob) {
      add("parameters.max_images", `must be between 1 and ${L.maxImagesPerJob}, got ${parameters.maxImages}`);
    }
    const { minSteps, maxSteps, defaultSteps } = parameters;
    if (minSteps < 1 || minSteps > L.maxSteps) add("parameters.min_steps", `must be between 1 and ${L.maxSteps}, got ${minSteps}`);
    if (maxSteps < minSteps || maxSteps > L.maxSteps) add("parameters.max_steps", `must be between min_steps (${minSteps}) and ${L.maxSteps}, got ${maxSteps}`);
    if (defaultSteps < minSteps || defaultSteps > maxSteps) add("parameters.default_steps", `must be between min_steps and max_steps, got ${defaultSteps}`);
    if (parameters.maxPromptChars < 1 || parameters.maxPromptChars > L.maxPromptChars) {
      add("parameters.max_prompt_chars", `must be between 1 and ${L.maxPromptChars}, got ${parameters.maxPromptChars}`);
    }
    if (parameters.styles.length > L.maxStyles) add("parameters.styles", `must offer at most ${L.maxStyles} styles`);
    const styleIds = new Set<string>();
    parameters.styles.forEach((s, i) => {
      if (!STYLE_ID.test(s.id)) add(`parameters.styles[${i}].id`, `must match [a-z0-9][a-z0-9.-]{0,63}, got "${s.id}"`);
      if (styleIds.has(s.id)) add(`parameters.styles[${i}].id`, `duplicates "${s.id}"`);
      styleIds.add(s.id);
      if (s.displayName.trim().length === 0 || s.displayName.length > 100) add(`parameters.styles[${i}].display_name`, "must be 1-100 characters");
      if (s.description.length > 1000) add(`parameters.styles[${i}].description`, "must be at most 1000 characters");
    });
    if (parameters.defaultStyleId && !styleIds.has(parameters.defaultStyleId)) {
      add("parameters.default_style_id", `"${parameters.defaultStyleId}" is not one of parameters.styles`);
    }
  }

  if (!template) {
    add("template", "is required");
    return problems;
  }
  const { graph, problems: graphProblems } = parseWorkflowGraph(template.graphJson);
  problems.push(...graphProblems);

  if (template.bindings.length > L.maxBindings) add("template.bindings", `must have at most ${L.maxBindings} bindings`);
  const bound = new Set<WorkflowParameter>();
  const boundInputs = new Set<string>();
  template.bindings.forEach((b, i) => {
    const f = `template.bindings[${i}]`;
    const type = PARAMETER_TYPES[b.parameter as keyof typeof PARAMETER_TYPES];
    if (!type) {
      add(`${f}.parameter`, "must be a known parameter");
      return;
    }
    bound.add(b.parameter);
    const key = JSON.stringify([b.nodeId, b.inputName]);
    if (boundInputs.has(key)) add(f, `node "${b.nodeId}" input "${b.inputName}" is bound twice`);
    boundInputs.add(key);
    if (!graph) return;
    const node = graph[b.nodeId];
    if (!node) {
      add(`${f}.node_id`, `node "${b.nodeId}" is not in the graph`);
      return;
    }
    if (!(b.inputName in node.inputs)) {
      add(`${f}.input_name`, `node "${b.nodeId}" (${node.class_type}) has no input "${b.inputName}" (put a default value there)`);
      return;
    }
    const current = node.inputs[b.inputName];
    if (isLink(current)) add(`${f}.input_name`, `node "${b.nodeId}" input "${b.inputName}" is a link, not a value`);
    else if (!matchesType(current, type)) {
      add(`${f}.input_name`, `node "${b.nodeId}" input "${b.inputName}" must hold a default ${type} for ${paramName(b.parameter)}`);
    }
    if (b.parameter === WorkflowParameter.LORA_NAME && parameters && !parameters.defaultStyleId && !(node.class_type in BYPASSABLE_LORA_NODES)) {
      add(`${f}.node_id`, `node "${b.nodeId}" is a ${node.class_type}; a style node that can be left out (no default style) must be one of ${Object.keys(BYPASSABLE_LORA_NODES).join(", ")}`);
    }
  });
  for (const p of REQUIRED_PARAMETERS) {
    if (!bound.has(p)) add("template.bindings", `must bind ${paramName(p)}`);
  }
  if (parameters && parameters.maxSteps > parameters.minSteps && !bound.has(WorkflowParameter.STEPS)) {
    add("template.bindings", "must bind STEPS (parameters let jobs choose steps)");
  }
  const offersStyles = (parameters?.styles.length ?? 0) > 0;
  if (offersStyles && !bound.has(WorkflowParameter.LORA_NAME)) add("template.bindings", "must bind LORA_NAME (parameters offer styles)");
  if (!offersStyles) {
    for (const p of LORA_PARAMETERS) if (bound.has(p)) add("template.bindings", `binds ${paramName(p)} but parameters offer no styles`);
  }

  if (graph) {
    for (const [id, node] of Object.entries(graph)) {
      for (const [input, value] of Object.entries(node.inputs)) {
        if (typeof value === "string" && PLACEHOLDER.test(value) && !boundInputs.has(JSON.stringify([id, input]))) {
          add("template.graph_json", `node "${id}" input "${input}" holds placeholder ${JSON.stringify(value)} that no binding declares`);
        }
      }
    }
  }

  const styleIds = new Set(parameters?.styles.map((s) => s.id) ?? []);
  const loraStyles = new Set<string>();
  template.styleLoras.forEach((s, i) => {
    const f = `template.style_loras[${i}]`;
    if (!styleIds.has(s.styleId)) add(`${f}.style_id`, `"${s.styleId}" is not one of parameters.styles`);
    if (loraStyles.has(s.styleId)) add(`${f}.style_id`, `style "${s.styleId}" has two LoRAs`);
    loraStyles.add(s.styleId);
    if (s.loraName.length === 0 || s.loraName.length > 255 || s.loraName.includes("..") || /^[/\\]/.test(s.loraName) || hasControlChars(s.loraName)) {
      add(`${f}.lora_name`, "must be a relative file name of 1-255 characters without '..'");
    }
    for (const [name, v] of [["strength_model", s.strengthModel], ["strength_clip", s.strengthClip]] as const) {
      if (!Number.isFinite(v) || Math.abs(v) > L.maxLoraStrength) add(`${f}.${name}`, `must be between -${L.maxLoraStrength} and ${L.maxLoraStrength}`);
    }
  });
  for (const id of styleIds) if (!loraStyles.has(id)) add("template.style_loras", `style "${id}" has no LoRA`);
  return problems;
}

/** Whether a template honours negative prompts (it binds NEGATIVE_PROMPT). */
export function negativePromptSupported(template: { bindings: ReadonlyArray<{ parameter: number }> } | undefined): boolean {
  return template?.bindings.some((b) => b.parameter === WorkflowParameter.NEGATIVE_PROMPT) ?? false;
}

/** What a job asks of a workflow; unset (undefined, or 0 for numbers) means the workflow's default. */
export interface ImageJobParams {
  prompt: string;
  negativePrompt?: string;
  width?: number;
  height?: number;
  /** Images to produce (ComfyUI batch size). */
  count?: number;
  steps?: number;
  /** Unset = random. Store the resolved seed with the job so a retry renders the same graph. */
  seed?: number | bigint;
  /** Unset or "" = the workflow's default style (which may be none). */
  styleId?: string;
  /** Set by the worker, e.g. "luna/<job id>"; default "luna". */
  filenamePrefix?: string;
}

/** Every parameter decided: rendering these twice gives the same graph. `styleId` "" = no style. */
export interface ResolvedImageJobParams {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  count: number;
  steps: number;
  seed: number;
  styleId: string;
  filenamePrefix: string;
}

/** A job parameter the workflow does not allow; `field` is the snake_case parameter name. */
export class WorkflowParamError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = "WorkflowParamError";
  }
}

const FILENAME_PREFIX = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

function randomSeed(): number {
  // 2^53 range from two 32-bit halves (Math.random is fine: seeds are not secrets).
  return Math.floor(Math.random() * 2 ** 21) * 2 ** 32 + Math.floor(Math.random() * 2 ** 32);
}

function checkText(field: string, value: string, max: number): void {
  if (value.length > max) throw new WorkflowParamError(field, `must be at most ${max} characters, got ${value.length}`);
  if (value.includes("\u0000")) throw new WorkflowParamError(field, "must not contain NUL characters");
}

/**
 * Checks a job's parameters against a workflow and fills in defaults. Throws `WorkflowParamError` naming the bad
 * parameter. image-job calls this at submit time (and stores the result); `renderWorkflow` calls it again.
 */
export function resolveImageJobParams(workflow: CatalogWorkflow, params: ImageJobParams, opts: { randomSeed?: () => number } = {}): ResolvedImageJobParams {
  const p = workflow.workflow?.parameters;
  const template = workflow.template;
  if (!p || !template) throw new WorkflowParamError("workflow_id", `workflow ${workflow.workflow?.id ?? "?"} has no parameters or template`);

  const prompt = params.prompt ?? "";
  if (prompt.trim().length === 0) throw new WorkflowParamError("prompt", "is required");
  checkText("prompt", prompt, p.maxPromptChars);
  const negativePrompt = params.negativePrompt ?? "";
  if (negativePrompt.length > 0 && !negativePromptSupported(template)) {
    throw new WorkflowParamError("negative_prompt", `is not supported by workflow ${workflow.workflow?.id}`);
  }
  checkText("negative_prompt", negativePrompt, p.maxPromptChars);

  let width = params.width ?? 0;
  let height = params.height ?? 0;
  if (width === 0 && height === 0) {
    width = p.defaultSize?.width ?? 0;
    height = p.defaultSize?.height ?? 0;
  } else if (!p.sizes.some((s) => s.width === width && s.height === height)) {
    const field = width === 0 || !p.sizes.some((s) => s.width === width) ? "width" : "height";
    throw new WorkflowParamError(field, `${width}x${height} is not offered; choose one of ${p.sizes.map((s) => `${s.width}x${s.height}`).join(", ")}`);
  }

  const count = params.count || 1;
  if (!Number.isInteger(count) || count < 1 || count > p.maxImages) {
    throw new WorkflowParamError("count", `must be between 1 and ${p.maxImages}, got ${params.count}`);
  }
  const steps = params.steps || p.defaultSteps;
  if (!Number.isInteger(steps) || steps < p.minSteps || steps > p.maxSteps) {
    throw new WorkflowParamError("steps", p.minSteps === p.maxSteps ? `is fixed at ${p.minSteps} for this workflow` : `must be between ${p.minSteps} and ${p.maxSteps}, got ${params.steps}`);
  }

  let seed: number;
  if (params.seed === undefined) seed = (opts.randomSeed ?? randomSeed)();
  else {
    const s = typeof params.seed === "bigint" ? params.seed : Number.isInteger(params.seed) ? BigInt(params.seed) : -1n;
    if (s < 0n || s > BigInt(MAX_SEED)) throw new WorkflowParamError("seed", `must be an integer between 0 and ${MAX_SEED}`);
    seed = Number(s);
  }

  const styleId = params.styleId || p.defaultStyleId;
  if (styleId && !p.styles.some((s) => s.id === styleId)) {
    const offered = p.styles.map((s) => s.id);
    throw new WorkflowParamError("style_id", offered.length ? `"${styleId}" is not offered; choose one of ${offered.join(", ")}` : "this workflow offers no styles");
  }

  const filenamePrefix = params.filenamePrefix || "luna";
  if (filenamePrefix.length > 128 || !FILENAME_PREFIX.test(filenamePrefix) || filenamePrefix.split("/").some((s) => s === "." || s === "..")) {
    throw new WorkflowParamError("filename_prefix", "must be 1-128 characters of [A-Za-z0-9._-] separated by '/', without '.' or '..' segments");
  }
  return { prompt, negativePrompt, width, height, count, steps, seed, styleId, filenamePrefix };
}

/** Removes a LoRA loader node, reconnecting whatever consumed its outputs to the inputs that fed it. */
function bypassNode(graph: ComfyGraph, nodeId: string): void {
  const node = graph[nodeId];
  if (!node) return;
  const passthrough = BYPASSABLE_LORA_NODES[node.class_type];
  if (!passthrough) throw new Error(`cannot leave out node "${nodeId}" (${node.class_type})`);
  delete graph[nodeId];
  for (const other of Object.values(graph)) {
    for (const [input, value] of Object.entries(other.inputs)) {
      if (isLink(value) && value[0] === nodeId) {
        const source = passthrough[value[1]];
        const upstream = source === undefined ? undefined : node.inputs[source];
        if (!isLink(upstream)) throw new Error(`cannot leave out node "${nodeId}": output ${value[1]} has no linked input`);
        other.inputs[input] = [...upstream];
      }
    }
  }
}

/**
 * Renders the ComfyUI API-format graph for a job: a fresh copy of the template with each bound input set to the
 * job's (checked) value. Values are assigned as typed JSON values into the parsed graph — user text is never
 * concatenated into JSON. With no style chosen, the LoRA node is left out of the graph. Throws
 * `WorkflowParamError` for parameters the workflow does not allow.
 */
export function renderWorkflow(workflow: CatalogWorkflow, params: ImageJobParams | ResolvedImageJobParams, opts: { randomSeed?: () => number } = {}): ComfyGraph {
  const resolved = resolveImageJobParams(workflow, params, opts);
  const template = workflow.template!;
  const { graph, problems } = parseWorkflowGraph(template.graphJson);
  if (!graph) throw new Error(`workflow ${workflow.workflow?.id} has an invalid template: ${problems.map((p) => p.message).join("; ")}`);
  const lora = resolved.styleId ? template.styleLoras.find((s) => s.styleId === resolved.styleId) : undefined;
  if (resolved.styleId && !lora) throw new Error(`workflow ${workflow.workflow?.id} has no LoRA for style "${resolved.styleId}"`);

  const values: Record<number, string | number | undefined> = {
    [WorkflowParameter.PROMPT]: resolved.prompt,
    [WorkflowParameter.NEGATIVE_PROMPT]: resolved.negativePrompt,
    [WorkflowParameter.SEED]: resolved.seed,
    [WorkflowParameter.WIDTH]: resolved.width,
    [WorkflowParameter.HEIGHT]: resolved.height,
    [WorkflowParameter.BATCH_SIZE]: resolved.count,
    [WorkflowParameter.STEPS]: resolved.steps,
    [WorkflowParameter.LORA_NAME]: lora?.loraName,
    [WorkflowParameter.LORA_STRENGTH_MODEL]: lora?.strengthModel,
    [WorkflowParameter.LORA_STRENGTH_CLIP]: lora?.strengthClip,
    [WorkflowParameter.FILENAME_PREFIX]: resolved.filenamePrefix,
  };
  const bypass = new Set<string>();
  for (const b of template.bindings) {
    if (LORA_PARAMETERS.has(b.parameter) && !lora) {
      if (b.parameter === WorkflowParameter.LORA_NAME) bypass.add(b.nodeId);
      continue;
    }
    const node = graph[b.nodeId];
    const value = values[b.parameter];
    if (!node || value === undefined) throw new Error(`workflow ${workflow.workflow?.id}: binding of ${paramName(b.parameter)} to node "${b.nodeId}" cannot be applied`);
    node.inputs[b.inputName] = value;
  }
  for (const id of bypass) bypassNode(graph, id);
  return graph;
}

// ---------------------------------------------------------------------------------------------------------------
// The cache

/** The few logger methods the cache uses (a pino logger fits). */
export interface CatalogLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface CatalogCacheOptions {
  /** Connect transport to the registry's `ModelUpstreamService` (carrying an internal token). */
  transport: Transport;
  /** Core NATS subscription on `subject` delivers changes (JetStream-published events reach core subscribers too). */
  nc: NatsConnection;
  log: CatalogLogger;
  /** Default `luna.events.model.changed`. */
  subject?: string;
  /** Full reload as a safety net against missed events (core NATS is at-most-once). Default 60 s; 0 = never. */
  resyncIntervalMs?: number;
  /** Deadline of one snapshot call. Default 5 s. */
  loadTimeoutMs?: number;
  /** First retry delay after a failed load, doubling up to `maxRetryDelayMs`. Defaults 500 ms and 30 s. */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
}

/** What changed in the cache (for consumers that keep derived state, e.g. replica pools). */
export interface CatalogChange {
  kind: "model" | "workflow";
  id: string;
}

export interface CatalogCache {
  /**
   * Subscribes to changes and makes the first full load. Resolves after that first attempt, whether or not it
   * succeeded: a failed load is retried in the background with backoff (see `loaded`, `whenLoaded`, `readiness`).
   */
  start(): Promise<void>;
  /** Unsubscribes and stops timers and retries. */
  stop(): Promise<void>;
  /** True once a full load succeeded. */
  readonly loaded: boolean;
  /** Resolves once a full load succeeded. */
  whenLoaded(): Promise<void>;
  /** For a service's readiness checks: throws until the catalog is loaded. */
  readiness: { name: string; check: () => Promise<void> };
  /** Reloads the full catalog now (also done on NATS reconnect and periodically). */
  resync(): Promise<void>;
  /** A model by id (disabled ones included: check `isServable(model.status)`). */
  getModel(id: string): Model | undefined;
  /** All models in display order, optionally of one kind (disabled ones included). */
  listModels(kind?: ModelKind): Model[];
  /** A workflow with its template; `workflow.status` reflects its model's current status. */
  getWorkflow(id: string): CatalogWorkflow | undefined;
  /** All workflows in display order (disabled ones included). */
  listWorkflows(): CatalogWorkflow[];
  /** Where a model is served (its replica URLs: see `resolveReplicaUrls`). */
  upstreams(modelId: string): ModelUpstream | undefined;
  /** Calls `fn` after each applied change; returns an unsubscribe function. */
  onChange(fn: (change: CatalogChange) => void): () => void;
}

function byOrder<T extends { sortOrder: number; id: string }>(a: T, b: T): number {
  return a.sortOrder - b.sortOrder || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * Creates the catalog cache used by chat-router and image-job: a full load on start through the registry's
 * internal RPC, then every `model.changed` event applied as it arrives (entries carry a version; an older version
 * never replaces a newer one, so the load and the events may interleave freely). Reloads in full after a NATS
 * reconnect and every `resyncIntervalMs`.
 */
export function createCatalogCache(opts: CatalogCacheOptions): CatalogCache {
  const subject = opts.subject ?? MODEL_CHANGED_SUBJECT;
  const resyncIntervalMs = opts.resyncIntervalMs ?? 60_000;
  const loadTimeoutMs = opts.loadTimeoutMs ?? 5_000;
  const baseRetry = opts.retryDelayMs ?? 500;
  const maxRetry = opts.maxRetryDelayMs ?? 30_000;
  const client = createClient(ModelUpstreamService, opts.transport);
  const log = opts.log;

  const models = new Map<string, CatalogModel>();
  const workflows = new Map<string, CatalogWorkflow>();
  const listeners = new Set<(c: CatalogChange) => void>();
  let loaded = false;
  let stopped = false;
  let sub: Subscription | undefined;
  let resyncTimer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryDelay = baseRetry;
  let inflight: Promise<void> | undefined;
  let loadedResolve!: () => void;
  const loadedPromise = new Promise<void>((r) => (loadedResolve = r));

  const notify = (change: CatalogChange) => {
    for (const fn of listeners) {
      try {
        fn(change);
      } catch (err) {
        log.error({ err, change }, "catalog change listener failed");
      }
    }
  };

  const applyModel = (entry: CatalogModel): boolean => {
    const id = entry.model?.id;
    if (!id) return false;
    const held = models.get(id);
    if (held && held.model!.version >= entry.model!.version) return false;
    models.set(id, entry);
    notify({ kind: "model", id });
    return true;
  };

  const applyWorkflow = (entry: CatalogWorkflow): boolean => {
    const id = entry.workflow?.id;
    if (!id) return false;
    const held = workflows.get(id);
    if (held && held.workflow!.version >= entry.workflow!.version) return false;
    workflows.set(id, entry);
    notify({ kind: "workflow", id });
    return true;
  };

  const loadOnce = async (): Promise<void> => {
    const snapshot = await client.getCatalogSnapshot({}, { timeoutMs: loadTimeoutMs });
    let changed = 0;
    for (const m of snapshot.models) if (applyModel(m)) changed++;
    for (const w of snapshot.workflows) if (applyWorkflow(w)) changed++;
    if (!loaded) {
      loaded = true;
      loadedResolve();
      log.info({ models: models.size, workflows: workflows.size }, "catalog loaded");
    } else if (changed > 0) {
      log.info({ changed }, "catalog resync applied missed changes");
    }
  };

  const scheduleRetry = () => {
    if (stopped || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void resync().catch(() => undefined);
    }, retryDelay);
    retryTimer.unref();
    retryDelay = Math.min(retryDelay * 2, maxRetry);
  };

  // One load at a time; callers during a load share it.
  const resync = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    inflight ??= loadOnce()
      .then(() => {
        retryDelay = baseRetry;
      })
      .catch((err: unknown) => {
        log.warn({ err, retryInMs: retryDelay }, "catalog load failed");
        scheduleRetry();
        throw err;
      })
      .finally(() => {
        inflight = undefined;
      });
    return inflight;
  };

  const onMessage = (data: Uint8Array) => {
    let ev;
    try {
      ev = fromBinary(ModelChangedSchema, data);
    } catch (err) {
      log.warn({ err }, "undecodable model.changed event ignored");
      return;
    }
    if (ev.entry.case === "model") applyModel(ev.entry.value);
    else if (ev.entry.case === "workflow") applyWorkflow(ev.entry.value);
  };

  // Bumped by every start(); a status watcher from an earlier start ends at its next status event.
  let generation = 0;
  const watchStatus = async (gen: number) => {
    for await (const s of opts.nc.status()) {
      if (stopped || gen !== generation) return;
      // Events published while disconnected are lost to a core subscription: reload.
      if (s.type === "reconnect") void resync().catch(() => undefined);
    }
  };

  const withEffectiveStatus = (w: CatalogWorkflow): CatalogWorkflow => {
    const model = w.workflow ? models.get(w.workflow.modelId)?.model : undefined;
    const { status, reason } = effectiveWorkflowStatus(w, model);
    if (!w.workflow || (w.workflow.status === status && w.workflow.statusReason === reason)) return w;
    return create(CatalogWorkflowSchema, { ...w, workflow: create(WorkflowSchema, { ...w.workflow, status, statusReason: reason }) });
  };

  return {
    async start() {
      if (sub) throw new Error("catalog cache already started");
      stopped = false;
      sub = opts.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) log.warn({ err }, "model.changed subscription error");
          else onMessage(msg.data);
        },
      });
      void watchStatus(++generation).catch((err: unknown) => log.warn({ err }, "NATS status watch ended"));
      if (resyncIntervalMs > 0) {
        resyncTimer = setInterval(() => void resync().catch(() => undefined), resyncIntervalMs);
        resyncTimer.unref();
      }
      await resync().catch(() => undefined);
    },
    async stop() {
      stopped = true;
      if (resyncTimer) clearInterval(resyncTimer);
      if (retryTimer) clearTimeout(retryTimer);
      resyncTimer = retryTimer = undefined;
      if (sub && !sub.isClosed()) sub.unsubscribe();
      sub = undefined;
      await inflight?.catch(() => undefined);
    },
    get loaded() {
      return loaded;
    },
    whenLoaded: () => loadedPromise,
    readiness: {
      name: "catalog",
      check: async () => {
        if (!loaded) throw new Error("model catalog not loaded yet");
      },
    },
    resync,
    getModel: (id) => models.get(id)?.model,
    listModels: (kind) =>
      [...models.values()]
        .map((m) => m.model!)
        .filter((m) => kind === undefined || kind === ModelKind.UNSPECIFIED || m.kind === kind)
        .sort(byOrder),
    getWorkflow: (id) => {
      const w = workflows.get(id);
      return w ? withEffectiveStatus(w) : undefined;
    },
    listWorkflows: () =>
      [...workflows.values()]
        .map(withEffectiveStatus)
        .sort((a, b) => byOrder(a.workflow!, b.workflow!)),
    upstreams: (modelId) => models.get(modelId)?.upstream,
    onChange(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}
