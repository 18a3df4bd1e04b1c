import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "./log.js";
import { onShutdown, runUntilSignal } from "./server.js";

type Line = Record<string, unknown>;

function setup() {
  const lines: Line[] = [];
  const log = createLogger({ service: "test", destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const exits: number[] = [];
  let exited!: () => void;
  const exitedOnce = new Promise<void>((resolve) => { exited = resolve; });
  return { lines, log, exits, exitedOnce, exit: (code: number) => { exits.push(code); exited(); } };
}

// Signals are simulated with process.emit (listeners run, nothing is actually sent to the process).
const SIGNAL = "SIGUSR2" as NodeJS.Signals;
afterEach(() => {
  process.removeAllListeners(SIGNAL);
});

describe("runUntilSignal", () => {
  it("runs the shutdown steps in order, once, then exits 0", async () => {
    const { log, exits, exit, exitedOnce } = setup();
    const order: string[] = [];
    runUntilSignal({
      log, exit, signals: [SIGNAL],
      shutdown: [
        { name: "stop server", run: async () => { await new Promise((r) => setTimeout(r, 10)); order.push("server"); } },
        async function drainNats() { order.push("nats"); },
        () => { order.push("telemetry"); },
      ],
    });
    process.emit(SIGNAL, SIGNAL);
    await exitedOnce;
    expect(order).toEqual(["server", "nats", "telemetry"]);
    expect(exits).toEqual([0]);
  });

  it("continues after a failing or hanging step and exits 1", async () => {
    const { log, lines, exits, exit, exitedOnce } = setup();
    const order: string[] = [];
    runUntilSignal({
      log, exit, signals: [SIGNAL], stepTimeoutMs: 50,
      shutdown: [
        { name: "broken", run: async () => { throw new Error("prisma disconnect failed"); } },
        { name: "hangs", run: () => new Promise(() => {}) },
        { name: "last", run: () => { order.push("last"); } },
      ],
    });
    process.emit(SIGNAL, SIGNAL);
    await exitedOnce;
    expect(order).toEqual(["last"]);
    expect(exits).toEqual([1]);
    expect(lines.filter((l) => l.msg === "shutdown step failed").map((l) => l.step)).toEqual(["broken", "hangs"]);
  });

  it("gives a step with its own timeoutMs that long instead of the run's step timeout (a drain)", async () => {
    const { log, exits, exit, exitedOnce } = setup();
    const order: string[] = [];
    runUntilSignal({
      log, exit, signals: [SIGNAL], stepTimeoutMs: 50,
      shutdown: [{ name: "drain", timeoutMs: 2000, run: async () => { await new Promise((r) => setTimeout(r, 200)); order.push("drained"); } }],
    });
    process.emit(SIGNAL, SIGNAL);
    await exitedOnce;
    expect(order).toEqual(["drained"]);
    expect(exits).toEqual([0]);
  });

  it("exits at once with 1 on a second signal", async () => {
    const { log, exits, exit } = setup();
    runUntilSignal({ log, exit, signals: [SIGNAL], shutdown: [{ name: "slow", run: () => new Promise(() => {}) }] });
    process.emit(SIGNAL, SIGNAL);
    await new Promise((r) => setTimeout(r, 10));
    expect(exits).toEqual([]);
    process.emit(SIGNAL, SIGNAL);
    expect(exits).toEqual([1]);
  });

  it("can be triggered from code and runs hooks registered with onShutdown last", async () => {
    const { log, exits, exit } = setup();
    const order: string[] = [];
    onShutdown(async () => { order.push("hook"); }, "hook");
    const handle = runUntilSignal({ log, exit, signals: [SIGNAL], shutdown: [() => { order.push("step"); }] });
    await Promise.all([handle.shutdown("fatal error"), handle.shutdown("again")]);
    expect(order).toEqual(["step", "hook"]);
    expect(exits).toEqual([0]);
  });
});
