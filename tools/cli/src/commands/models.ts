// `luna models`: the curated catalog (text models for chat, image workflows for `luna image`).
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelKind, ModelStatus, type Model, type Workflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { str, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { UsageError } from "../errors.js";
import { clip, credits, enumLabel, table } from "../format.js";

/** How a model's prices read in a table: "10 in / 10 out per 1k tokens" or "50 per image". */
export function priceLabel(m: Model): string {
  const p = m.prices;
  if (!p) return "-";
  if (m.kind === ModelKind.IMAGE) return `${credits(p.perImage)}/image`;
  return `${credits(p.inputPer1kTokens)} in, ${credits(p.outputPer1kTokens)} out /1k tok`;
}

function statusLabel(status: ModelStatus, reason: string): string {
  const label = enumLabel(ModelStatus, status);
  return status === ModelStatus.AVAILABLE || !reason ? label : `${label} (${clip(reason, 40)})`;
}

export function modelRows(models: Model[]): string[] {
  return table(["ID", "KIND", "STATUS", "PRICE", "NAME"], models.map((m) => [
    m.id, enumLabel(ModelKind, m.kind), statusLabel(m.status, m.statusReason), priceLabel(m), m.displayName,
  ]));
}

function workflowRows(workflows: Workflow[]): string[] {
  return table(["WORKFLOW", "MODEL", "STATUS", "PRICE", "SIZES", "NAME"], workflows.map((w) => {
    const p = w.parameters;
    const sizes = (p?.sizes ?? []).map((s) => `${s.width}x${s.height}`).join(" ");
    return [w.id, w.modelId, statusLabel(w.status, w.statusReason), `${credits(w.pricePerImage)}/image`, sizes, w.displayName];
  }));
}

export const modelCommands: CommandSpec<Context>[] = [
  {
    name: "models",
    summary: "List the models you can chat with and the image workflows you can run.",
    options: { kind: { type: "string", value: "KIND", description: "Only \"text\" or \"image\"" } },
    async run(ctx, args) {
      const kindArg = str(args, "kind");
      if (kindArg !== undefined && kindArg !== "text" && kindArg !== "image") {
        throw new UsageError(`--kind must be "text" or "image", got "${kindArg}"`, "models");
      }
      const models = ctx.clients.client(ModelService);
      const kind = kindArg === "text" ? ModelKind.TEXT : kindArg === "image" ? ModelKind.IMAGE : ModelKind.UNSPECIFIED;
      const res = await models.listModels({ kind });
      if (res.models.length === 0) ctx.out("No models are available.");
      else for (const line of modelRows(res.models)) ctx.out(line);
      if (kindArg === "text") return;
      const wf = await models.listWorkflows({});
      if (wf.workflows.length === 0) return;
      ctx.out();
      for (const line of workflowRows(wf.workflows)) ctx.out(line);
    },
  },
];
