import { describe, expect, it } from "vitest";
import { descriptorTarget, overrideSpec } from "./envoy.js";

const e = (pairs: Record<string, string>) => Object.entries(pairs).map(([key, value]) => ({ key, value }));

describe("Envoy descriptors", () => {
  it("maps user_id, role and feature", () => {
    expect(descriptorTarget(e({ user_id: "u1", feature: "chat" }))).toEqual({ subject: "u1", role: "user", feature: "chat" });
    expect(descriptorTarget(e({ user_id: "u1", role: "admin", generic_key: "image" }))).toEqual({ subject: "u1", role: "admin", feature: "image" });
    expect(descriptorTarget(e({ user_id: "u1" }))).toEqual({ subject: "u1", role: "user", feature: "default" });
  });
  it("limits anonymous calls by address", () => {
    expect(descriptorTarget(e({ remote_address: "10.0.0.1", feature: "signin" }))).toEqual({ subject: "ip:10.0.0.1", role: "anonymous", feature: "signin" });
  });
  it("does not limit descriptors without a subject or with absurd values", () => {
    expect(descriptorTarget(e({ feature: "chat" }))).toBeUndefined();
    expect(descriptorTarget(e({ user_id: "" }))).toBeUndefined();
    expect(descriptorTarget(e({ user_id: "x".repeat(300) }))).toBeUndefined();
  });
  it("honours limit overrides with a supported unit", () => {
    expect(overrideSpec({ requestsPerUnit: 7, unit: 2 })).toEqual({ limit: 7, per: "minute" });
    expect(overrideSpec({ requestsPerUnit: 7, unit: 0 })).toBeUndefined();
    expect(overrideSpec(undefined)).toBeUndefined();
  });
});
