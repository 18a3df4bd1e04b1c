// Rules for writes that depend on what is stored; shared by every store implementation so they behave alike.
import { aborted, failedPrecondition, invalidArgument } from "@luna/kit";
import type { ModelInput, ModelRecord, WorkflowInput } from "./types.js";

/** Optimistic concurrency: `expected` 0 means "no check". */
export function checkExpectedVersion(what: string, stored: { version: bigint } | undefined, expected: bigint): void {
  if (expected === 0n) return;
  if (!stored) throw aborted(`${what} does not exist (expected version ${expected}); reload and retry`);
  if (stored.version !== expected) throw aborted(`${what} is at version ${stored.version}, not ${expected}; reload and retry`);
}

/** A model's kind cannot change while workflows run on it (they need an image model). */
export function checkModelUpsert(existing: ModelRecord | undefined, input: ModelInput, expectedVersion: bigint, workflowCount: number): void {
  checkExpectedVersion(`model ${input.id}`, existing, expectedVersion);
  if (existing && existing.kind !== input.kind && workflowCount > 0) {
    throw failedPrecondition(`model ${input.id} has ${workflowCount} workflow(s); its kind cannot change from ${existing.kind} to ${input.kind}`);
  }
}

/** A workflow must run on an existing image model. */
export function checkWorkflowUpsert(
  existing: { version: bigint } | undefined,
  input: WorkflowInput,
  expectedVersion: bigint,
  model: ModelRecord | undefined,
): void {
  if (!model) throw invalidArgument("workflow.model_id", `model ${input.modelId} does not exist`);
  if (model.kind !== "IMAGE") throw invalidArgument("workflow.model_id", `model ${input.modelId} is a text model; workflows need an image model`);
  checkExpectedVersion(`workflow ${input.id}`, existing, expectedVersion);
}
