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
