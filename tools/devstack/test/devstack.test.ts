import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePorts } from "@luna/kit/localstack";
import { createTestDatabase, testServers } from "@luna/kit/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CliIo } from "../src/cli-io.js";
import { runDevStackCli } from "../src/commands.js";
import { runMigrateCli } from "../src/migrate-command.js";
import { createDatabases, DEFAULT_PORTS, devStackConfig, devStackStatus, findRepoRoot, startDevStack, stopDevStack } from "../src/index.js";

const repoRoot = resolve(import.meta.dirname, "../../..");
const root = mkdtempSync(join(tmpdir(), "luna-devstack-test-"));
chmodSync(root, 0o711); // Postgres runs as an unprivileged user when tests run as root
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Captures a CLI's output lines. */
function capture(env: NodeJS.ProcessEnv = {}): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { env, stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l) };
}

/** Runs a CLI entry point as its own process, the way `make dev` and container images do. */
function runScript(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--conditions=luna-source", join(repoRoot, "tools/devstack/src", script), ...args], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, output }));
  });
}

describe("devStackConfig", () => {
  it("uses the documented defaults under <repo>/.luna", () => {
    expect(devStackConfig({}, "/repo")).toEqual({ dataDir: "/repo/.luna", ports: DEFAULT_PORTS });
    expect(DEFAULT_PORTS).toEqual({ postgres: 54329, redis: 63799, nats: 42229, natsMonitor: 8229 });
    expect(findRepoRoot()).toBe(repoRoot);
  });

  it("takes ports and the data dir from the environment", () => {
    const config = devStackConfig(
      { LUNA_DATA_DIR: "/data/luna", LUNA_PG_PORT: "1111", LUNA_REDIS_PORT: "2222", LUNA_NATS_PORT: "3333", LUNA_NATS_MONITOR_PORT: "4444" },
      "/repo",
    );
    expect(config).toEqual({ dataDir: "/data/luna", ports: { postgres: 1111, redis: 2222, nats: 3333, natsMonitor: 4444 } });
  });

  it("names a bad variable", () => {
    expect(() => devStackConfig({ LUNA_REDIS_PORT: "63a" }, "/repo")).toThrow(/LUNA_REDIS_PORT must be a port number/);
    expect(() => devStackConfig({ LUNA_PG_PORT: "70000" }, "/repo")).toThrow(/LUNA_PG_PORT/);
    expect(() => devStackConfig({ LUNA_NATS_PORT: String(DEFAULT_PORTS.redis) }, "/repo")).toThrow(/redis and nats ports are both 63799/);
  });
});

describe("luna-devstack", () => {
  let env: NodeJS.ProcessEnv;
  let dataDir: string;
  let ports: number[];
  beforeAll(async () => {
    dataDir = join(root, "stack");
    ports = await freePorts(4);
    env = {
      LUNA_DATA_DIR: dataDir,
      LUNA_PG_PORT: String(ports[0]),
      LUNA_REDIS_PORT: String(ports[1]),
      LUNA_NATS_PORT: String(ports[2]),
      LUNA_NATS_MONITOR_PORT: String(ports[3]),
    };
  });
  afterAll(async () => {
    await stopDevStack(dataDir); // never leave servers behind, whatever failed above
  });

  it("up starts servers that outlive it, a second up finds them running, down stops them", async () => {
    const up = await runScript("cli.ts", ["up"], env);
    expect(up.code, up.output).toBe(0);
    expect(up.output).toContain(`postgresql://luna@127.0.0.1:${ports[0]}/<database>`);
    expect(up.output).toContain(`redis://127.0.0.1:${ports[1]}`);
    expect(up.output).toContain(`nats://127.0.0.1:${ports[2]}`);
    expect(up.output).toContain(`http://127.0.0.1:${ports[3]}`);

    // The CLI process has exited; the servers still answer.
    const status = capture(env);
    expect(await runDevStackCli(["status"], status)).toBe(0);
    expect(status.stdout).toHaveLength(3);
    for (const line of status.stdout) expect(line).toMatch(/ running {2}pid \d+, port \d+/);

    const again = await runScript("cli.ts", ["up"], env);
    expect(again.code, again.output).toBe(0);
    expect(again.output.match(/already running/g)).toHaveLength(3);

    const url = capture(env);
    expect(await runDevStackCli(["url"], url)).toBe(0);
    expect(url.stdout).toEqual([
      `DATABASE_URL_BASE=postgresql://luna@127.0.0.1:${ports[0]}`,
      `REDIS_URL=redis://127.0.0.1:${ports[1]}`,
      `NATS_URL=nats://127.0.0.1:${ports[2]}`,
      `NATS_MONITOR_URL=http://127.0.0.1:${ports[3]}`,
    ]);

    const down = capture(env);
    expect(await runDevStackCli(["down"], down)).toBe(0);
    expect(down.stdout).toEqual(["Postgres: stopped", "Redis: stopped", "NATS: stopped"]);
    expect((await devStackStatus(dataDir)).map((s) => s.running)).toEqual([false, false, false]);
    const status2 = capture(env);
    expect(await runDevStackCli(["status"], status2)).toBe(1);
    const downAgain = capture(env);
    await runDevStackCli(["down"], downAgain);
    expect(downAgain.stdout).toEqual(["Postgres: was not running", "Redis: was not running", "NATS: was not running"]);
  });

  it("explains bad usage and bad configuration", async () => {
    const io = capture(env);
    expect(await runDevStackCli(["sideways"], io)).toBe(2);
    expect(io.stderr.join("\n")).toMatch(/unknown command "sideways"[\s\S]*usage: luna-devstack/);
    const bad = capture({ ...env, LUNA_PG_PORT: "nope" });
    expect(await runDevStackCli(["up"], bad)).toBe(2);
    expect(bad.stderr.join("\n")).toMatch(/LUNA_PG_PORT must be a port number/);
  });
});

describe("startDevStack", () => {
  it("starts the stack as a library and creates missing databases", async () => {
    const [pgPort, redisPort, natsPort, monitorPort] = await freePorts(4);
    const stack = await startDevStack({
      dataDir: join(root, "lib"),
      ports: { postgres: pgPort!, redis: redisPort!, nats: natsPort!, natsMonitor: monitorPort! },
      keepRunning: false,
      durable: false,
    });
    try {
      expect(stack.urls.databaseUrlBase).toBe(`postgresql://luna@127.0.0.1:${pgPort}`);
      expect(await stack.createDatabases(["auth", "billing"])).toEqual(["auth", "billing"]);
      expect(await stack.createDatabases(["auth", "chat_router"])).toEqual(["chat_router"]);
      await expect(stack.createDatabases(["Bad-Name"])).rejects.toThrow(/invalid database name/);
      const client = new pg.Client({ connectionString: stack.postgres.url("billing") });
      await client.connect();
      await client.end();
    } finally {
      await stack.stop();
    }
    expect((await devStackStatus(join(root, "lib"))).some((s) => s.running)).toBe(false);
  });

  it("createDatabases works against any server with url()", async () => {
    const name = `devstack_${process.pid}_${Date.now()}`;
    const server = { url: (db: string) => testServers().postgresUrl(db) };
    try {
      expect(await createDatabases(server, [name])).toEqual([name]);
      expect(await createDatabases(server, [name])).toEqual([]);
    } finally {
      const client = new pg.Client({ connectionString: server.url("postgres") });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS "${name}"`);
      await client.end();
    }
  });
});

describe("luna-migrate", () => {
  let migrations: string;
  beforeAll(() => {
    migrations = join(root, "migrations");
    mkdirSync(join(migrations, "20250101000000_init"), { recursive: true });
    writeFileSync(join(migrations, "20250101000000_init", "migration.sql"), "CREATE TABLE accounts (id int PRIMARY KEY);\n");
  });

  it("applies migrations from the command line and is idempotent", async () => {
    const db = await createTestDatabase();
    try {
      const first = await runScript("migrate-cli.ts", ["--database-url", db.url, "--dir", migrations], {});
      expect(first.code, first.output).toBe(0);
      expect(first.output).toContain("applying 20250101000000_init");
      const second = capture({ DATABASE_URL: db.url });
      expect(await runMigrateCli(["--dir", migrations], second)).toBe(0);
      expect(second.stdout.join("\n")).toContain("no pending migrations");
    } finally {
      await db.drop();
    }
  });

  it("exits 1 with the reason when a migration fails, and --mark-rolled-back lets it retry", async () => {
    const db = await createTestDatabase();
    const broken = join(root, "broken");
    mkdirSync(join(broken, "20250101000000_init"), { recursive: true });
    writeFileSync(join(broken, "20250101000000_init", "migration.sql"), "CREATE TABLE oops (;\n");
    try {
      const failed = capture();
      expect(await runMigrateCli(["--database-url", db.url, "--dir", broken], failed)).toBe(1);
      expect(failed.stderr.join("\n")).toMatch(/20250101000000_init failed[\s\S]*42601/);
      writeFileSync(join(broken, "20250101000000_init", "migration.sql"), "CREATE TABLE oops (id int);\n");
      const refused = capture();
      expect(await runMigrateCli(["--database-url", db.url, "--dir", broken], refused)).toBe(1);
      expect(refused.stderr.join("\n")).toMatch(/found failed migrations/);
      const mark = capture();
      expect(await runMigrateCli(["--database-url", db.url, "--mark-rolled-back", "20250101000000_init"], mark)).toBe(0);
      const retry = capture();
      expect(await runMigrateCli(["--database-url", db.url, "--dir", broken], retry)).toBe(0);
      expect(retry.stdout.join("\n")).toContain("applied 1 migration(s)");
    } finally {
      await db.drop();
    }
  });

  it("exits 2 on bad usage", async () => {
    const noUrl = capture();
    expect(await runMigrateCli(["--dir", migrations], noUrl)).toBe(2);
    expect(noUrl.stderr.join("\n")).toMatch(/--database-url \(or DATABASE_URL\) is required/);
    const unknown = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y", "--bogus"], unknown)).toBe(2);
    const noDir = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y"], noDir)).toBe(2);
    expect(noDir.stderr.join("\n")).toMatch(/--dir is required/);
    const badTimeout = capture();
    expect(await runMigrateCli(["--database-url", "postgresql://x/y", "--dir", migrations, "--lock-timeout-ms", "soon"], badTimeout)).toBe(2);
  });
});
