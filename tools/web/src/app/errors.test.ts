import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { isUnreachable } from "./connectivity.js";
import { errorMessage } from "./errors.js";

describe("errorMessage", () => {
  it("says Luna cannot be reached when the request never got an answer", () => {
    const expected = "Luna can't be reached — check your connection and try again.";
    expect(errorMessage(new ConnectError("Failed to fetch", Code.Unknown))).toBe(expected);
    expect(errorMessage(new ConnectError("NetworkError when attempting to fetch resource.", Code.Unavailable))).toBe(expected);
    expect(errorMessage(new TypeError("Failed to fetch"))).toBe(expected);
    // connect-web wraps the failed fetch (its cause) whatever the browser's wording.
    expect(errorMessage(new ConnectError("Load failed", Code.Unknown, undefined, undefined, new TypeError("Load failed")))).toBe(expected);
  });

  it("a gateway's own 502/503/504 (no Connect error in the body) is an outage, a service's UNAVAILABLE is not", () => {
    for (const status of [502, 503, 504]) {
      const err = new ConnectError(`HTTP ${status}`, Code.Unavailable);
      expect(isUnreachable(err), String(status)).toBe(true);
      expect(errorMessage(err)).toBe("Luna can't be reached — check your connection and try again.");
    }
    expect(isUnreachable(new ConnectError("HTTP 500", Code.Unknown))).toBe(false);
    expect(isUnreachable(new ConnectError("model qwen is offline", Code.Unavailable))).toBe(false);
    expect(isUnreachable(new ConnectError("the operation was aborted", Code.Canceled, undefined, undefined, new TypeError("x")))).toBe(false);
    expect(isUnreachable(new ConnectError("email: not a valid address", Code.InvalidArgument))).toBe(false);
  });

  it("out of credits is one sentence with the balance, not a status name", () => {
    const msg = errorMessage(new ConnectError("not enough credits: a reply needs at least 3 credits (12 prompt tokens and 16 reply tokens), 1 available",
      Code.ResourceExhausted));
    expect(msg).toBe("Not enough credits — a reply needs at least 3 credits (12 prompt tokens and 16 reply tokens), 1 available. Ask an admin for more.");
    expect(msg).not.toMatch(/Too Many Requests|resource_exhausted/i);
  });

  it("rate limited says when to retry", () => {
    const limited = new ConnectError("rate limit exceeded", Code.ResourceExhausted, { "retry-after": "7" });
    expect(errorMessage(limited)).toBe("Too many requests right now — try again in 7 s.");
    // chat-router's own words
    expect(errorMessage(new ConnectError("rate limit: at most 20 chat requests per minute; retry in 2s", Code.ResourceExhausted)))
      .toBe("Too many requests right now — try again in 2 s.");
    expect(errorMessage(new ConnectError("Too Many Requests", Code.ResourceExhausted))).toBe("Too many requests right now — try again in a moment.");
  });

  it("an unavailable model says to try again; other errors keep the server's reason without the [code] prefix", () => {
    expect(errorMessage(new ConnectError("model qwen is offline", Code.Unavailable))).toBe(
      "The model or service is unavailable right now (model qwen is offline) — try again shortly.");
    expect(errorMessage(new ConnectError("email: not a valid address", Code.InvalidArgument))).toBe("email: not a valid address");
  });
});
