// Validation of admin input: every field is checked and every problem is reported with its field path, before
// anything is written.
import { validateWorkflowDefinition, type DefinitionProblem } from "@luna/kit";
import { ModelKind, UpstreamProbe, type WorkflowParameters, type WorkflowTemplate } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ModelSpec, UpstreamSpec, WorkflowSpec } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { defaultProbe, type ModelInput, type ModelKindName, type UpstreamProbeName, type WorkflowInput } from "./types.js";

export type Problem = DefinitionProblem;

/** Catalog ids: lower-case letters, digits, '-' and '.', 1-64 characters, starting and ending with a letter or
 * digit, no "..". They appear in NATS subjects and URLs, hence the strict shape. */
export const CATALOG_ID = /^[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?$/;
const TAG = /^[a-z0-9][a-z0-9.-]{0,31}$/;
const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
/** Control characters other than tab, newline and carriage return are never legitimate in names and descriptions. */
function hasControlChars(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) || c === 0x7f) return true;
  }
  return false;
}

export const LIMITS = {
  displayNameChars: 100,
  descriptionChars: 2000,
  tags: 16,
  reasonChars: 500,
  maxContextWindow: 10_000_000,
  /** Upper bound for any price: keeps worst-case hold arithmetic (tokens × price) far from int64 overflow. */
  maxPrice: 1_000_000_000n,
  upstreamUrls: 32,
  servedModelNameChars: 256,
  /** Longest expected cold start accepted (an hour: beyond it a user would rather not wait). */
  maxColdStartSeconds: 3600,
} as const;

export function checkId(field: string, id: string, problems: Problem[]): void {
  if (id.length === 0) problems.push({ field, message: "is required" });
  else if (!CATALOG_ID.test(id) || id.includes("..")) {
    problems.push({ field, message: `must be 1-64 characters of [a-z0-9.-], start and end with a letter or digit, without "..", got ${JSON.stringify(id.slice(0, 80))}` });
  }
}

function checkDisplayName(field: string, v: string, problems: Problem[]): void {
  if (v.trim().length === 0) problems.push({ field, message: "is required" });
  else if (v.length > LIMITS.displayNameChars) problems.push({ field, message: `must be at most ${LIMITS.displayNameChars} characters` });
  else if (hasControlChars(v) || /[\n\r\t]/.test(v)) problems.push({ field, message: "must not contain control characters" });
}

function checkDescription(field: string, v: string, problems: Problem[]): void {
  if (v.length > LIMITS.descriptionChars) problems.push({ field, message: `must be at most ${LIMITS.descriptionChars} characters` });
  else if (hasControlChars(v)) problems.push({ field, message: "must not contain control characters" });
}

function checkTags(field: string, tags: string[], problems: Problem[]): void {
  if (tags.length > LIMITS.tags) problems.push({ field, message: `must have at most ${LIMITS.tags} tags` });
  const seen = new Set<string>();
  tags.forEach((t, i) => {
    if (!TAG.test(t)) problems.push({ field: `${field}[${i}]`, message: `must be 1-32 characters of [a-z0-9.-] starting with a letter or digit, got ${JSON.stringify(t.slice(0, 40))}` });
    else if (seen.has(t)) problems.push({ field: `${field}[${i}]`, message: `duplicates "${t}"` });
    seen.add(t);
  });
}

function checkPrice(field: string, v: bigint, problems: Problem[]): void {
  if (v < 0n) problems.push({ field, message: `must be >= 0, got ${v}` });
  else if (v > LIMITS.maxPrice) problems.push({ field, message: `must be at most ${LIMITS.maxPrice}, got ${v}` });
}

/** An upstream URL: http(s), a host, no credentials (secrets never go in the registry), no query or fragment. */
export function checkUpstreamUrl(field: string, raw: string, problems: Problem[]): void {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    problems.push({ field, message: `is not a URL: ${JSON.stringify(raw.slice(0, 200))}` });
    return;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") problems.push({ field, message: `must be http or https, got ${u.protocol}` });
  else if (!u.hostname) problems.push({ field, message: "must have a host" });
  else if (u.username || u.password) problems.push({ field, message: "must not contain credentials (use api_key_env)" });
  else if (u.search || u.hash || raw.includes("?") || raw.includes("#")) problems.push({ field, message: "must not have a query or fragment" });
  else if (raw.length > 2048) problems.push({ field, message: "must be at most 2048 characters" });
}

function checkUpstream(field: string, up: UpstreamSpec | undefined, problems: Problem[]): void {
  if (!up) {
    problems.push({ field, message: "is required" });
    return;
  }
  if (up.baseUrls.length === 0 && up.resolveUrl === "") problems.push({ field, message: "needs base_urls or resolve_url" });
  if (up.baseUrls.length > LIMITS.upstreamUrls) problems.push({ field: `${field}.base_urls`, message: `must have at most ${LIMITS.upstreamUrls} URLs` });
  const seen = new Set<string>();
  up.baseUrls.forEach((u, i) => {
    checkUpstreamUrl(`${field}.base_urls[${i}]`, u, problems);
    const key = u.replace(/\/+$/, "");
    if (seen.has(key)) problems.push({ field: `${field}.base_urls[${i}]`, message: `duplicates ${u}` });
    seen.add(key);
  });
  if (up.resolveUrl !== "") checkUpstreamUrl(`${field}.resolve_url`, up.resolveUrl, problems);
  if (up.apiKeyEnv !== "" && !ENV_NAME.test(up.apiKeyEnv)) {
    problems.push({ field: `${field}.api_key_env`, message: "must be the NAME of an environment variable ([A-Z_][A-Z0-9_]*), not a key" });
  }
  if (up.servedModelName.length > LIMITS.servedModelNameChars) problems.push({ field: `${field}.served_model_name`, message: `must be at most ${LIMITS.servedModelNameChars} characters` });
  else if (hasControlChars(up.servedModelName) || /\s/.test(up.servedModelName)) problems.push({ field: `${field}.served_model_name`, message: "must not contain whitespace or control characters" });
}

/** The probe a kind may use (UNSPECIFIED = the kind's default); undefined when the kind cannot use it. */
function probeName(probe: UpstreamProbe, kind: ModelKindName): UpstreamProbeName | undefined {
  if (probe === UpstreamProbe.UNSPECIFIED) return defaultProbe(kind);
  if (kind === "TEXT") return probe === UpstreamProbe.OPENAI ? "OPENAI" : undefined;
  if (probe === UpstreamProbe.COMFYUI) return "COMFYUI";
  if (probe === UpstreamProbe.WORKER) return "WORKER";
  return undefined;
}

function kindName(kind: ModelKind): ModelKindName | undefined {
  return kind === ModelKind.TEXT ? "TEXT" : kind === ModelKind.IMAGE ? "IMAGE" : undefined;
}

/** Checks a model spec in full. Returns the validated input, or every problem found. */
export function validateModelSpec(spec: ModelSpec | undefined, prefix = "model"): { input?: ModelInput; problems: Problem[] } {
  const problems: Problem[] = [];
  if (!spec) return { problems: [{ field: prefix, message: "is required" }] };
  const f = (name: string) => `${prefix}.${name}`;
  checkId(f("id"), spec.id, problems);
  checkDisplayName(f("display_name"), spec.displayName, problems);
  checkDescription(f("description"), spec.description, problems);
  const kind = kindName(spec.kind);
  if (!kind) problems.push({ field: f("kind"), message: "must be MODEL_KIND_TEXT or MODEL_KIND_IMAGE" });
  checkTags(f("tags"), spec.tags, problems);
  if (kind === "TEXT") {
    if (spec.contextWindow <= 0 || spec.contextWindow > LIMITS.maxContextWindow) {
      problems.push({ field: f("context_window"), message: `must be between 1 and ${LIMITS.maxContextWindow} for a text model, got ${spec.contextWindow}` });
    }
    if (spec.maxOutputTokens <= 0) problems.push({ field: f("max_output_tokens"), message: `must be > 0 for a text model, got ${spec.maxOutputTokens}` });
    else if (spec.contextWindow > 0 && spec.maxOutputTokens >= spec.contextWindow) {
      problems.push({ field: f("max_output_tokens"), message: `must be less than context_window (${spec.contextWindow}), got ${spec.maxOutputTokens}` });
    }
  } else if (kind === "IMAGE") {
    if (spec.contextWindow !== 0) problems.push({ field: f("context_window"), message: "must be 0 for an image model" });
    if (spec.maxOutputTokens !== 0) problems.push({ field: f("max_output_tokens"), message: "must be 0 for an image model" });
  }
  const prices = spec.prices;
  if (!prices) problems.push({ field: f("prices"), message: "is required" });
  else {
    checkPrice(f("prices.input_per_1k_tokens"), prices.inputPer1kTokens, problems);
    checkPrice(f("prices.output_per_1k_tokens"), prices.outputPer1kTokens, problems);
    checkPrice(f("prices.per_image"), prices.perImage, problems);
    if (kind === "TEXT" && prices.perImage !== 0n) problems.push({ field: f("prices.per_image"), message: "must be 0 for a text model" });
    if (kind === "IMAGE" && prices.inputPer1kTokens !== 0n) problems.push({ field: f("prices.input_per_1k_tokens"), message: "must be 0 for an image model" });
    if (kind === "IMAGE" && prices.outputPer1kTokens !== 0n) problems.push({ field: f("prices.output_per_1k_tokens"), message: "must be 0 for an image model" });
  }
  checkUpstream(f("upstream"), spec.upstream, problems);
  const probe = spec.upstream && kind ? probeName(spec.upstream.probe, kind) : undefined;
  if (spec.upstream && kind && !probe) {
    const allowed = kind === "TEXT" ? "UPSTREAM_PROBE_OPENAI" : "UPSTREAM_PROBE_COMFYUI or UPSTREAM_PROBE_WORKER";
    problems.push({ field: f("upstream.probe"), message: `must be UPSTREAM_PROBE_UNSPECIFIED or ${allowed} for ${kind === "TEXT" ? "a text" : "an image"} model, got ${UpstreamProbe[spec.upstream.probe] ?? spec.upstream.probe}` });
  }
  if (spec.scaleToZero) {
    if (spec.coldStartSeconds < 1 || spec.coldStartSeconds > LIMITS.maxColdStartSeconds) {
      problems.push({ field: f("cold_start_seconds"), message: `must be between 1 and ${LIMITS.maxColdStartSeconds} with scale_to_zero (the expected wake time users are shown), got ${spec.coldStartSeconds}` });
    }
  } else if (spec.coldStartSeconds !== 0) {
    problems.push({ field: f("cold_start_seconds"), message: `must be 0 unless scale_to_zero is set, got ${spec.coldStartSeconds}` });
  }
  if (problems.length > 0 || !kind || !prices || !spec.upstream || !probe) return { problems };
  return {
    problems,
    input: {
      id: spec.id,
      displayName: spec.displayName.trim(),
      description: spec.description,
      kind,
      tags: [...spec.tags],
      contextWindow: spec.contextWindow,
      maxOutputTokens: spec.maxOutputTokens,
      prices: { inputPer1k: prices.inputPer1kTokens, outputPer1k: prices.outputPer1kTokens, perImage: prices.perImage },
      sortOrder: spec.sortOrder,
      upstream: {
        baseUrls: spec.upstream.baseUrls.map((u) => u.replace(/\/+$/, "")),
        resolveUrl: spec.upstream.resolveUrl.replace(/\/+$/, ""),
        apiKeyEnv: spec.upstream.apiKeyEnv,
        servedModelName: spec.upstream.servedModelName,
        probe,
      },
      scaleToZero: spec.scaleToZero,
      coldStartSeconds: spec.coldStartSeconds,
    },
  };
}

/**
 * Checks a workflow spec in full: its own fields here, its parameters and template with the kit's
 * `validateWorkflowDefinition` (the same code that renders it for the image worker). Whether `model_id` names an
 * existing image model is checked against the store by the caller.
 */
export function validateWorkflowSpec(spec: WorkflowSpec | undefined, prefix = "workflow"): { input?: WorkflowInput; problems: Problem[] } {
  if (!spec) return { problems: [{ field: prefix, message: "is required" }] };
  const problems: Problem[] = [];
  const f = (name: string) => `${prefix}.${name}`;
  checkId(f("id"), spec.id, problems);
  checkId(f("model_id"), spec.modelId, problems);
  checkDisplayName(f("display_name"), spec.displayName, problems);
  checkDescription(f("description"), spec.description, problems);
  checkTags(f("tags"), spec.tags, problems);
  checkPrice(f("price_per_image"), spec.pricePerImage, problems);
  for (const p of validateWorkflowDefinition(spec.parameters, spec.template)) problems.push({ field: f(p.field), message: p.message });
  if (problems.length > 0) return { problems };
  const params = spec.parameters as WorkflowParameters;
  const template = spec.template as WorkflowTemplate;
  return {
    problems,
    input: {
      id: spec.id,
      modelId: spec.modelId,
      displayName: spec.displayName.trim(),
      description: spec.description,
      tags: [...spec.tags],
      pricePerImage: spec.pricePerImage,
      sortOrder: spec.sortOrder,
      parameters: {
        sizes: params.sizes.map((s) => ({ width: s.width, height: s.height })),
        defaultSize: { width: params.defaultSize!.width, height: params.defaultSize!.height },
        maxImages: params.maxImages,
        minSteps: params.minSteps,
        maxSteps: params.maxSteps,
        defaultSteps: params.defaultSteps,
        styles: params.styles.map((s) => ({ id: s.id, displayName: s.displayName, description: s.description })),
        defaultStyleId: params.defaultStyleId,
        maxPromptChars: params.maxPromptChars,
      },
      template: {
        graphJson: template.graphJson,
        bindings: template.bindings.map((b) => ({ parameter: b.parameter, nodeId: b.nodeId, inputName: b.inputName })),
        styleLoras: template.styleLoras.map((s) => ({ styleId: s.styleId, loraName: s.loraName, strengthModel: s.strengthModel, strengthClip: s.strengthClip })),
      },
    },
  };
}

/** An operator's reason for disabling something. */
export function checkReason(field: string, reason: string, problems: Problem[]): void {
  if (reason.length > LIMITS.reasonChars) problems.push({ field, message: `must be at most ${LIMITS.reasonChars} characters` });
  else if (hasControlChars(reason)) problems.push({ field, message: "must not contain control characters" });
}
