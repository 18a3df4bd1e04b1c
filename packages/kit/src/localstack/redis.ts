import net from "node:net";
import { join } from "node:path";
import { manualInstructions, which } from "./binaries.js";
import { ServerProcess } from "./managed.js";
import type { ManagedServer, ServerOptions } from "./types.js";

export interface RedisOptions extends ServerOptions {
  /** Path of redis-server; default: found on PATH. */
  redisServer?: string;
}

export interface RedisServer extends ManagedServer {
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
}

// Redis's own default snapshot schedule, used when `durable` (the dev stack).
const DURABLE_SAVE = "3600 1 300 100 60 10000";

/** Sends PING over a raw socket and expects +PONG (a loading server answers -LOADING: not ready yet). */
export function pingRedis(port: number, timeoutMs = 1_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    let reply = "";
    const done = (err?: Error) => {
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.setTimeout(timeoutMs, () => done(new Error("PING timed out")));
    socket.on("error", (err) => done(err));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      if (!reply.includes("\r\n")) return;
      if (reply.startsWith("+PONG")) done();
      else done(new Error(`unexpected reply ${JSON.stringify(reply.trim())}`));
    });
  });
}

/**
 * Starts (or adopts) redis-server on 127.0.0.1 with its files in `dataDir` (`redis.log`; `appendonly` and dump
 * files when `durable`). Tests: no persistence.
 */
export async function startRedis(opts: RedisOptions): Promise<RedisServer> {
  const binary = opts.redisServer ?? which("redis-server");
  if (!binary) throw new Error(manualInstructions(["redis"]));
  const server = await ServerProcess.start({
    kind: "redis",
    dataDir: opts.dataDir,
    logFile: join(opts.dataDir, "redis.log"),
    requestedPorts: [opts.port],
    command: ([port]) => ({
      command: binary,
      args: [
        "--port", String(port),
        "--bind", "127.0.0.1",
        "--dir", opts.dataDir,
        "--daemonize", "no",
        "--pidfile", join(opts.dataDir, "redis.pid"),
        "--save", opts.durable ? DURABLE_SAVE : "",
        "--appendonly", opts.durable ? "yes" : "no",
      ],
    }),
    probe: ([port]) => pingRedis(port!),
    stopSignal: "SIGTERM", // saves when persistence is on, then exits
    exitSignal: "SIGKILL",
    keepRunning: opts.keepRunning ?? false,
    readyTimeoutMs: opts.readyTimeoutMs,
    stopTimeoutMs: opts.stopTimeoutMs,
    log: opts.log,
  });
  // The port never changes (restart() reuses it), so the URL is fixed.
  return Object.assign(server, { url: `redis://127.0.0.1:${server.port}` });
}
