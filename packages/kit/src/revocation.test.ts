// The kit's revocation list against the run's real Redis: a user's tokens issued before the cut-off are refused by
// the verifier, newer ones pass, a replica's cached view is at most checkIntervalMs old, and Redis down fails open.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, describe, expect, it } from "vitest";
import type { JwtVerifier, Principal } from "./auth.js";
import { createLogger } from "./log.js";
import { connectRedis } from "./redis.js";
import { createRevocationList, revocationCheckingVerifier } from "./revocation.js";
import { testServers } from "./testing/index.js";

const log = createLogger({ service: "test", level: "silent" });
const redis = connectRedis(testServers().redisUrl, { log, name: "revocation-test" });
afterAll(() => redis.disconnect());

/** A verifier whose "tokens" are `<userId>:<issuedAtMs>[:internal]`. */
const fake: JwtVerifier = {
  async verify(token) {
    const [userId, issuedAt, role] = token.split(":");
    return { userId: userId!, role: role === "internal" ? "internal" : "user", tokenId: token, issuedAt: Number(issuedAt) } satisfies Principal;
  },
};

async function code(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return ConnectError.from(e).code;
  }
}

describe("revocation list", () => {
  it("refuses the user's tokens issued before the cut-off, in another replica within checkIntervalMs", async () => {
    const prefix = `luna:test-revoked:${randomUUID()}:`;
    const writer = createRevocationList({ redis, keyPrefix: prefix });
    const replica = createRevocationList({ redis, keyPrefix: prefix, checkIntervalMs: 300 });
    const verifier = revocationCheckingVerifier(fake, replica);
    const t0 = Date.now();
    const old = `u1:${t0 - 10}`;
    expect(await code(verifier.verify(old))).toBe("ok"); // cached: "not revoked"
    await writer.revokeUser("u1", { ttlMs: 60_000, at: new Date(t0) });
    expect(await code(verifier.verify(old))).toBe("ok"); // the replica's cached view, younger than 300 ms
    await new Promise((r) => setTimeout(r, 350));
    expect(await code(verifier.verify(old))).toBe(Code.Unauthenticated);
    expect(await code(verifier.verify(`u1:${t0}`))).toBe("ok"); // issued at the cut-off: the new session's token
    expect(await code(verifier.verify(`u2:${t0 - 10}`))).toBe("ok"); // another user
    expect(await code(verifier.verify(`u1:${t0 - 10}:internal`))).toBe("ok"); // internal tokens are not users'
    // A later revocation wins; an earlier one does not move the cut-off back.
    await writer.revokeUser("u1", { ttlMs: 60_000, at: new Date(t0 + 5000) });
    await writer.revokeUser("u1", { ttlMs: 60_000, at: new Date(t0 - 5000) });
    expect(await writer.notBefore("u1")).toBe(t0 + 5000);
    // The entry lives as long as the tokens it can refuse.
    const ttl = await redis.pttl(`${prefix}u1`);
    expect(ttl).toBeGreaterThan(50_000);
    expect(ttl).toBeLessThanOrEqual(60_000);
  });

  it("fails open when Redis is unreachable (tokens then live until they expire)", async () => {
    const down = connectRedis("redis://127.0.0.1:1", { log, commandTimeoutMs: 200, connectTimeoutMs: 200, maxRetriesPerRequest: 0 });
    try {
      const verifier = revocationCheckingVerifier(fake, createRevocationList({ redis: down }));
      expect(await code(verifier.verify(`u1:${Date.now()}`))).toBe("ok");
    } finally {
      down.disconnect();
    }
  });
});
