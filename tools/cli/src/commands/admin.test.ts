// `luna admin audit`'s DETAILS and SUBJECT columns for the kinds other services record (billing's grants and
// reversals, the registry's catalog changes); other kinds and unreadable details stay as they are.
import { describe, expect, it } from "vitest";
import { auditDetails } from "./admin.js";

const ev = (kind: string, details: unknown) => ({ kind, detailsJson: typeof details === "string" ? details : JSON.stringify(details) });

describe("auditDetails", () => {
  it("reads grants and reversals as credits with the reason", () => {
    expect(auditDetails(ev("credits.granted", { service: "billing", accountId: "a", amount: "12500", reason: "goodwill", transferId: "t" })))
      .toEqual({ text: "+12,500 credits: goodwill" });
    expect(auditDetails(ev("credits.reversed", { amount: "50", reason: "mistake", reversedTransferId: "t1", reversalTransferId: "t2" })))
      .toEqual({ text: "-50 credits (reversed t1): mistake" });
  });

  it("names the catalog entry as the subject, with the changed fields of an edit or the reason of a switch", () => {
    expect(auditDetails(ev("model.updated", { entryType: "model", entryId: "llama", changedFields: ["prices", "tags"], version: "4" })))
      .toEqual({ subject: "model:llama", text: "v4 prices, tags" });
    expect(auditDetails(ev("workflow.disabled", { entryType: "workflow", entryId: "sdxl", reason: "bad outputs", version: "2", changedFields: [] })))
      .toEqual({ subject: "workflow:sdxl", text: "v2 bad outputs" });
  });

  it("keeps other kinds' JSON, and unreadable details as they came", () => {
    expect(auditDetails(ev("role.changed", { from: "user", to: "admin" }))).toEqual({ text: '{"from":"user","to":"admin"}' });
    expect(auditDetails(ev("sign_up", {}))).toEqual({ text: "" });
    expect(auditDetails(ev("credits.granted", "{not json"))).toEqual({ text: "{not json" });
    // a catalog kind without an entry (not what the registry writes) is not dressed up
    expect(auditDetails(ev("model.enabled", { reason: "x" }))).toEqual({ text: '{"reason":"x"}' });
  });
});
