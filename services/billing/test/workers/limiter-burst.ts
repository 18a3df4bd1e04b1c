// A separate billing process for the limiter accuracy test: its own Redis connection, the real limiter. Says
// "ready", waits for "go", sends COUNT checks concurrently, prints how many were admitted.
import { Redis } from "ioredis";
import { createRateLimiter } from "../../src/limits/limiter.js";
import { parseLimitPolicy } from "../../src/limits/policy.js";

const { REDIS_URL, SUBJECT, COUNT, LIMIT, PER } = process.env;
const redis = new Redis(REDIS_URL!, { maxRetriesPerRequest: 1 });
await redis.ping();
const policy = parseLimitPolicy(JSON.stringify({ roles: { user: { rates: { burst: { limit: Number(LIMIT), per: PER } } } } }));
const limiter = createRateLimiter(redis, policy, { hooks: { failOpen: (_op, err) => process.stderr.write(`fail open: ${String(err)}\n`) } });
process.stdout.write("ready\n");
await new Promise<void>((resolve) => process.stdin.once("data", () => resolve()));
const decisions = await Promise.all(Array.from({ length: Number(COUNT) }, () => limiter.check(SUBJECT!, "burst", { role: "user" })));
redis.disconnect();
process.stdout.write(`${JSON.stringify({ admitted: decisions.filter((d) => d.allowed).length, degraded: decisions.filter((d) => d.degraded).length })}\n`);
