import { describe, expect, it } from "vitest";
import { CircuitBreaker } from "./breaker.js";

describe("CircuitBreaker", () => {
  it("opens after consecutive failures, then lets exactly one probe through after the cooldown", () => {
    const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000 });
    b.onFailure(0);
    b.onFailure(0);
    expect(b.state(0)).toBe("closed");
    b.onSuccess(); // a success resets the count
    b.onFailure(0);
    b.onFailure(0);
    expect(b.tryAcquire(0)).toBe(true);
    b.onFailure(10);
    expect(b.state(10)).toBe("open");
    expect(b.tryAcquire(500)).toBe(false);
    expect(b.available(500)).toBe(false);
    expect(b.state(1010)).toBe("half-open");
    expect(b.tryAcquire(1010)).toBe(true);
    expect(b.tryAcquire(1010)).toBe(false); // the probe is out
    b.onSuccess();
    expect(b.state(1010)).toBe("closed");
  });

  it("reopens when the half-open probe fails", () => {
    const b = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 100 });
    b.onFailure(0);
    expect(b.tryAcquire(100)).toBe(true);
    b.onFailure(100);
    expect(b.state(150)).toBe("open");
    expect(b.state(200)).toBe("half-open");
  });

  it("frees the probe slot on a neutral outcome", () => {
    const b = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 100 });
    b.onFailure(0);
    expect(b.tryAcquire(100)).toBe(true);
    b.onNeutral();
    expect(b.tryAcquire(100)).toBe(true);
  });
});
