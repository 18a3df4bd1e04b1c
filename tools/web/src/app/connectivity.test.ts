import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createConnectivity } from "./connectivity.js";

const offline = () => new ConnectError("Failed to fetch", Code.Unknown, undefined, undefined, new TypeError("Failed to fetch"));

describe("createConnectivity", () => {
  let window: EventTarget;
  beforeEach(() => {
    vi.useFakeTimers();
    window = new EventTarget();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("goes down once on an unreachable failure, probes with backoff, and comes back up when a probe gets an answer", async () => {
    let reachable = false;
    const probes: number[] = [];
    const events: string[] = [];
    const c = createConnectivity({
      delays: [100, 200, 400],
      probe: async () => {
        probes.push(Date.now());
        if (!reachable) throw offline();
      },
      onDown: () => events.push("down"),
      onUp: () => events.push("up"),
      events: window,
    });
    const start = Date.now();
    c.failed(new ConnectError("email: not valid", Code.InvalidArgument)); // an answer: no outage
    expect(c.down).toBe(false);
    c.failed(offline());
    c.failed(new ConnectError("HTTP 503", Code.Unavailable)); // already down: nothing new
    expect(events).toEqual(["down"]);
    await vi.advanceTimersByTimeAsync(100 + 200 + 400 + 400);
    expect(probes.map((t) => t - start)).toEqual([100, 300, 700, 1100]); // the last delay repeats
    reachable = true;
    await vi.advanceTimersByTimeAsync(400);
    expect(events).toEqual(["down", "up"]);
    expect(c.down).toBe(false);
    await vi.advanceTimersByTimeAsync(5000);
    expect(probes).toHaveLength(5); // no probing once up
  });

  it("an answer from any call (or the browser's online event) ends the outage early", async () => {
    const events: string[] = [];
    let probes = 0;
    const c = createConnectivity({ delays: [10_000], probe: async () => void probes++, onDown: () => events.push("down"), onUp: () => events.push("up"),
      events: window });
    c.failed(offline());
    c.answered();
    expect(events).toEqual(["down", "up"]);
    c.failed(offline());
    window.dispatchEvent(new Event("online"));
    await vi.advanceTimersByTimeAsync(0);
    expect(probes).toBe(1);
    expect(events).toEqual(["down", "up", "down", "up"]);
  });
});
