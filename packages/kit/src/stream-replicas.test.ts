// LUNA_NATS_STREAM_REPLICAS against a real 3-server JetStream cluster: the streams that carry money and jobs are
// replicated when the configuration says so, and a process starting with the same configuration leaves them so
// (before the setting, every start set them back to one replica).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";
import { freePorts } from "./localstack/managed.js";
import { which } from "./localstack/binaries.js";
import { ensureStreams } from "./nats.js";
import { runtimeConfigSchema, streamsFor } from "./service.js";

describe("LUNA_NATS_STREAM_REPLICAS", () => {
  it("defaults to 1 and refuses values outside 1..5 by name", () => {
    expect(loadConfig(runtimeConfigSchema, {}).LUNA_NATS_STREAM_REPLICAS).toBe(1);
    expect(loadConfig(runtimeConfigSchema, { LUNA_NATS_STREAM_REPLICAS: "3" }).LUNA_NATS_STREAM_REPLICAS).toBe(3);
    for (const bad of ["0", "6", "two", "1.5"]) {
      expect(() => loadConfig(runtimeConfigSchema, { LUNA_NATS_STREAM_REPLICAS: bad }), bad).toThrow(/LUNA_NATS_STREAM_REPLICAS/);
    }
  });

  it("sets every stream's replicas", () => {
    const specs = streamsFor(loadConfig(runtimeConfigSchema, { LUNA_NATS_STREAM_REPLICAS: "3" }));
    expect(specs.map((s) => [s.name, s.replicas])).toEqual([["LUNA_EVENTS", 3], ["LUNA_IMAGE_JOBS", 3], ["LUNA_DEADLETTER", 3]]);
  });
});

describe("streams on a 3-server JetStream cluster", () => {
  const root = mkdtempSync(join(tmpdir(), "luna-nats-cluster-"));
  const servers: ChildProcess[] = [];
  let nc: NatsConnection | undefined;

  beforeAll(async () => {
    const binary = which("nats-server");
    if (!binary) throw new Error("nats-server not found (the test set-up installs it)");
    const ports = await freePorts(6);
    const clientPorts = ports.slice(0, 3);
    const routePorts = ports.slice(3);
    const routes = routePorts.map((p) => `nats://127.0.0.1:${p}`).join(",");
    for (let i = 0; i < 3; i++) {
      servers.push(spawn(binary, ["-a", "127.0.0.1", "-p", String(clientPorts[i]), "-js", "-sd", join(root, `n${i}`),
        "-n", `n${i}`, "--cluster_name", "luna", "--cluster", `nats://127.0.0.1:${routePorts[i]}`, "--routes", routes],
      { stdio: "ignore" }));
    }
    nc = await connect({ servers: clientPorts.map((p) => `nats://127.0.0.1:${p}`), waitOnFirstConnect: true, maxReconnectAttempts: -1 });
    // The cluster answers JetStream calls once it has elected a meta leader.
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await (await jetstreamManager(nc)).getAccountInfo();
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }, 60_000);

  afterAll(async () => {
    await nc?.close();
    for (const s of servers) s.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  });

  async function replicas(): Promise<Record<string, number>> {
    const jsm = await jetstreamManager(nc!);
    const out: Record<string, number> = {};
    for (const name of ["LUNA_EVENTS", "LUNA_IMAGE_JOBS", "LUNA_DEADLETTER"]) out[name] = (await jsm.streams.info(name)).config.num_replicas;
    return out;
  }

  it("creates the streams with the configured replicas, and a second start keeps them", async () => {
    const config = loadConfig(runtimeConfigSchema, { LUNA_NATS_STREAM_REPLICAS: "3" });
    await ensureStreams(nc!, streamsFor(config));
    expect(await replicas()).toEqual({ LUNA_EVENTS: 3, LUNA_IMAGE_JOBS: 3, LUNA_DEADLETTER: 3 });
    await ensureStreams(nc!, streamsFor(config));
    expect(await replicas()).toEqual({ LUNA_EVENTS: 3, LUNA_IMAGE_JOBS: 3, LUNA_DEADLETTER: 3 });
  }, 60_000);
});
