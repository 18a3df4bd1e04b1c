import type { HealthRecord, HealthStatusName, ModelRecord, ReplicaHealthRecord } from "./types.js";

export type StatusName = HealthStatusName | "DISABLED";

/**
 * A model's health from its replicas' probes: no replica → OFFLINE, none healthy → OFFLINE, some → DEGRADED,
 * all → AVAILABLE. A scale-to-zero model without a healthy replica is STANDBY instead of OFFLINE: its pool is at
 * zero on purpose (or its first replica is still starting), and a request wakes it. The reason says why in words an
 * operator (and a client) understands.
 */
export function computeHealth(replicas: ReplicaHealthRecord[], scaleToZero = { scaleToZero: false, coldStartSeconds: 0 }): { status: HealthStatusName; reason: string } {
  const healthy = replicas.filter((r) => r.healthy).length;
  if (healthy === 0 && scaleToZero.scaleToZero) {
    const wake = `wakes on demand in about ${scaleToZero.coldStartSeconds} s`;
    if (replicas.length === 0) return { status: "STANDBY", reason: `scaled to zero; ${wake}` };
    return { status: "STANDBY", reason: `warming up (0 of ${replicas.length} replicas ready); ${wake}` };
  }
  if (replicas.length === 0) return { status: "OFFLINE", reason: "no replicas configured or resolved" };
  if (healthy === 0) {
    const first = replicas.find((r) => r.detail)?.detail;
    return { status: "OFFLINE", reason: `no healthy replica (0 of ${replicas.length})${first ? `: ${first}` : ""}` };
  }
  if (healthy < replicas.length) return { status: "DEGRADED", reason: `${healthy} of ${replicas.length} replicas healthy` };
  return { status: "AVAILABLE", reason: "" };
}

/** The status clients see: DISABLED while switched off, else the probed health. */
export function effectiveModelStatus(m: Pick<ModelRecord, "enabled" | "disabledReason" | "health">): { status: StatusName; reason: string } {
  if (!m.enabled) return { status: "DISABLED", reason: m.disabledReason || "disabled by an operator" };
  return { status: m.health.status, reason: m.health.reason };
}

/**
 * What makes a health change worth recording (and announcing): the status and which replicas are healthy. Probe
 * times and error details change on every probe and would only add noise.
 */
export function healthFingerprint(h: Pick<HealthRecord, "status" | "replicas">): string {
  const replicas = h.replicas.map((r) => `${r.healthy ? "+" : "-"}${r.baseUrl}`).sort();
  return `${h.status}|${replicas.join(",")}`;
}
