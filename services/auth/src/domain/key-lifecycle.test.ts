import { describe, expect, it } from "vitest";
import { activeKey, expiredKeys, nextKeyActivation, publishedKeys, type LifecycleOptions } from "./key-lifecycle.js";

const H = 3_600_000;
const opts: LifecycleOptions = { rotationIntervalMs: 24 * H, prepublishMs: H, retainAfterSupersededMs: H / 2 };
const at = (h: number) => new Date(Date.UTC(2026, 0, 1) + h * H);
const key = (kid: string, h: number) => ({ kid, activatesAt: at(h) });

describe("signing key lifecycle", () => {
  it("creates the first key at once", () => {
    expect(nextKeyActivation([], at(0), opts)).toEqual(at(0));
  });
  it("publishes the successor `prepublish` before the interval ends, and not earlier", () => {
    const keys = [key("a", 0)];
    expect(nextKeyActivation(keys, at(22.9), opts)).toBeUndefined();
    expect(nextKeyActivation(keys, at(23), opts)).toEqual(at(24));
    expect(nextKeyActivation([...keys, key("b", 24)], at(23.5), opts)).toBeUndefined(); // already waiting
  });
  it("activates a late successor no sooner than `prepublish` from now (verifiers must see it first)", () => {
    expect(nextKeyActivation([key("a", 0)], at(30), opts)).toEqual(at(31));
  });
  it("signs with the newest activated key; a pending key does not sign", () => {
    const keys = [key("a", 0), key("b", 24)];
    expect(activeKey(keys, at(23.9))?.kid).toBe("a");
    expect(activeKey(keys, at(24))?.kid).toBe("b");
    expect(activeKey([key("b", 24)], at(1))).toBeUndefined();
  });
  it("keeps a retired key published until its tokens have expired, then lets it go", () => {
    const keys = [key("a", 0), key("b", 24), key("c", 48)];
    expect(publishedKeys(keys, at(23.5), opts).map((k) => k.kid)).toEqual(["a", "b", "c"]);
    expect(publishedKeys(keys, at(24.4), opts).map((k) => k.kid)).toEqual(["a", "b", "c"]);
    expect(publishedKeys(keys, at(24.5), opts).map((k) => k.kid)).toEqual(["b", "c"]);
    expect(expiredKeys(keys, at(24.5), opts).map((k) => k.kid)).toEqual(["a"]);
    expect(publishedKeys(keys, at(48.2), opts).map((k) => k.kid)).toEqual(["b", "c"]);
    expect(publishedKeys(keys, at(49), opts).map((k) => k.kid)).toEqual(["c"]);
  });
});
