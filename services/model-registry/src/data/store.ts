import type { AuditActor } from "@luna/kit";
import type { HealthRecord, ModelInput, ModelRecord, WorkflowInput, WorkflowRecord } from "../domain/types.js";

/**
 * The catalog's storage. Every write bumps the entry's version and emits `luna.events.model.changed` atomically
 * with it (the Prisma store through the outbox). Writes throw ConnectErrors for rule violations (see rules.ts).
 * The admin writes take the acting admin (`actor`): a write that changes something then also emits the audit event
 * `luna.events.audit.model-registry` in the same transaction (events/admin-audit.ts); health updates and seeding
 * emit none.
 */
export interface CatalogStore {
  /** Models in display order (sort_order, then id), disabled ones included. */
  listModels(): Promise<ModelRecord[]>;
  getModel(id: string): Promise<ModelRecord | undefined>;
  /** Workflows in display order, disabled ones included. */
  listWorkflows(): Promise<WorkflowRecord[]>;
  getWorkflow(id: string): Promise<WorkflowRecord | undefined>;
  /** Creates (enabled, OFFLINE until probed) or replaces the editable fields; health and the switch are kept. */
  upsertModel(input: ModelInput, expectedVersion: bigint, actor?: AuditActor): Promise<{ record: ModelRecord; created: boolean }>;
  /** Undefined when the model does not exist. A no-op (no version bump, no event) when nothing changes. */
  setModelEnabled(id: string, enabled: boolean, reason: string, actor?: AuditActor): Promise<ModelRecord | undefined>;
  upsertWorkflow(input: WorkflowInput, expectedVersion: bigint, actor?: AuditActor): Promise<{ record: WorkflowRecord; created: boolean }>;
  setWorkflowEnabled(id: string, enabled: boolean, reason: string, actor?: AuditActor): Promise<WorkflowRecord | undefined>;
  /**
   * Records a probe result when it differs from the stored one (status or set of healthy replicas); returns the
   * updated record, or undefined when nothing changed or the model is gone.
   */
  recordHealth(id: string, health: HealthRecord): Promise<ModelRecord | undefined>;
  /** Inserts the entries whose ids are absent; never touches existing rows. Returns the ids inserted. */
  seed(models: ModelInput[], workflows: WorkflowInput[]): Promise<{ models: string[]; workflows: string[] }>;
}
