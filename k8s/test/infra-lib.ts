// Checks for the infrastructure objects and values in k8s/ that @luna/kube-check does not cover: CloudNativePG
// custom resources against the operator's own CRD schemas, and values files of third-party charts without a schema.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv, type ValidateFunction } from "ajv";
import type { K8sObject } from "@luna/kube-check";
import { repoRoot } from "./skaffold-lib.js";

type Schema = Record<string, unknown>;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * A CRD's openAPIV3Schema made strict as `kubeconform -strict` does: an object schema that lists its properties
 * rejects others (unless it preserves unknown fields); `x-kubernetes-int-or-string` becomes integer-or-string.
 */
export function strictCrdSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(strictCrdSchema);
  if (!isObj(schema)) return schema;
  const out: Schema = {};
  for (const [k, v] of Object.entries(schema)) {
    out[k] = k === "properties" && isObj(v) ? Object.fromEntries(Object.entries(v).map(([p, s]) => [p, strictCrdSchema(s)])) : strictCrdSchema(v);
  }
  if (out["x-kubernetes-int-or-string"] === true) {
    delete out.type;
    out.anyOf = [{ type: "integer" }, { type: "string" }];
  }
  if (isObj(out.properties) && out.additionalProperties === undefined && out["x-kubernetes-preserve-unknown-fields"] !== true) {
    out.additionalProperties = false;
  }
  return out;
}

export interface CrdSchemaFile {
  group: string;
  version: string;
  kind: string;
  openAPIV3Schema: Schema;
}

const validators = new Map<string, { crd: CrdSchemaFile; validate: ValidateFunction }>();

/** Loads k8s/schemas/<file> (a CRD version's schema) once. */
export function crdValidator(file: string): { crd: CrdSchemaFile; validate: ValidateFunction } {
  let v = validators.get(file);
  if (!v) {
    const crd = JSON.parse(readFileSync(join(repoRoot, "k8s/schemas", file), "utf8")) as CrdSchemaFile;
    const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
    v = { crd, validate: ajv.compile(strictCrdSchema(crd.openAPIV3Schema) as Schema) };
    validators.set(file, v);
  }
  return v;
}

/** The CRD schemas k8s/ objects use, by apiVersion/kind. */
export const CRD_SCHEMAS: Record<string, string> = {
  "postgresql.cnpg.io/v1/Cluster": "cnpg-cluster.json",
  "postgresql.cnpg.io/v1/ScheduledBackup": "cnpg-scheduledbackup.json",
};

export function isCustomResource(o: K8sObject): boolean {
  return `${o.apiVersion}/${o.kind}` in CRD_SCHEMAS;
}

/** Problems with one custom resource (schema, unknown fields, name), as "Kind/name: path message". */
export function validateCustomResource(o: K8sObject): string[] {
  const key = `${o.apiVersion}/${o.kind}`;
  const where = `${o.kind}/${o.metadata?.name ?? "?"}`;
  const file = CRD_SCHEMAS[key];
  if (!file) return [`${where}: no CRD schema for ${key}`];
  const { validate } = crdValidator(file);
  const issues: string[] = [];
  const name = o.metadata?.name ?? "";
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) issues.push(`${where}: metadata.name must be a DNS label`);
  // The schema describes the object without apiVersion/kind/metadata details; validate what it describes.
  if (!validate(o)) {
    for (const e of validate.errors ?? []) {
      const extra = e.keyword === "additionalProperties" ? ` '${String((e.params as Record<string, unknown>).additionalProperty)}'` : "";
      issues.push(`${where}: ${e.instancePath || "/"} ${e.message ?? e.keyword}${extra}`);
    }
  }
  return [...new Set(issues)];
}

/**
 * Keys of a values file that the chart's default values do not have (Helm ignores them silently). Below keys whose
 * values are free-form in the chart (labels, resources, merge patches, …) nothing is checked.
 */
export function unknownValueKeys(values: unknown, defaults: unknown, freeForm: RegExp, path = ""): string[] {
  if (!isObj(values)) return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(values)) {
    const p = path ? `${path}.${k}` : k;
    if (!isObj(defaults) || !(k in defaults)) {
      out.push(p);
      continue;
    }
    if (freeForm.test(k)) continue;
    out.push(...unknownValueKeys(v, defaults[k], freeForm, p));
  }
  return out;
}

/** Keys under which charts take arbitrary maps (Kubernetes objects, label sets, patches). */
export const FREE_FORM_KEYS = /^(resources|nodeSelector|tolerations|affinity|merge|patch|labels|additionalLabels|podMonitorAdditionalLabels|annotations|storageSpec|topologySpreadConstraints|env|extraArgs)$/;
