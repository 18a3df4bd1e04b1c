// The kit's Redis client against the run's real Redis: commands issued together leave together (auto-pipelining),
// each still gets its own reply or error.
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { createLogger } from "./log.js";
import { connectRedis, type Redis } from "./redis.js";
import { testServers } from "./testing/index.js";

const log = createLogger({ service: "test", level: "silent" });
const clients: Redis[] = [];
afterAll(() => {
  for (const c of clients) c.disconnect();
});

async function connected(opts: { autoPipelining?: boolean } = {}): Promise<Redis> {
  const r = connectRedis(testServers().redisUrl, { log, name: "redis-test", ...opts });
  clients.push(r);
  if (r.status !== "ready") await new Promise((resolve) => r.once("ready", resolve));
  return r;
}

/** Socket writes made while `body` runs. */
async function writesDuring(r: Redis, body: () => Promise<unknown>): Promise<number> {
  const stream = (r as unknown as { stream: { write: (...a: unknown[]) => boolean } }).stream;
  const write = stream.write;
  let n = 0;
  stream.write = function (this: unknown, ...a: unknown[]) {
    n++;
    return write.apply(this, a);
  };
  try {
    await body();
  } finally {
    stream.write = write;
  }
  return n;
}

describe("connectRedis", () => {
  it("sends commands issued in the same tick in one write, each with its own reply", async () => {
    const key = `luna:test-pipe:${randomUUID()}`;
    const together = async (r: Redis) => {
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => r.incrby(key, i + 1)));
      return replies;
    };
    const piped = await connected();
    let replies: number[] = [];
    const writes = await writesDuring(piped, async () => {
      replies = await together(piped);
    });
    expect(writes).toBe(1);
    // Applied in order: the running sums 1, 3, 6, ...
    expect(replies).toEqual(Array.from({ length: 20 }, (_, i) => ((i + 1) * (i + 2)) / 2));

    const plain = await connected({ autoPipelining: false });
    expect(await writesDuring(plain, () => together(plain))).toBe(20);
    await piped.del(key);
  });

  it("keeps errors per command in a shared write", async () => {
    const r = await connected();
    const key = `luna:test-pipe:${randomUUID()}`;
    const [ok, bad] = await Promise.allSettled([r.set(key, "x"), r.incr(key)]);
    expect(ok).toEqual({ status: "fulfilled", value: "OK" });
    expect(bad.status).toBe("rejected");
    expect(String((bad as PromiseRejectedResult).reason)).toMatch(/not an integer/);
    await r.del(key);
  });
});
