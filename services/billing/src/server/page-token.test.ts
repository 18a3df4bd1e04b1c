import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodePageToken, encodePageToken } from "./page-token.js";

describe("page tokens", () => {
  it("round-trip the keyset", () => {
    const k = { at: 1795475139223330n, id: "e00000000000000000003" };
    expect(decodePageToken("page.page_token", encodePageToken(k))).toEqual(k);
    expect(decodePageToken("page.page_token", "")).toBeUndefined();
  });
  it("reject anything else as bad input naming the field", () => {
    for (const bad of ["!!!", "x".repeat(500), Buffer.from("12~zzz").toString("base64url"), Buffer.from("abc~e1").toString("base64url")]) {
      try {
        decodePageToken("page.page_token", bad);
        throw new Error(`accepted ${bad}`);
      } catch (err) {
        expect(err).toBeInstanceOf(ConnectError);
        expect([(err as ConnectError).code, (err as ConnectError).rawMessage]).toEqual([Code.InvalidArgument,
          "page.page_token: is not a next_page_token of this list (pass it back unchanged)"]);
      }
    }
  });
});
