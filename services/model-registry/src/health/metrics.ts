// Catalog status metrics: `luna_model_status{model,status}` is 1 for a model's current status and 0 for the others
// (so `luna_model_status{status="OFFLINE"} == 1` finds the offline models), and `luna_model_replicas{model,health}`
// counts its replicas by health as last recorded.
import { Gauge, type Registry } from "prom-client";
import { effectiveModelStatus, type StatusName } from "../domain/status.js";
import type { ModelRecord } from "../domain/types.js";

const STATUSES: StatusName[] = ["AVAILABLE", "DEGRADED", "OFFLINE", "STANDBY", "DISABLED"];

export interface StatusMetrics {
  /** Sets one model's series. */
  set(model: ModelRecord): void;
  /** Sets every model's series and drops those of models no longer listed. */
  update(models: ModelRecord[]): void;
}

export function createStatusMetrics(registry: Registry): StatusMetrics {
  const status = new Gauge({
    name: "luna_model_status",
    help: "1 for the model's current catalog status (AVAILABLE, DEGRADED, OFFLINE, STANDBY, DISABLED), 0 for the others.",
    labelNames: ["model", "status"] as const,
    registers: [registry],
  });
  const replicas = new Gauge({
    name: "luna_model_replicas",
    help: "The model's upstream replicas by health (healthy, unhealthy) as last recorded.",
    labelNames: ["model", "health"] as const,
    registers: [registry],
  });
  let known = new Set<string>();

  const set = (m: ModelRecord) => {
    const current = effectiveModelStatus(m).status;
    for (const s of STATUSES) status.set({ model: m.id, status: s }, s === current ? 1 : 0);
    const healthy = m.health.replicas.filter((r) => r.healthy).length;
    replicas.set({ model: m.id, health: "healthy" }, healthy);
    replicas.set({ model: m.id, health: "unhealthy" }, m.health.replicas.length - healthy);
    known.add(m.id);
  };

  return {
    set,
    update(models) {
      const ids = new Set(models.map((m) => m.id));
      for (const id of known) {
        if (ids.has(id)) continue;
        for (const s of STATUSES) status.remove({ model: id, status: s });
        replicas.remove({ model: id, health: "healthy" });
        replicas.remove({ model: id, health: "unhealthy" });
      }
      known = new Set();
      models.forEach(set);
    },
  };
}
