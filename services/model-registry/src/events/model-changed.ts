// `luna.events.model.changed`: one event per catalog change, carrying the entry's full new state.
import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { MODEL_CHANGED_SUBJECT, type OutboxEvent } from "@luna/kit";
import { ModelChangedSchema } from "@luna/contracts/luna/events/v1/model_events_pb.js";
import type { CatalogModel, CatalogWorkflow } from "@luna/contracts/luna/models/v1/models_pb.js";

export type ChangedEntry = { case: "model"; value: CatalogModel } | { case: "workflow"; value: CatalogWorkflow };

/** Builds the outbox event announcing an entry's new state. */
export function modelChangedEvent(entry: ChangedEntry): OutboxEvent {
  const id = randomUUID();
  const subjectId = entry.case === "model" ? entry.value.model?.id : entry.value.workflow?.id;
  const event = create(ModelChangedSchema, {
    meta: { eventId: id, occurredAt: timestampNow(), subjectId: subjectId ?? "" },
    entry,
  });
  return { id, subject: MODEL_CHANGED_SUBJECT, payload: toBinary(ModelChangedSchema, event) };
}
