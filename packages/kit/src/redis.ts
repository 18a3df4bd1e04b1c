// Redis (ioredis) for rate limits and short-lived caches; never the record of anything. Calls must fail fast when
// Redis is down, because callers fail open (rate limits) rather than wait.
import { Redis } from "ioredis";
import type { MinimalLogger } from "./nats.js";

export type { Redis } from "ioredis";

export interface ConnectRedisOptions {
  log: MinimalLogger;
  /** Client name shown by `CLIENT LIST`; use the service name. */
  name?: string;
  /** A command without a reply after this long rejects (default 1000 ms). */
  commandTimeoutMs?: number;
  /** Reconnects attempted while a command waits before it is rejected (default 1). */
  maxRetriesPerRequest?: number;
  /** Reconnect delay starts at 100 ms and doubles up to this (default 5000 ms). */
  maxReconnectDelayMs?: number;
  /** Time allowed to establish a connection (default 5000 ms). */
  connectTimeoutMs?: number;
  /**
   * Commands issued in the same event-loop tick leave in one write (ioredis auto-pipelining; default true). Under
   * load many requests check limits at once; one socket write and one read for all of them instead of one each
   * took ~7% off chat-router's CPU per reply (docs/RELAY-PROFILE.md). Replies and errors stay per command.
   */
  autoPipelining?: boolean;
}

/**
 * Connects at once (not lazily) and reconnects forever with capped exponential backoff. Commands fail fast while Redis
 * is unreachable: each rejects after `commandTimeoutMs` or after `maxRetriesPerRequest` failed reconnects, whichever
 * is first. Connection errors are logged (first one at warn, repeats at debug) and never thrown as unhandled
 * 'error' events.
 */
export function connectRedis(url: string, opts: ConnectRedisOptions): Redis {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`connectRedis: invalid URL ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new Error(`connectRedis: URL must start with redis:// or rediss://, got ${parsed.protocol}//`);
  }
  const { log } = opts;
  const maxDelay = opts.maxReconnectDelayMs ?? 5000;
  const target = `${parsed.hostname}:${parsed.port || "6379"}`;
  const redis = new Redis(url, {
    connectionName: opts.name,
    lazyConnect: false,
    enableAutoPipelining: opts.autoPipelining ?? true,
    enableOfflineQueue: true, // a command issued during a short reconnect waits for it (bounded by commandTimeout)
    maxRetriesPerRequest: opts.maxRetriesPerRequest ?? 1,
    commandTimeout: opts.commandTimeoutMs ?? 1000,
    connectTimeout: opts.connectTimeoutMs ?? 5000,
    retryStrategy: (attempt: number) => Math.min(100 * 2 ** Math.min(attempt - 1, 16), maxDelay),
  });
  let down = false;
  redis.on("error", (err: Error) => {
    if (!down) log.warn({ err, redis: target }, "redis connection error; reconnecting");
    else log.debug({ err, redis: target }, "redis still unreachable");
    down = true;
  });
  redis.on("ready", () => {
    if (down) log.info({ redis: target }, "redis reconnected");
    else log.info({ redis: target }, "redis connected");
    down = false;
  });
  redis.on("end", () => log.info({ redis: target }, "redis connection closed"));
  return redis;
}

/** Readiness check: throws unless the connection is ready and PING answers within `timeoutMs` (default 1000 ms). */
export async function redisReady(redis: Redis, timeoutMs = 1000): Promise<void> {
  if (redis.status !== "ready") throw new Error(`redis not ready (status ${redis.status})`);
  let timer: NodeJS.Timeout | undefined;
  try {
    const reply = await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`redis PING timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    if (reply !== "PONG") throw new Error(`redis PING answered ${String(reply)}`);
  } finally {
    clearTimeout(timer);
  }
}
