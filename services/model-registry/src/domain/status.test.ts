import { describe, expect, it } from "vitest";
import { computeHealth, effectiveModelStatus, healthFingerprint } from "./status.js";

const replica = (baseUrl: string, healthy: boolean, detail = healthy ? "" : "GET /health: HTTP 503") => ({ baseUrl, healthy, detail, checkedAt: new Date() });

describe("computeHealth", () => {
  it("is OFFLINE without replicas", () => {
    expect(computeHealth([])).toEqual({ status: "OFFLINE", reason: "no replicas configured or resolved" });
  });
  it("is OFFLINE when no replica is healthy, naming the first failure", () => {
    expect(computeHealth([replica("a", false), replica("b", false, "timed out")])).toEqual({
      status: "OFFLINE",
      reason: "no healthy replica (0 of 2): GET /health: HTTP 503",
    });
  });
  it("is DEGRADED when some are healthy", () => {
    expect(computeHealth([replica("a", true), replica("b", false), replica("c", true)])).toEqual({ status: "DEGRADED", reason: "2 of 3 replicas healthy" });
  });
  it("is AVAILABLE when all are healthy", () => {
    expect(computeHealth([replica("a", true), replica("b", true)])).toEqual({ status: "AVAILABLE", reason: "" });
  });
  const s2z = { scaleToZero: true, coldStartSeconds: 90 };
  it("is STANDBY, not OFFLINE, for a scale-to-zero model at zero or still waking, with its wake time", () => {
    expect(computeHealth([], s2z)).toEqual({ status: "STANDBY", reason: "scaled to zero; wakes on demand in about 90 s" });
    expect(computeHealth([replica("a", false)], s2z)).toEqual({ status: "STANDBY", reason: "warming up (0 of 1 replicas ready); wakes on demand in about 90 s" });
    // The same replicas without scale to zero: a model that should have replicas and has none healthy.
    expect(computeHealth([replica("a", false)], { scaleToZero: false, coldStartSeconds: 0 }).status).toBe("OFFLINE");
  });
  it("is the probed health for a scale-to-zero model once a replica is healthy", () => {
    expect(computeHealth([replica("a", true)], s2z)).toEqual({ status: "AVAILABLE", reason: "" });
    expect(computeHealth([replica("a", true), replica("b", false)], s2z).status).toBe("DEGRADED");
  });
});

describe("effectiveModelStatus", () => {
  const health = { status: "DEGRADED" as const, reason: "1 of 2 replicas healthy", replicas: [] };
  it("is DISABLED with the operator's reason while switched off", () => {
    expect(effectiveModelStatus({ enabled: false, disabledReason: "GPU maintenance", health })).toEqual({ status: "DISABLED", reason: "GPU maintenance" });
    expect(effectiveModelStatus({ enabled: false, disabledReason: "", health }).reason).toBe("disabled by an operator");
  });
  it("is the probed health otherwise", () => {
    expect(effectiveModelStatus({ enabled: true, disabledReason: "", health })).toEqual({ status: "DEGRADED", reason: "1 of 2 replicas healthy" });
  });
});

describe("healthFingerprint", () => {
  it("changes with the status or the set of healthy replicas, not with details or probe times", () => {
    const a = { status: "DEGRADED" as const, replicas: [replica("a", true), replica("b", false)] };
    const sameButLater = { status: "DEGRADED" as const, replicas: [replica("b", false, "timed out"), replica("a", true)] };
    const swapped = { status: "DEGRADED" as const, replicas: [replica("a", false), replica("b", true)] };
    expect(healthFingerprint(sameButLater)).toBe(healthFingerprint(a));
    expect(healthFingerprint(swapped)).not.toBe(healthFingerprint(a));
    expect(healthFingerprint({ ...a, status: "OFFLINE" })).not.toBe(healthFingerprint(a));
  });
});
