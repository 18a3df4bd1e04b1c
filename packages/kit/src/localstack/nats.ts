import net from "node:net";
import { join } from "node:path";
import { manualInstructions, which } from "./binaries.js";
import { ServerProcess } from "./managed.js";
import type { ManagedServer, ServerOptions } from "./types.js";

export interface NatsOptions extends ServerOptions {
  /** HTTP monitoring port (`/healthz`, `/jsz`, used by KEDA-style lag checks); default: a free port. */
  monitorPort?: number;
  /** Path of nats-server; default: found on PATH. */
  natsServer?: string;
}

export interface NatsServer extends ManagedServer {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  /** `http://127.0.0.1:<monitorPort>` */
  readonly monitorUrl: string;
  readonly monitorPort: number;
}

/** Reads the greeting a NATS server sends every client ("INFO {...}"). */
function natsGreeting(port: number, timeoutMs = 1_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    const done = (err?: Error) => {
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    socket.setTimeout(timeoutMs, () => done(new Error("no INFO from nats-server")));
    socket.on("error", (err) => done(err));
    socket.once("data", (chunk) => (chunk.toString().startsWith("INFO ") ? done() : done(new Error("unexpected greeting"))));
  });
}

/** Ready when the monitor's /healthz says ok (JetStream included) and the client port greets. */
async function probe(port: number, monitorPort: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${monitorPort}/healthz`, { signal: AbortSignal.timeout(1_000) });
  const body = await res.text();
  if (!res.ok) throw new Error(`/healthz ${res.status}: ${body.trim()}`);
  await natsGreeting(port);
}

/**
 * Starts (or adopts) nats-server with JetStream (file storage in `<dataDir>/jetstream`) on 127.0.0.1, with HTTP
 * monitoring. JetStream data survives restart().
 */
export async function startNats(opts: NatsOptions): Promise<NatsServer> {
  const binary = opts.natsServer ?? which("nats-server");
  if (!binary) throw new Error(manualInstructions(["nats"]));
  const server = await ServerProcess.start({
    kind: "nats",
    dataDir: opts.dataDir,
    logFile: join(opts.dataDir, "nats.log"),
    requestedPorts: [opts.port, opts.monitorPort],
    command: ([port, monitorPort]) => ({
      command: binary,
      args: [
        "-a", "127.0.0.1",
        "-p", String(port),
        "-m", String(monitorPort),
        "-js",
        "-sd", join(opts.dataDir, "jetstream"),
        "-P", join(opts.dataDir, "nats.pid"),
      ],
    }),
    probe: ([port, monitorPort]) => probe(port!, monitorPort!),
    stopSignal: "SIGTERM",
    exitSignal: "SIGKILL",
    keepRunning: opts.keepRunning ?? false,
    readyTimeoutMs: opts.readyTimeoutMs,
    stopTimeoutMs: opts.stopTimeoutMs,
    log: opts.log,
  });
  const monitorPort = server.ports[1]!;
  return Object.assign(server, {
    url: `nats://127.0.0.1:${server.port}`,
    monitorUrl: `http://127.0.0.1:${monitorPort}`,
    monitorPort,
  });
}
