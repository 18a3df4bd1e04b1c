import { create } from "@bufbuild/protobuf";
import { ModelUpstreamSchema } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { CatalogChange } from "@luna/kit";
import { afterEach, describe, expect, it } from "vitest";
import { WakeGate, type WaitResult } from "./wake.js";

const silent = { info: () => undefined, debug: () => undefined };

/** A replica whose /health answers `status` (503 while "loading"), counting the probes. */
function setup() {
  const state = { status: 503, probes: 0, ready: false, marked: [] as string[] };
  const listeners = new Set<(c: CatalogChange) => void>();
  const upstream = create(ModelUpstreamSchema, { modelId: "m", baseUrls: ["http://r1:8000"] });
  const gate = new WakeGate({
    pool: {
      hasReady: async () => state.ready,
      markReady: (_id, urls) => void state.marked.push(...urls),
    },
    catalog: { upstreams: (id) => (id === "m" ? upstream : undefined), onChange: (fn) => (listeners.add(fn), () => listeners.delete(fn)) },
    probeIntervalMs: 20,
    probeTimeoutMs: 200,
    readSecret: () => undefined,
    fetch: (async () => {
      state.probes++;
      return new Response(null, { status: state.status });
    }) as typeof fetch,
    log: silent,
  });
  return { gate, state, change: () => listeners.forEach((l) => l({ kind: "model", id: "m" })) };
}

let gates: WakeGate[] = [];
afterEach(() => {
  for (const g of gates) g.close();
  gates = [];
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("WakeGate", () => {
  it("probes only while someone waits, and releases every waiter, oldest first, on the first healthy answer", async () => {
    const { gate, state } = setup();
    gates.push(gate);
    await sleep(60);
    expect(state.probes).toBe(0);
    const order: number[] = [];
    const told: number[] = [];
    const waits = [0, 1, 2].map((i) => gate.wait("m", { signal: new AbortController().signal, timeoutMs: 5000, onWaiting: () => told.push(i) })
      .then((r) => (order.push(i), r)));
    await sleep(80);
    expect(told.sort()).toEqual([0, 1, 2]); // each told once that the wait is real
    expect(gate.waitingCounts().get("m")).toBe(3);
    state.status = 200;
    expect(await Promise.all(waits)).toEqual(["ready", "ready", "ready"]);
    expect(order).toEqual([0, 1, 2]);
    expect(state.marked).toEqual(["http://r1:8000"]);
    const after = state.probes;
    await sleep(80);
    expect(state.probes).toBe(after);
    expect(gate.waitingCounts().size).toBe(0);
  });

  it("ends a wait on abort or timeout without disturbing the others", async () => {
    const { gate } = setup();
    gates.push(gate);
    const ac = new AbortController();
    const aborted = gate.wait("m", { signal: ac.signal, timeoutMs: 5000, onWaiting: () => undefined });
    const timedOut = gate.wait("m", { signal: new AbortController().signal, timeoutMs: 100, onWaiting: () => undefined });
    const stays = gate.wait("m", { signal: new AbortController().signal, timeoutMs: 5000, onWaiting: () => undefined });
    ac.abort();
    expect(await aborted).toBe("aborted");
    expect(await timedOut).toBe("timeout");
    expect(gate.waitingCounts().get("m")).toBe(1);
    gate.close();
    expect(await stays).toBe<WaitResult>("aborted");
  });

  it("releases the waiters when the catalog brings a ready replica first", async () => {
    const { gate, state, change } = setup();
    gates.push(gate);
    const w = gate.wait("m", { signal: new AbortController().signal, timeoutMs: 5000, onWaiting: () => undefined });
    await sleep(50);
    state.ready = true;
    change();
    expect(await w).toBe("ready");
    expect(state.marked).toEqual([]);
  });
});
