/**
 * @luna/sim-comfyui — a ComfyUI-compatible image generation server for tests and GPU-less development.
 *
 * ```ts
 * const sim = await startComfySim({ stepMs: 0 });
 * // point a ComfyUI client at sim.url …
 * sim.setFaults({ wsSilent: true });
 * expect(sim.stats().executions[promptId]).toBe(1);
 * await sim.close();
 * ```
 */
import { resolveOptions, type ComfySimOptions, type SimFaults, type SimStats, type SimTiming } from "./options.js";
import { SimServer } from "./server.js";

export type { ComfySimOptions, SimFaults, SimStats, SimTiming } from "./options.js";
export { DEFAULTS } from "./options.js";
export { DEFAULT_MODELS, SAMPLERS, SCHEDULERS } from "./catalog.js";
export type { HistoryEntry, QueueTuple } from "./engine.js";
export type { ErrorInfo, NodeErrors, Prompt } from "./validate.js";
export type { ImageRef } from "./images.js";
export { renderPng } from "./png.js";

/** A running simulator. */
export interface ComfySim {
  /** Base URL, e.g. `http://127.0.0.1:8188` (what a ComfyUI client is configured with). */
  readonly url: string;
  /** Websocket URL without the clientId query, e.g. `ws://127.0.0.1:8188/ws`. */
  readonly wsUrl: string;
  /** The bound port (stays the same across restarts). */
  readonly port: number;
  /** Stops the server; the running prompt is abandoned. */
  close(): Promise<void>;
  /**
   * Simulates a crash and restart: websockets and HTTP connections are cut, the queue and the running prompt are
   * lost (the latter never reaches the history), the history is lost unless `keepHistoryOnRestart`, the port refuses
   * connections for `downMs` (default 0), then the server listens again on the same port. Saved images and
   * {@link stats} survive. Resolves once it listens again.
   */
  restart(opts?: { downMs?: number }): Promise<void>;
  /** Replaces the active faults (`{}` clears them). Throws a RangeError naming an invalid field. */
  setFaults(faults: SimFaults): void;
  /** The active faults. */
  faults(): SimFaults;
  /**
   * Changes the generation pace (`stepMs` per sampler step, `nodeMs` per other node) from now on; `reset()` restores
   * the startup values. Throws a RangeError naming an invalid field.
   */
  setTiming(timing: Partial<SimTiming>): void;
  /** The current generation pace. */
  timing(): SimTiming;
  /** Counters observed so far (a copy). */
  stats(): SimStats;
  /** Empties queue, history, images, cache and stats, and restores the startup faults (and restarts the configured
   * cold start). */
  reset(): void;
  /** Starts a simulated cold start of `ms` (default: the configured `coldStartMs`) now; returns its end (epoch ms). */
  coldStart(ms?: number): number;
  /** When the current cold start ends (epoch ms; in the past when ready). */
  readyAt(): number;
}

/** Starts a simulator; resolves once it is listening. */
export async function startComfySim(opts: ComfySimOptions = {}): Promise<ComfySim> {
  const resolved = resolveOptions(opts);
  const server = new SimServer(resolved);
  await server.listen();
  // A wildcard listen address is not something a client can connect to.
  const host = resolved.host === "0.0.0.0" || resolved.host === "::" ? "127.0.0.1" : resolved.host;
  const hostPart = host.includes(":") ? `[${host}]` : host;
  const url = `http://${hostPart}:${server.port}`;
  return {
    url,
    wsUrl: `ws://${hostPart}:${server.port}/ws`,
    port: server.port,
    close: () => server.close(),
    restart: (o) => {
      const downMs = o?.downMs ?? 0;
      if (!Number.isFinite(downMs) || downMs < 0) throw new RangeError(`downMs must be a non-negative number, got ${downMs}`);
      return server.restart(downMs);
    },
    setFaults: (f) => server.engine.setFaults(f),
    faults: () => server.engine.faults,
    setTiming: (t) => server.engine.setTiming(t),
    timing: () => server.engine.timing,
    stats: () => server.engine.stats(),
    reset: () => {
      server.engine.reset();
      server.coldStart();
    },
    coldStart: (ms) => server.coldStart(ms),
    readyAt: () => server.readyAt,
  };
}
