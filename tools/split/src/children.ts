// One service process: spawned with its TypeScript sources (`node --conditions=luna-source --import tsx <main.ts>`),
// its output split into lines and handed on with its name, its last lines kept for error messages, and stopped the way
// Kubernetes stops a pod: SIGTERM, then SIGKILL once the grace period is over.
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";

// Compiled or not, the preload sits next to this file.
const PARENT_WATCH = new URL(`./parent-watch.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url).href;

/** Where a line came from. */
export type Stream = "stdout" | "stderr";

export interface ServiceProcessOptions {
  name: string;
  /** Entry file relative to `cwd`. */
  entry: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Each output line (without its newline). */
  onLine(name: string, line: string, stream: Stream): void;
  /** How many recent lines to keep for error messages; default 40. */
  keepLines?: number;
}

export interface ServiceProcess {
  name: string;
  pid: number | undefined;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Whether it is still running. */
  running(): boolean;
  /** Its last output lines. */
  tail(): string[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs: number): Promise<void>;
  /** SIGKILL at once (the launcher is dying; no time for a graceful stop). */
  kill(): void;
}

/** Calls `onLine` once per complete line of a stream. */
function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffered = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf("\n")) !== -1) {
      onLine(buffered.slice(0, nl).replace(/\r$/, ""));
      buffered = buffered.slice(nl + 1);
    }
  });
  stream.on("end", () => {
    if (buffered) onLine(buffered);
    buffered = "";
  });
}

/** Spawns a service process. */
export function spawnServiceProcess(opts: ServiceProcessOptions): ServiceProcess {
  const keep = opts.keepLines ?? 40;
  const recent: string[] = [];
  const child: ChildProcess = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", "--import", PARENT_WATCH, opts.entry], {
    cwd: opts.cwd,
    env: opts.env,
    // stdin is a pipe only so the child notices when the launcher is gone (see parent-watch.ts).
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group: Ctrl-C in the terminal reaches only the launcher, which then stops the services in
    // order. (Sharing the group, every service would get SIGINT at once and the launcher's SIGTERM would then count
    // as the "second signal" that makes a service exit without draining.)
    detached: true,
  });
  const record = (stream: Stream) => (line: string): void => {
    recent.push(line);
    if (recent.length > keep) recent.shift();
    opts.onLine(opts.name, line, stream);
  };
  child.stdin!.on("error", () => {}); // never written to; an EPIPE after the child exited is no news
  lines(child.stdout!, record("stdout"));
  lines(child.stderr!, record("stderr"));
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
    child.once("error", (err) => {
      // spawn itself failed (no exit event follows)
      alive = false;
      record("stderr")(`could not start: ${err.message}`);
      resolve({ code: null, signal: null });
    });
  });
  let stopping: Promise<void> | undefined;
  return {
    name: opts.name,
    pid: child.pid,
    exited,
    running: () => alive,
    tail: () => [...recent],
    stop(graceMs) {
      stopping ??= (async () => {
        if (!alive) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => {
          if (alive) {
            opts.onLine(opts.name, `still running ${graceMs} ms after SIGTERM: SIGKILL`, "stderr");
            child.kill("SIGKILL");
          }
        }, graceMs);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
    kill() {
      if (alive) child.kill("SIGKILL");
    },
  };
}

/** Whether something accepts TCP connections on host:port. */
export function canConnect(port: number, host = "127.0.0.1", timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** Thrown when a process does not become ready; carries its last output lines. */
export class NotReadyError extends Error {
  override name = "NotReadyError";
}

/**
 * Waits until the process's admin port answers `/readyz` with 200 and, for API services, its API port accepts
 * connections (the admin port comes up before the modules finish starting). Fails at once when the process exits.
 */
export async function waitUntilReady(proc: ServiceProcess, opts: { adminPort: number; apiPort?: number; timeoutMs: number;
  pollMs?: number; host?: string }): Promise<void> {
  const host = opts.host ?? "127.0.0.1";
  const base = `http://${host.includes(":") ? `[${host}]` : host}`;
  const deadline = Date.now() + opts.timeoutMs;
  const pollMs = opts.pollMs ?? 200;
  let last = "not answering yet";
  for (;;) {
    if (!proc.running()) {
      const { code, signal } = await proc.exited;
      throw new NotReadyError(`${proc.name} exited while starting (${signal ? `signal ${signal}` : `exit code ${code}`}); its last lines:\n` +
        proc.tail().map((l) => `  ${l}`).join("\n"));
    }
    try {
      const res = await fetch(`${base}:${opts.adminPort}/readyz`, { signal: AbortSignal.timeout(2000) });
      const body = await res.text();
      if (res.status === 200) {
        if (opts.apiPort === undefined || (await canConnect(opts.apiPort, host))) return;
        last = "ready, but its API port does not accept connections yet";
      } else {
        last = `/readyz answered ${res.status}: ${body.slice(0, 300)}`;
      }
    } catch {
      // admin port not listening yet
    }
    if (Date.now() > deadline) {
      throw new NotReadyError(`${proc.name} not ready after ${opts.timeoutMs} ms (${last}); its last lines:\n` +
        proc.tail().map((l) => `  ${l}`).join("\n"));
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
