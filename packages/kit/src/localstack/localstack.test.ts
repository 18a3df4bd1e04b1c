import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, chmodSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import {
  findRunningServer,
  findServerBinaries,
  pingRedis,
  planInstall,
  startPostgres,
  startRedis,
  stopServerInDir,
  type InstallEnvironment,
} from "./index.js";

const root = mkdtempSync(join(tmpdir(), "luna-localstack-test-"));
chmodSync(root, 0o711); // Postgres runs as an unprivileged user when tests run as root
afterAll(() => rmSync(root, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, timeoutMs = 5_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < deadline) await sleep(50);
  return !alive(pid);
}

describe("planInstall", () => {
  const linuxRoot: InstallEnvironment = { platform: "linux", isRoot: true, hasAptGet: true, hasSudo: false, hasBrew: false };

  it("installs only what is missing with apt-get as root, or through passwordless sudo", () => {
    expect(planInstall([], linuxRoot)).toEqual({ kind: "none" });
    expect(planInstall(["redis", "nats"], linuxRoot)).toEqual({ kind: "apt", sudo: false, packages: ["redis-server", "nats-server"] });
    expect(planInstall(["postgres"], { ...linuxRoot, isRoot: false, hasSudo: true })).toEqual({ kind: "apt", sudo: true, packages: ["postgresql"] });
  });

  it("uses Homebrew on macOS", () => {
    expect(planInstall(["postgres", "redis", "nats"], { platform: "darwin", isRoot: false, hasAptGet: false, hasSudo: false, hasBrew: true }))
      .toEqual({ kind: "brew", packages: ["postgresql@16", "redis", "nats-server"] });
  });

  it("names what to install when it cannot install", () => {
    const noPermission = planInstall(["nats"], { ...linuxRoot, isRoot: false });
    expect(noPermission.kind).toBe("impossible");
    expect(noPermission.kind === "impossible" && noPermission.message).toMatch(/nats-server[\s\S]*apt-get install -y nats-server[\s\S]*no passwordless sudo/);
    const elsewhere = planInstall(["postgres"], { platform: "freebsd", isRoot: true, hasAptGet: false, hasSudo: false, hasBrew: false });
    expect(elsewhere.kind === "impossible" && elsewhere.message).toMatch(/PostgreSQL server.*brew install postgresql@16/);
  });
});

describe("findServerBinaries", () => {
  it("finds the servers installed on this machine", () => {
    // The global setup already ensured them, so nothing may be missing here.
    expect(findServerBinaries().missing).toEqual([]);
  });
});

describe("startPostgres", () => {
  it("starts, restarts on the same port keeping data, adopts a running server, and stops", async () => {
    const dataDir = join(root, "pg");
    const server = await startPostgres({ dataDir });
    const run = async (sql: string) => {
      const client = new pg.Client({ connectionString: server.url("postgres") });
      await client.connect();
      try {
        return (await client.query(sql)).rows;
      } finally {
        await client.end();
      }
    };
    try {
      expect(server.url("app")).toBe(`postgresql://luna@127.0.0.1:${server.port}/app`);
      await run("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)");
      expect(await run("SHOW max_connections")).toEqual([{ max_connections: "300" }]);
      expect(await run("SHOW fsync")).toEqual([{ fsync: "off" }]);
      const { port, pid: firstPid } = server;
      await server.restart();
      expect(server.port).toBe(port);
      expect(server.pid).not.toBe(firstPid);
      expect(await waitGone(firstPid!)).toBe(true);
      expect(await run("SELECT v FROM kept")).toEqual([{ v: 42 }]);

      // A second start from the same data dir (a second `make dev`) adopts the running server.
      const again = await startPostgres({ dataDir });
      expect(again.reused).toBe(true);
      expect(again.pid).toBe(server.pid);
      expect(again.port).toBe(port);
      await expect(startPostgres({ dataDir, port: port + 1 })).rejects.toThrow(/already running .* on port \d+, not the requested/);
    } finally {
      const pid = server.pid!;
      await server.stop();
      expect(alive(pid)).toBe(false);
    }
    expect(findRunningServer(dataDir, "postgres")).toBeUndefined();
    await server.stop(); // idempotent
  });

  it("fails with the server's log when it cannot start", async () => {
    await expect(startPostgres({ dataDir: join(root, "pg-bad"), settings: { max_connections: "lots" } }))
      .rejects.toThrow(/postgres exited before it was ready[\s\S]*max_connections/);
  });
});

describe("startRedis", () => {
  it("answers PING, refuses a port in use, and stopServerInDir stops a server it did not start", async () => {
    const dataDir = join(root, "redis");
    const server = await startRedis({ dataDir });
    try {
      await pingRedis(server.port);
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      await expect(startRedis({ dataDir: join(root, "redis-2"), port: server.port })).rejects.toThrow(/port \d+ on 127.0.0.1 is already in use/);
      const pid = server.pid!;
      expect(await stopServerInDir(dataDir, "redis")).toBe(true);
      expect(await waitGone(pid)).toBe(true);
      expect(await stopServerInDir(dataDir, "redis")).toBe(false);
    } finally {
      await server.stop();
    }
  });
});

describe("process lifetime", () => {
  it("a server not kept running dies with the process that started it, even on SIGKILL", async () => {
    const dataDir = join(root, "orphan");
    const script = `
      import { startRedis } from ${JSON.stringify(join(import.meta.dirname, "index.ts"))};
      const s = await startRedis({ dataDir: ${JSON.stringify(dataDir)} });
      console.log("PID " + s.pid);
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    const serverPid = await new Promise<number>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        const m = /PID (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.once("exit", (code) => reject(new Error(`child exited early (${code}): ${out}`)));
    });
    expect(alive(serverPid)).toBe(true);
    child.kill("SIGKILL");
    expect(await waitGone(serverPid)).toBe(true);
  });

  it("frees the port after stop so restart can bind it again", async () => {
    const server = await startRedis({ dataDir: join(root, "redis-port") });
    await server.stop();
    const probe = net.createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(server.port, "127.0.0.1", () => resolve());
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    await server.restart();
    await pingRedis(server.port);
    await server.stop();
    expect(existsSync(join(root, "redis-port", "luna-server.json"))).toBe(false);
  });
});
