// `make dev` after its NATS was restarted by hand (same command, data dir, pid file and port): the stack adopts that
// server instead of refusing to start, and stopping the stack (Ctrl-C with LUNA_STOP_STACK_ON_EXIT) stops it too.
// A NATS from another data dir on the port is still refused.
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePorts } from "@luna/kit/localstack";
import { afterAll, describe, expect, it } from "vitest";
import { devStackStatus, serverDirs, startDevStack, stopDevStack, type DevStackPorts } from "../src/index.js";

const root = mkdtempSync(join(tmpdir(), "luna-devstack-adopt-"));
chmodSync(root, 0o711); // Postgres runs as an unprivileged user when tests run as root
const handStarted: number[] = [];
afterAll(async () => {
  for (const pid of handStarted) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  await stopDevStack(join(root, "stack"));
  rmSync(root, { recursive: true, force: true });
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Runs a command by hand, outside the stack (as someone would from a terminal), and waits for its monitor port. */
async function runByHand(command: string, args: string[], monitorPort: number): Promise<number> {
  const child = spawn(command, args, { detached: true, stdio: "ignore" });
  child.unref();
  handStarted.push(child.pid!);
  await until("the hand-started nats-server", async () => {
    try {
      return (await fetch(`http://127.0.0.1:${monitorPort}/healthz`)).ok;
    } catch {
      return false;
    }
  });
  return child.pid!;
}

describe("make dev and a NATS restarted by hand", () => {
  it("adopts it (same data dir, pid file and port), and stopping the stack stops it", async () => {
    const [postgres, redis, nats, natsMonitor] = await freePorts(4);
    const ports: DevStackPorts = { postgres: postgres!, redis: redis!, nats: nats!, natsMonitor: natsMonitor! };
    const dataDir = join(root, "stack");
    const natsDir = serverDirs(dataDir).nats;
    const first = await startDevStack({ dataDir, ports, durable: false });
    const firstPid = first.nats.pid!;

    // NATS dies; someone starts it again from a terminal with the command the stack logged.
    process.kill(firstPid, "SIGKILL");
    await until("nats to die", () => !alive(firstPid));
    const logged = readFileSync(join(natsDir, "nats.log"), "utf8").split("\n").filter((l) => l.includes("starting nats: ")).at(-1)!;
    const [command, ...args] = logged.slice(logged.indexOf("starting nats: ") + "starting nats: ".length).trim().split(" ");
    const handPid = await runByHand(command!, args, ports.natsMonitor);
    await until("nats to write its pid file", () => readFileSync(join(natsDir, "nats.pid"), "utf8").trim() === String(handPid));

    // `make dev` again: adopted, not "port already in use by another process".
    const second = await startDevStack({ dataDir, ports, durable: false });
    expect(second.nats.reused).toBe(true);
    expect(second.nats.pid).toBe(handPid);
    const status = await devStackStatus(dataDir);
    expect(status.find((s) => s.kind === "nats")).toMatchObject({ running: true, healthy: true, pid: handPid });

    // Ctrl-C (LUNA_STOP_STACK_ON_EXIT, the default) stops the adopted server as well.
    await second.stop();
    await until("the adopted nats to stop", () => !alive(handPid));
    expect((await devStackStatus(dataDir)).map((s) => s.running)).toEqual([false, false, false]);

    // A nats-server of another data dir on the stack's port is not ours: refused as before.
    const otherDir = join(root, "other");
    mkdirSync(otherDir);
    const strangerPid = await runByHand(command!, args.map((a) => a.replaceAll(natsDir, otherDir)), ports.natsMonitor);
    await expect(startDevStack({ dataDir, ports, durable: false })).rejects.toThrow(/already in use by another process/);
    expect(alive(strangerPid)).toBe(true);
    process.kill(strangerPid, "SIGKILL");
  });
});
