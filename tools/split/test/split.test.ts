// The split launcher with real services: each its own process on its own ports, reachable only through the dev
// gateway as clients see it; the dev bootstrap (admin, invites); and the supervision promise — when one process dies,
// every other one is stopped and the message names the one that died.
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import { findRepoRoot } from "@luna/devstack";
import { freePorts } from "@luna/kit/localstack";
import { createTestDatabase, startDedicatedNats, startDedicatedRedis, type TestDatabase } from "@luna/kit/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canConnect } from "../src/children.js";
import { startSplitPlatform, type SplitPlatform } from "../src/platform.js";
import { discoverProcesses, splitDatabases } from "../src/services.js";

const ADMIN = { email: "admin@split.test", password: "split-admin-passphrase-42" };
// The smallest useful platform: auth (JWKS, invites) and the model registry (a public and an internal service).
const SERVICES = ["auth", "model-registry"];

const dataDir = mkdtempSync(join(tmpdir(), "luna-split-"));
chmodSync(dataDir, 0o755);
const databases = new Map<string, TestDatabase>();
const lines: string[] = [];
let servers: { dispose(): Promise<void> }[] = [];
let platform: SplitPlatform;
let unexpected: string | undefined;
let unexpectedReported: () => void;
const reported = new Promise<void>((r) => (unexpectedReported = r));

beforeAll(async () => {
  const [nats, redis] = await Promise.all([startDedicatedNats(), startDedicatedRedis()]);
  servers = [nats, redis];
  for (const db of splitDatabases(discoverProcesses(findRepoRoot(), SERVICES))) {
    databases.set(db, await createTestDatabase({ prefix: `split_${db}` }));
  }
  const [api, admin, vllm, comfy] = await freePorts(4);
  platform = await startSplitPlatform({
    dataDir,
    env: { ...process.env, LUNA_PORT: String(api), LUNA_ADMIN_PORT: String(admin), LUNA_SIM_VLLM_PORT: String(vllm),
      LUNA_SIM_COMFYUI_PORT: String(comfy),
      LUNA_SPLIT_SERVICES: SERVICES.join(","), LOG_LEVEL: "warn", AUTH_ADMIN_EMAIL: ADMIN.email, AUTH_ADMIN_PASSWORD: ADMIN.password,
      LUNA_SPLIT_STOP_GRACE: "5s" },
    stack: { databaseUrl: (db) => databases.get(db)!.url, redisUrl: redis.url, natsUrl: nats.url },
    output: (name, line) => lines.push(`${name} | ${line}`),
    onUnexpectedExit: (message) => {
      unexpected = message;
      unexpectedReported();
    },
  });
}, 180_000);

afterAll(async () => {
  await platform?.stop();
  await Promise.allSettled([...databases.values()].map((d) => d.drop()));
  await Promise.allSettled(servers.map((s) => s.dispose()));
  rmSync(dataDir, { recursive: true, force: true });
});

describe("split platform (auth + model-registry as processes)", () => {
  it("runs each service as its own process on its own ports, ready", async () => {
    expect(platform.processes.map((p) => p.name)).toEqual(SERVICES);
    const pids = new Set(platform.processes.map((p) => p.pid));
    expect(pids.size).toBe(SERVICES.length);
    expect(pids.has(process.pid)).toBe(false);
    for (const p of platform.processes) {
      expect((await fetch(`http://127.0.0.1:${p.adminPort}/readyz`)).status).toBe(200);
      expect(await canConnect(p.apiPort!)).toBe(true);
    }
    const ready = await fetch(`http://127.0.0.1:${platform.adminPort}/readyz`);
    expect(ready.status).toBe(200);
    expect(((await ready.json()) as { processes: unknown[] }).processes).toHaveLength(SERVICES.length);
  });

  it("serves the public API through the gateway, and the JWKS", async () => {
    const models = createClient(ModelService, createConnectTransport({ baseUrl: platform.url, httpVersion: "1.1" }));
    const { models: list } = await models.listModels({});
    expect(list.length).toBeGreaterThan(0);
    const jwks = (await (await fetch(`${platform.url}/.well-known/jwks.json`)).json()) as { keys: unknown[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    const health = await fetch(`${platform.url}/grpc.health.v1.Health/Check`, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(await health.json()).toEqual({ status: "SERVING" });
  });

  it("keeps internal services off the gateway, though the service itself serves them to internal callers", async () => {
    const viaGateway = createClient(ModelUpstreamService, createGrpcTransport({ baseUrl: platform.url }));
    const err = await viaGateway.getCatalogSnapshot({}).catch((e: unknown) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.Unimplemented);
    const registry = platform.processes.find((p) => p.name === "model-registry")!;
    const direct = createClient(ModelUpstreamService, createGrpcTransport({ baseUrl: registry.url! }));
    const unauth = await direct.getCatalogSnapshot({}).catch((e: unknown) => ConnectError.from(e));
    expect((unauth as ConnectError).code).toBe(Code.Unauthenticated); // reachable, but only with an internal token
  });

  it("creates the first admin and invite codes (invites.txt, 0600) that sign-up accepts through the gateway", async () => {
    const file = join(dataDir, "invites.txt");
    const codes = readFileSync(file, "utf8").split("\n").filter(Boolean);
    expect(codes).toHaveLength(5);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(platform.notes.join("\n")).toContain(codes[0]!);
    const auth = createClient(AuthService, createConnectTransport({ baseUrl: platform.url, httpVersion: "1.1" }));
    const admin = await auth.signIn(ADMIN);
    expect(admin.user?.email).toBe(ADMIN.email);
    const user = await auth.signUp({ email: "first@split.test", password: "a long enough passphrase", inviteCode: codes[0]!, displayName: "First" });
    expect(user.tokens?.accessToken).toBeTruthy();
  });

  it("when a process dies, stops every other one and names the one that died", async () => {
    const victim = platform.processes.find((p) => p.name === "model-registry")!;
    const survivor = platform.processes.find((p) => p.name === "auth")!;
    process.kill(victim.pid!, "SIGKILL");
    await reported;
    expect(unexpected).toMatch(/^model-registry exited unexpectedly \(killed by SIGKILL\)/);
    // Everything is down: the other service, the gateway, the launcher's admin port.
    expect(() => process.kill(survivor.pid!, 0)).toThrow();
    expect(await canConnect(survivor.apiPort!)).toBe(false);
    expect(await canConnect(platform.port)).toBe(false);
    expect(await canConnect(platform.adminPort)).toBe(false);
  });
});
