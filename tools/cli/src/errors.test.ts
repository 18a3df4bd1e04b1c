import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CliError, describeError } from "./errors.js";

const ctx = { url: "http://luna:8080", signedIn: true };

describe("describeError", () => {
  it("uses the server's reason without the [code] prefix, on one line", () => {
    expect(describeError(new ConnectError("email: not a valid address", Code.InvalidArgument), ctx)).toBe("email: not a valid address");
    expect(describeError(new ConnectError("line one\n  line two", Code.ResourceExhausted), ctx)).toBe("line one line two");
  });

  it("says how to fix authentication problems", () => {
    expect(describeError(new ConnectError("token expired", Code.Unauthenticated), { ...ctx, signedIn: false }))
      .toBe("not signed in: run `luna login` (or `luna signup`)");
    expect(describeError(new ConnectError("account disabled", Code.Unauthenticated), ctx)).toBe("account disabled (sign in again with `luna login`)");
  });

  it("names the server it cannot reach", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8080"), { code: "ECONNREFUSED" });
    const err = new ConnectError("fetch failed", Code.Unavailable, undefined, undefined, new TypeError("fetch failed", { cause: refused }));
    expect(describeError(err, ctx)).toBe("cannot reach Luna at http://luna:8080 (ECONNREFUSED); is it running? (set LUNA_URL or --url)");
  });

  it("keeps CLI messages, also when Connect wrapped them", () => {
    const mine = new CliError("your session has ended: run `luna login`");
    expect(describeError(mine, ctx)).toBe(mine.message);
    expect(describeError(ConnectError.from(mine), ctx)).toBe(mine.message);
  });
});
