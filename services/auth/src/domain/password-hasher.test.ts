import type * as Argon2 from "@node-rs/argon2";
import { beforeEach, describe, expect, it, vi } from "vitest";

// Wrap the real argon2 to observe calls (how many, and how many at once) without changing what they compute.
const observed = vi.hoisted(() => ({ verify: [] as string[], inFlight: 0, maxInFlight: 0 }));
vi.mock("@node-rs/argon2", async (importOriginal) => {
  const real = await importOriginal<typeof Argon2>();
  const track = <A extends unknown[], R>(fn: (...a: A) => Promise<R>) => async (...a: A): Promise<R> => {
    observed.inFlight++;
    observed.maxInFlight = Math.max(observed.maxInFlight, observed.inFlight);
    try {
      return await fn(...a);
    } finally {
      observed.inFlight--;
    }
  };
  return {
    ...real,
    hash: track(real.hash),
    verify: track(async (encoded: string | Uint8Array, password: string | Uint8Array) => {
      observed.verify.push(String(encoded));
      return real.verify(encoded, password);
    }),
  };
});

const { ARGON2_FLOOR, createArgon2Hasher } = await import("./password-hasher.js");

beforeEach(() => {
  observed.verify.length = 0;
  observed.maxInFlight = 0;
});

describe("argon2id hasher", () => {
  const hasher = createArgon2Hasher(ARGON2_FLOOR, { maxConcurrency: 2 });

  it("hashes with argon2id at the configured parameters and verifies", async () => {
    const encoded = await hasher.hash("correct horse battery staple");
    expect(encoded).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await hasher.verify(encoded, "correct horse battery staple")).toBe(true);
    expect(await hasher.verify(encoded, "correct horse battery stapler")).toBe(false);
  });

  it("treats NFC-equivalent passwords as the same password", async () => {
    const encoded = await hasher.hash("caf\u00e9 au lait please");
    expect(await hasher.verify(encoded, "cafe\u0301 au lait please")).toBe(true);
  });

  it("does the same argon2 work for an unknown account (dummy hash) and never accepts it", async () => {
    expect(await hasher.verify(undefined, "anything at all")).toBe(false);
    expect(observed.verify).toHaveLength(1);
    expect(observed.verify[0]).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });

  it("treats a corrupt stored hash as a failed verification, not a crash", async () => {
    expect(await hasher.verify("not-a-hash", "x")).toBe(false);
  });

  it("flags hashes made with weaker parameters for rehash", async () => {
    const stronger = createArgon2Hasher({ memoryKiB: 32 * 1024, iterations: 3, parallelism: 1 }, { maxConcurrency: 1 });
    const weak = await hasher.hash("some password here");
    expect(hasher.needsRehash(weak)).toBe(false);
    expect(stronger.needsRehash(weak)).toBe(true);
    expect(stronger.needsRehash("$2b$10$bcryptlookinghash")).toBe(true);
  });

  it("refuses parameters below the OWASP floor", () => {
    expect(() => createArgon2Hasher({ memoryKiB: 4096, iterations: 2, parallelism: 1 }, { maxConcurrency: 1 })).toThrow(/floor/);
    expect(() => createArgon2Hasher({ memoryKiB: 19456, iterations: 1, parallelism: 1 }, { maxConcurrency: 1 })).toThrow(/floor/);
  });

  it("runs at most maxConcurrency computations at once", async () => {
    const one = createArgon2Hasher(ARGON2_FLOOR, { maxConcurrency: 1 });
    await Promise.all(Array.from({ length: 4 }, (_, i) => one.hash(`password number ${i}`)));
    expect(observed.maxInFlight).toBe(1);
    const two = createArgon2Hasher(ARGON2_FLOOR, { maxConcurrency: 2 });
    observed.maxInFlight = 0;
    await Promise.all(Array.from({ length: 6 }, (_, i) => two.hash(`password number ${i}`)));
    expect(observed.maxInFlight).toBe(2);
  });
});
