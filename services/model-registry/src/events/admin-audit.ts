// `luna.events.audit.model-registry`: an admin's catalog change, for auth's audit log. Written by the store in the
// transaction of the change (never for health updates or seeding, which no admin made), so auth records exactly the
// changes that committed.
import { adminActionEvent, type AuditActor, type OutboxEvent } from "@luna/kit";
import type { ModelInput, ModelRecord, WorkflowInput, WorkflowRecord } from "../domain/types.js";

export const REGISTRY_SERVICE = "model-registry";

type EntryType = "model" | "workflow";
type Change = "created" | "updated" | "enabled" | "disabled";

const MODEL_FIELDS = ["displayName", "description", "kind", "tags", "contextWindow", "maxOutputTokens", "prices", "sortOrder",
  "upstream", "scaleToZero", "coldStartSeconds"] as const satisfies ReadonlyArray<keyof ModelInput>;
const WORKFLOW_FIELDS = ["modelId", "displayName", "description", "tags", "parameters", "pricePerImage", "sortOrder",
  "template"] as const satisfies ReadonlyArray<keyof WorkflowInput>;

const canonical = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x));

/** The editable fields an upsert changed (all of them for a new entry). */
export function changedFields<T extends object>(fields: ReadonlyArray<keyof T & string>, before: T | undefined, after: T): string[] {
  return fields.filter((f) => !before || canonical(before[f]) !== canonical(after[f]));
}

export const changedModelFields = (before: ModelInput | undefined, after: ModelInput): string[] => changedFields(MODEL_FIELDS, before, after);
export const changedWorkflowFields = (before: WorkflowInput | undefined, after: WorkflowInput): string[] =>
  changedFields(WORKFLOW_FIELDS, before, after);

/** The audit event of one admin change of a model or workflow (its state after the change). */
export function catalogAuditEvent(
  actor: AuditActor,
  type: EntryType,
  change: Change,
  record: ModelRecord | WorkflowRecord,
  extra: { reason?: string; changedFields?: string[] } = {},
): OutboxEvent {
  return adminActionEvent({
    service: REGISTRY_SERVICE,
    action: `${type}.${change}`,
    actor,
    target: record.id,
    detail: {
      case: "catalogEntryChanged",
      value: {
        entryType: type, entryId: record.id, enabled: record.enabled, reason: extra.reason ?? "",
        changedFields: extra.changedFields ?? [], version: record.version,
      },
    },
  });
}
