// connectRedis/redisReady against a Redis of the test's own, stopped and restarted to simulate an outage.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Redis } from "ioredis";
import { startDedicatedRedis } from "../../src/testing/index.js";
import type { DedicatedServer } from "../../src/testing/index.js";
import type { RedisServer } from "../../src/localstack/index.js";
import { connectRedis, redisReady } from "../../src/redis.js";
import { captureLog, waitFor } from "./helpers.js";

let server: DedicatedServer<RedisServer>;
let redis: Redis;
const log = captureLog();

beforeAll(async () => {
  server = await startDedicatedRedis();
  redis = connectRedis(server.url, { log, name: "kit-redis-test", maxReconnectDelayMs: 200 });
});

afterAll(async () => {
  redis?.disconnect();
  await server?.dispose();
});

describe("connectRedis", () => {
  it("connects at once and runs commands", async () => {
    await waitFor("ready", async () => { await redisReady(redis); return true; });
    await redis.set("k", "v");
    expect(await redis.get("k")).toBe("v");
    expect(await redis.client("GETNAME")).toBe("kit-redis-test");
  });

  it("fails fast and reports not ready while Redis is down, then recovers by itself", async () => {
    await redisReady(redis);
    await server.stop();
    await expect(redisReady(redis)).rejects.toThrow();
    const started = Date.now();
    await expect(redis.incr("limit:user-1")).rejects.toThrow();
    const failedAfterMs = Date.now() - started;
    console.log(`[redis] command while Redis is down failed after ${failedAfterMs} ms`);
    // Fail fast means bounded by commandTimeout (1 s), not by the outage: a generous ceiling, not a benchmark.
    expect(failedAfterMs).toBeLessThan(5000);
    expect(log.messages("warn")).toContain("redis connection error; reconnecting");

    await server.restart();
    await waitFor("ready again", async () => { await redisReady(redis); return true; }, { timeoutMs: 20_000 });
    expect(await redis.incr("limit:user-1")).toBe(1); // a test Redis keeps no data across a restart
    expect(log.messages("info")).toContain("redis reconnected");
  });

  it("rejects a URL that is not redis:// with a clear message", () => {
    expect(() => connectRedis("http://localhost:6379", { log })).toThrow(/redis:\/\//);
    expect(() => connectRedis("not a url", { log })).toThrow(/invalid URL/);
  });
});
