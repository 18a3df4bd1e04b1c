/**
 * @luna/sim-vllm: a vLLM-compatible (OpenAI API) inference simulator for tests, benchmarks and GPU-less
 * development. Start one in a test with {@link startVllmSim}; run one standalone with `npm run -w tools/sim-vllm
 * start`.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { type Faults, type ModelSpec, type VllmSimOptions, resolveOptions } from "./config.js";
import { createHandler } from "./server.js";
import { type SimStats, Simulator } from "./sim.js";

export {
  DEFAULT_MAX_MODEL_LEN,
  DEFAULT_MODEL,
  NO_FAULTS,
  SimConfigError,
  TIMING_PROFILES,
  parseModelSpec,
  resolveOptions,
  validateFaults,
} from "./config.js";
export type { Faults, ModelSpec, RequestRecord, TimingOptions, TimingProfile, VllmSimOptions } from "./config.js";
export type { SimStats } from "./sim.js";
export { countTokens, renderChatTemplate, tokenize } from "./tokenizer.js";

/** A running simulator. */
export interface VllmSim {
  /** Root URL, e.g. `http://127.0.0.1:41234` (routes: `/health`, `/metrics`, `/tokenize`, `/_sim/*`). */
  url: string;
  /** OpenAI base URL (`url` + `/v1`), for `new OpenAI({ baseURL })`. */
  baseURL: string;
  port: number;
  /** Served models with their context windows. */
  models: Required<ModelSpec>[];
  /** Merges fault settings (validated; throws SimConfigError on bad values); returns the full set in force. */
  setFaults(faults: Partial<Faults>): Faults;
  /** The fault settings in force. */
  faults(): Faults;
  /** Counters since start or the last reset, plus live running/waiting counts. */
  stats(): SimStats;
  /** Zeroes counters and metrics, empties the prefix cache, restores the initial faults (and restarts the configured
   * cold start). */
  reset(): void;
  /** Starts a simulated cold start of `ms` (default: the configured `coldStartMs`) now; returns its end (epoch ms). */
  coldStart(ms?: number): number;
  /** When the current cold start ends (epoch ms; in the past when the model is ready). */
  readyAt(): number;
  /** Aborts in-flight requests, closes all connections and stops listening. */
  close(): Promise<void>;
}

/** Starts a simulator on `opts.port` (default 0 = a free port) and resolves once it listens. */
export async function startVllmSim(opts: VllmSimOptions = {}): Promise<VllmSim> {
  const options = resolveOptions(opts);
  const sim = new Simulator(options);
  const server = createServer({ noDelay: true }, createHandler(sim));
  // Long-lived clients (a router's keep-alive pool) should not race the server's idle close.
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host === "0.0.0.0" || options.host === "::" || options.host === "" ? "127.0.0.1"
    : options.host.includes(":") ? `[${options.host}]` : options.host;
  const url = `http://${host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    baseURL: `${url}/v1`,
    port,
    models: options.models.map((m) => ({ ...m })),
    setFaults: (f) => sim.setFaults(f),
    faults: () => ({ ...sim.faults }),
    stats: () => sim.stats(),
    reset: () => sim.reset(),
    coldStart: (ms) => sim.coldStart(ms),
    readyAt: () => sim.readyAt,
    close: () => {
      closing ??= new Promise<void>((resolve, reject) => {
        sim.abortAll();
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
