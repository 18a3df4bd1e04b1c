// API keys: the format (prefix + checksum) refuses mistyped keys without a lookup; auth's answer is cached; revoking a
// key or its user (the revocation list, real Redis) makes another replica ask auth again within the check interval.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import { apiKeyHint, apiKeyRevocationId, createApiKeyVerifier, generateApiKey, hashApiKey, isWellFormedApiKey, looksLikeApiKey,
  type ApiKeyLookup } from "./api-keys.js";
import { createLogger } from "./log.js";
import { connectRedis } from "./redis.js";
import { createRevocationList } from "./revocation.js";
import { testServers } from "./testing/index.js";

const log = createLogger({ service: "test", level: "silent" });
const redis = connectRedis(testServers().redisUrl, { log, name: "api-keys-test" });
afterAll(() => redis.disconnect());

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

/** A fake auth: a table of valid keys; counts lookups. */
function fakeAuth() {
  const valid = new Map<string, { userId: string; apiKeyId: string; expiresAtMs?: number }>();
  let lookups = 0;
  const lookup: ApiKeyLookup = async (key) => {
    lookups++;
    const r = valid.get(key);
    if (!r) throw new ConnectError("invalid API key", Code.Unauthenticated);
    return r;
  };
  return { valid, lookup, lookups: () => lookups };
}

describe("API key format", () => {
  it("has the prefix, a fixed length, and a checksum that catches a changed character", () => {
    const key = generateApiKey();
    expect(key).toMatch(/^luna_sk_[0-9A-Za-z]{46}$/);
    expect(looksLikeApiKey(key)).toBe(true);
    expect(isWellFormedApiKey(key)).toBe(true);
    expect(apiKeyHint(key)).toBe(key.slice(0, 12));
    expect(hashApiKey(key)).toMatch(/^[0-9a-f]{64}$/);
    expect(generateApiKey()).not.toBe(key);
    // Broken inputs: one character changed in the body, in the checksum, wrong prefix, too short, bad alphabet.
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "a" ? "b" : "a") + s.slice(i + 1);
    expect(isWellFormedApiKey(flip(key, 10))).toBe(false);
    expect(isWellFormedApiKey(flip(key, key.length - 1))).toBe(false);
    expect(isWellFormedApiKey("luna_pk_" + key.slice(8))).toBe(false);
    expect(isWellFormedApiKey(key.slice(0, -1))).toBe(false);
    expect(isWellFormedApiKey(key.slice(0, -2) + "-_")).toBe(false);
  });
});

describe("createApiKeyVerifier", () => {
  it("refuses a malformed key without asking auth, and an unknown well-formed key after asking", async () => {
    const auth = fakeAuth();
    const v = createApiKeyVerifier({ lookup: auth.lookup });
    expect(await code(v.verify("luna_sk_nope"))).toBe(Code.Unauthenticated);
    expect(auth.lookups()).toBe(0);
    expect(await code(v.verify(generateApiKey()))).toBe(Code.Unauthenticated);
    expect(auth.lookups()).toBe(1);
  });

  it("caches auth's answer, as role user with the key id, until the TTL", async () => {
    const auth = fakeAuth();
    let now = 1_000_000;
    const v = createApiKeyVerifier({ lookup: auth.lookup, cacheTtlMs: 1000, now: () => now });
    const key = generateApiKey();
    auth.valid.set(key, { userId: "u1", apiKeyId: "k1" });
    const p = await v.verify(key);
    expect(p).toMatchObject({ userId: "u1", role: "user", apiKeyId: "k1" });
    await v.verify(key);
    expect(auth.lookups()).toBe(1);
    now += 1001;
    auth.valid.delete(key);
    expect(await code(v.verify(key))).toBe(Code.Unauthenticated);
    expect(auth.lookups()).toBe(2);
  });

  it("stops a cached key at its expiry", async () => {
    const auth = fakeAuth();
    let now = 1_000_000;
    const v = createApiKeyVerifier({ lookup: auth.lookup, cacheTtlMs: 60_000, now: () => now });
    const key = generateApiKey();
    auth.valid.set(key, { userId: "u1", apiKeyId: "k1", expiresAtMs: now + 500 });
    await v.verify(key);
    now += 600;
    auth.valid.delete(key);
    expect(await code(v.verify(key))).toBe(Code.Unauthenticated);
  });

  it("says Unavailable, not Unauthenticated, when auth cannot be reached", async () => {
    const v = createApiKeyVerifier({ lookup: async () => { throw new ConnectError("connect ECONNREFUSED", Code.Unavailable); } });
    expect(await code(v.verify(generateApiKey()))).toBe(Code.Unavailable);
  });

  it("drops a cached answer once the key or its user is revoked (another replica, real Redis)", async () => {
    const prefix = `luna:test-revoked:${randomUUID()}:`;
    const writer = createRevocationList({ redis, keyPrefix: prefix });
    const replica = createRevocationList({ redis, keyPrefix: prefix, checkIntervalMs: 200 });
    const auth = fakeAuth();
    // Answers cached an hour: only the revocation list can end them early.
    let now = Date.now() - 10_000; // verified 10 s ago (beyond the clock margin)
    const v = createApiKeyVerifier({ lookup: auth.lookup, revocations: replica, cacheTtlMs: 3_600_000, now: () => now });
    const key = generateApiKey();
    const other = generateApiKey();
    auth.valid.set(key, { userId: "u1", apiKeyId: "k1" });
    auth.valid.set(other, { userId: "u1", apiKeyId: "k2" });
    await v.verify(key);
    await v.verify(other);
    now = Date.now();
    expect(auth.lookups()).toBe(2);

    // Key k1 revoked: auth no longer knows it; the cached answer is dropped within the check interval.
    auth.valid.delete(key);
    await writer.revokeUser(apiKeyRevocationId("k1"), { ttlMs: 60_000 });
    await new Promise((r) => setTimeout(r, 250));
    expect(await code(v.verify(key))).toBe(Code.Unauthenticated);
    // The other key of the same user is still served from the cache.
    const before = auth.lookups();
    expect(await code(v.verify(other))).toBe("ok");
    expect(auth.lookups()).toBe(before);

    // The user revoked (account deleted): auth is asked again for every key of theirs.
    auth.valid.delete(other);
    await writer.revokeUser("u1", { ttlMs: 60_000 });
    await new Promise((r) => setTimeout(r, 250));
    expect(await code(v.verify(other))).toBe(Code.Unauthenticated);
  });
});
