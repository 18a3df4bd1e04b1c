import { describe, expect, it } from "vitest";
import { isUuid } from "./ids.js";

describe("isUuid", () => {
  it("accepts canonical UUIDs in either case and nothing else", () => {
    expect(isUuid("0b6f1e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b")).toBe(true);
    expect(isUuid("0B6F1E2A-3C4D-4E5F-8A9B-0C1D2E3F4A5B")).toBe(true);
    for (const bad of ["", "0b6f1e2a3c4d4e5f8a9b0c1d2e3f4a5b", "{0b6f1e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b}",
      "0b6f1e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b ", "0b6f1e2a-3c4d-4e5f-8a9b-0c1d2e3f4a5g", "x'; DROP TABLE t; --", 42, null, undefined]) {
      expect(isUuid(bad)).toBe(false);
    }
  });
});
