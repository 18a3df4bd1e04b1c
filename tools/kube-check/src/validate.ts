// Validation of rendered Kubernetes objects against the schemas shipped by kubernetes-models (core API),
// @kubernetes-models/keda and @kubernetes-models/prometheus-operator, plus what their validate() misses:
// - unknown fields: the packages' compiled validators read every property their schema declares (`data.replicas`,
//   even when absent) and enumerate the keys of maps. We run validate() over a Proxy that records those reads; a
//   key present in the object but never read by the validator of a schema-described object is not in the schema.
//   (Objects the validator never looks into — free-form fields such as `x-kubernetes-preserve-unknown-fields` —
//   are left alone.) This is the schema's own property list, exact and fast (no TypeScript program needed).
// - KEDA trigger metadata keys against KEDA's scaler schema (schemas/scalers-schema.json).
// - a few API-server rules the OpenAPI schemas do not carry: object names and label syntax/length.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface K8sObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

export interface ValidationIssue {
  /** "Kind/name" of the object. */
  object: string;
  /** JSON pointer inside the object ("" for the object itself). */
  path: string;
  message: string;
}

type ModelCtor = { apiVersion: string; kind: string; prototype: { validate(): void } };

function modulesFor(apiVersion: string): string {
  const group = apiVersion.includes("/") ? apiVersion.slice(0, apiVersion.indexOf("/")) : "";
  if (group === "keda.sh" || group === "eventing.keda.sh") return `@kubernetes-models/keda/${apiVersion}`;
  if (group === "monitoring.coreos.com") return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

// API versions the packages still describe but Kubernetes 1.32 (KUBE_VERSION) no longer serves.
const REMOVED_API_VERSIONS = new Set([
  "extensions/v1beta1", "apps/v1beta1", "apps/v1beta2", "policy/v1beta1", "batch/v1beta1", "networking.k8s.io/v1beta1",
  "autoscaling/v2beta1", "autoscaling/v2beta2", "rbac.authorization.k8s.io/v1beta1", "storage.k8s.io/v1beta1",
  "flowcontrol.apiserver.k8s.io/v1beta1", "flowcontrol.apiserver.k8s.io/v1beta2", "flowcontrol.apiserver.k8s.io/v1beta3",
]);

const modelCache = new Map<string, Promise<Record<string, unknown> | undefined>>();

async function modelFor(apiVersion: string, kind: string): Promise<ModelCtor | undefined> {
  if (!/^[a-z0-9.-]*\/?v[0-9a-z]+$/.test(apiVersion) || REMOVED_API_VERSIONS.has(apiVersion)) return undefined;
  if (!/^[A-Z][A-Za-z0-9]*$/.test(kind)) return undefined;
  // One module per kind (importing a whole API group's index costs seconds on a cold start).
  const spec = `${modulesFor(apiVersion)}/${kind}`;
  let mod = modelCache.get(spec);
  if (!mod) {
    mod = import(spec).then((m: Record<string, unknown>) => m, () => undefined);
    modelCache.set(spec, mod);
  }
  const m = (await mod)?.[kind] as ModelCtor | undefined;
  return m && m.apiVersion === apiVersion && m.kind === kind ? m : undefined;
}

interface Reads { keys: Set<string>; enumerated: boolean }

/** Wraps `root` so every property read and key enumeration by a validator is recorded per (original) object. */
function recordReads(root: object): { proxy: object; reads: Map<object, Reads> } {
  const reads = new Map<object, Reads>();
  const proxies = new Map<object, object>();
  const wrap = (o: unknown): unknown => {
    if (o === null || typeof o !== "object") return o;
    const cached = proxies.get(o);
    if (cached) return cached;
    const rec: Reads = { keys: new Set(), enumerated: false };
    reads.set(o, rec);
    const p = new Proxy(o, {
      get(t, k, r) { if (typeof k === "string") rec.keys.add(k); return wrap(Reflect.get(t, k, r)); },
      has(t, k) { if (typeof k === "string") rec.keys.add(k); return Reflect.has(t, k); },
      ownKeys(t) { rec.enumerated = true; return Reflect.ownKeys(t); },
    });
    proxies.set(o, p);
    return p;
  };
  return { proxy: wrap(root) as object, reads };
}

function unknownFields(data: unknown, reads: Map<object, Reads>, path: string, out: string[]): void {
  if (Array.isArray(data)) { data.forEach((v, i) => unknownFields(v, reads, `${path}/${i}`, out)); return; }
  if (data === null || typeof data !== "object") return;
  const rec = reads.get(data);
  // Top-level apiVersion/kind are read by the model, not always by the schema validator.
  const described = rec !== undefined && rec.keys.size > 0 && !rec.enumerated;
  for (const [k, v] of Object.entries(data)) {
    if (described && !rec.keys.has(k) && !(path === "" && (k === "apiVersion" || k === "kind"))) out.push(`${path}/${k}`);
    unknownFields(v, reads, `${path}/${k}`, out);
  }
}

// ---- KEDA scaler metadata ----

interface ScalerParam {
  name: string; optional?: boolean; default?: unknown;
  metadataVariableReadable?: boolean; envVariableReadable?: boolean; triggerAuthenticationVariableReadable?: boolean;
}
let scalers: Map<string, ScalerParam[]> | undefined;
function scalerSchema(): Map<string, ScalerParam[]> {
  scalers ??= new Map((JSON.parse(readFileSync(fileURLToPath(new URL("../schemas/scalers-schema.json", import.meta.url)), "utf8")) as {
    scalers: { type: string; parameters: ScalerParam[] }[];
  }).scalers.map((s) => [s.type, s.parameters]));
  return scalers;
}

interface Trigger { type?: string; metadata?: Record<string, unknown>; authenticationRef?: unknown }

/** Checks KEDA trigger metadata against the scaler schema: unknown keys, keys not readable from metadata, missing required ones. */
export function checkKedaTriggers(triggers: readonly Trigger[], basePath = "/spec/triggers"): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  triggers.forEach((t, i) => {
    const path = `${basePath}/${i}`;
    const params = scalerSchema().get(t.type ?? "");
    if (!params) { out.push({ path: `${path}/type`, message: `unknown KEDA scaler type ${JSON.stringify(t.type)}` }); return; }
    const md = t.metadata ?? {};
    const allowed = new Set<string>();
    for (const p of params) {
      if (p.metadataVariableReadable) allowed.add(p.name);
      if (p.envVariableReadable) allowed.add(`${p.name}FromEnv`);
    }
    for (const k of Object.keys(md)) {
      if (!allowed.has(k)) out.push({ path: `${path}/metadata/${k}`, message: `scaler ${t.type} does not read metadata key ${JSON.stringify(k)}` });
      else if (typeof md[k] !== "string") out.push({ path: `${path}/metadata/${k}`, message: "KEDA trigger metadata values must be strings" });
    }
    for (const p of params) {
      if (p.optional || p.default !== undefined || !p.metadataVariableReadable) continue;
      if (p.name in md || `${p.name}FromEnv` in md) continue;
      if (p.triggerAuthenticationVariableReadable && t.authenticationRef) continue;
      out.push({ path: `${path}/metadata`, message: `scaler ${t.type} requires metadata key ${JSON.stringify(p.name)}` });
    }
  });
  return out;
}

// ---- API-server rules missing from the OpenAPI schemas ----

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
// Kinds whose names become DNS labels (Services: DNS-1035; the others end up in pod hostnames or label values).
const LABEL_NAMED = new Set(["Service", "Namespace"]);

function checkLabels(labels: unknown, path: string, out: { path: string; message: string }[]): void {
  if (!labels || typeof labels !== "object") return;
  for (const [k, v] of Object.entries(labels)) {
    const slash = k.lastIndexOf("/");
    const prefix = slash >= 0 ? k.slice(0, slash) : "";
    const name = slash >= 0 ? k.slice(slash + 1) : k;
    if ((prefix && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) || name.length > 63 || !LABEL_NAME.test(name)) {
      out.push({ path: `${path}/${k}`, message: `invalid label key ${JSON.stringify(k)}` });
    }
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v)) {
      out.push({ path: `${path}/${k}`, message: `invalid label value ${JSON.stringify(v)} (at most 63 characters, alphanumeric at both ends)` });
    }
  }
}

function checkApiRules(o: K8sObject): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  const name = o.metadata?.name;
  if (typeof name !== "string" || name === "") out.push({ path: "/metadata/name", message: "metadata.name is required" });
  else if (LABEL_NAMED.has(o.kind ?? "") ? name.length > 63 || !DNS1123_LABEL.test(name) : name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    out.push({ path: "/metadata/name", message: `invalid name ${JSON.stringify(name)} for a ${o.kind}` });
  }
  checkLabels(o.metadata?.labels, "/metadata/labels", out);
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) { v.forEach((x, i) => walk(x, `${path}/${i}`)); return; }
    if (!v || typeof v !== "object") return;
    for (const [k, x] of Object.entries(v)) {
      if ((k === "matchLabels" || (k === "labels" && path.endsWith("/metadata")) || (k === "selector" && o.kind === "Service" && path === "/spec"))) {
        checkLabels(x, `${path}/${k}`, out);
      }
      walk(x, `${path}/${k}`);
    }
  };
  walk(o.spec, "/spec");
  return out;
}

/** Validates every object; returns all issues found (empty when all are valid). */
export async function validateObjects(objects: readonly K8sObject[]): Promise<ValidationIssue[]> {
  const issues: ValidationIssue[] = [];
  for (const o of objects) {
    const id = `${o?.kind ?? "?"}/${o?.metadata?.name ?? "?"}`;
    const add = (path: string, message: string) => issues.push({ object: id, path, message });
    if (!o || typeof o !== "object" || typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
      add("", "not a Kubernetes object (apiVersion and kind are required)");
      continue;
    }
    const model = await modelFor(o.apiVersion, o.kind);
    if (!model) { add("", `no schema for ${o.apiVersion} ${o.kind} (unknown or removed apiVersion/kind)`); continue; }
    const { proxy, reads } = recordReads(o);
    try {
      model.prototype.validate.call(proxy);
    } catch (e) {
      const errs = (e as { errors?: { instancePath?: string; message?: string }[] }).errors;
      if (errs?.length) for (const err of errs) add(err.instancePath ?? "", err.message ?? String(e));
      else add("", (e as Error).message);
    }
    const unknown: string[] = [];
    unknownFields(o, reads, "", unknown);
    for (const p of unknown) add(p, `unknown field ${JSON.stringify(p.slice(p.lastIndexOf("/") + 1))} (not in the ${o.kind} schema)`);
    for (const r of checkApiRules(o)) add(r.path, r.message);
    if (o.apiVersion === "keda.sh/v1alpha1" && (o.kind === "ScaledObject" || o.kind === "ScaledJob")) {
      const triggers = (o.spec as { triggers?: Trigger[] } | undefined)?.triggers;
      if (Array.isArray(triggers)) for (const r of checkKedaTriggers(triggers)) add(r.path, r.message);
    }
  }
  return issues;
}

/** Formats issues one per line: "Kind/name /path: message". */
export function formatIssues(issues: readonly ValidationIssue[]): string {
  return issues.map((i) => `${i.object} ${i.path || "/"}: ${i.message}`).join("\n");
}

/** Throws with every issue listed when any object is invalid. */
export async function assertValidObjects(objects: readonly K8sObject[]): Promise<void> {
  const issues = await validateObjects(objects);
  if (issues.length > 0) throw new Error(`${issues.length} invalid field(s):\n${formatIssues(issues)}`);
}
