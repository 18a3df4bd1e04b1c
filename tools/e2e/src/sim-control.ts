// The inference simulators driven over their HTTP control routes (`/_sim/faults`, `/_sim/stats`, `/_sim/reset`: see
// tools/sim-vllm/src/server.ts and tools/sim-comfyui/src/server.ts), so the scenario controls a simulator it did not
// start — in this process, in another one, or in a pod behind `kubectl port-forward` — the same way.
import type { Faults as VllmFaults, SimStats as VllmStats } from "@luna/sim-vllm";
import type { SimFaults as ComfyFaults, SimStats as ComfyStats } from "@luna/sim-comfyui";

/** What the scenario needs of a simulator: its faults and counters. */
export interface SimControl<F, S> {
  /** Root URL of the simulator (its control routes live under `/_sim/`). */
  readonly url: string;
  /**
   * Changes the faults in force and returns them: the vLLM simulator merges the fields given over the current set,
   * the ComfyUI simulator replaces the set (`{}` clears it) — as their `setFaults` in process.
   */
  setFaults(faults: Partial<F>): Promise<F>;
  faults(): Promise<F>;
  stats(): Promise<S>;
  /** Zeroes the counters and restores the faults the simulator started with (and its configured cold start). */
  reset(): Promise<void>;
}

export interface VllmControl extends SimControl<VllmFaults, VllmStats> {
  /** The model names the simulator serves (`GET /v1/models`), i.e. the catalog ids it answers for. */
  servedModels(): Promise<string[]>;
}

export type ComfyControl = SimControl<ComfyFaults, ComfyStats>;

/** Deadline of one control request: a simulator answers them at once, so a slow one is a wrong URL or a dead pod. */
const CONTROL_TIMEOUT_MS = 5_000;

async function call(what: string, base: string, method: "GET" | "POST", path: string, body?: unknown): Promise<unknown> {
  const url = new URL(path, base.endsWith("/") ? base : `${base}/`).toString();
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(CONTROL_TIMEOUT_MS),
    });
  } catch (err) {
    const cause = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    throw new Error(`${what} at ${base}: ${method} ${path} failed: ${cause}`);
  }
  const text = await res.text();
  if (!res.ok) throw new Error(`${what} at ${base}: ${method} ${path} answered HTTP ${res.status}: ${text.slice(0, 200)}`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new Error(`${what} at ${base}: ${method} ${path} answered something that is not JSON (is this the simulator?): ${text.slice(0, 120)}`);
  }
}

function simControl<F, S>(what: string, url: string): SimControl<F, S> {
  return {
    url,
    setFaults: async (faults) => (await call(what, url, "POST", "_sim/faults", faults)) as F,
    faults: async () => (await call(what, url, "GET", "_sim/faults")) as F,
    stats: async () => (await call(what, url, "GET", "_sim/stats")) as S,
    reset: async () => {
      await call(what, url, "POST", "_sim/reset", {});
    },
  };
}

/** The vLLM simulator at `url` (its root, e.g. `http://127.0.0.1:8000`). */
export function vllmControl(url: string): VllmControl {
  const what = "the vLLM simulator";
  return {
    ...simControl<VllmFaults, VllmStats>(what, url),
    servedModels: async () => {
      const body = (await call(what, url, "GET", "v1/models")) as { data?: Array<{ id?: unknown }> };
      return (body.data ?? []).map((m) => String(m.id));
    },
  };
}

/** The ComfyUI simulator at `url` (its root, e.g. `http://127.0.0.1:8188`). */
export function comfyControl(url: string): ComfyControl {
  return simControl<ComfyFaults, ComfyStats>("the ComfyUI simulator", url);
}

/**
 * Checks that `control` is the control endpoint of the simulator meant (its `GET /_sim/stats` answers a JSON object
 * holding `field`: `requests` for vLLM's, `executions` for ComfyUI's), so a wrong URL fails at once with a message
 * naming the setting instead of deep inside the scenario.
 */
export async function checkSimControl<F, S>(control: SimControl<F, S>, setting: string, field: string): Promise<void> {
  let stats: unknown;
  try {
    stats = await control.stats();
  } catch (err) {
    throw new Error(`${setting}=${control.url} is not a simulator's control endpoint: ${(err as Error).message}`);
  }
  if (typeof stats !== "object" || stats === null || !(field in stats)) {
    throw new Error(`${setting}=${control.url} is not the right simulator: GET /_sim/stats has no "${field}" (got ${JSON.stringify(stats).slice(0, 120)})`);
  }
}
