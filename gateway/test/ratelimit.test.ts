// The rate limit descriptors the edge configuration makes Envoy send are ones billing's RateLimitService acts on:
// read from the committed config for real requests (a signed-in user on a chat RPC, an anonymous sign-in, a signed-in
// sign-in), sent over gRPC to a real billing (hosted by the kit, on the test run's Postgres, Redis and NATS), they
// pass under the limit and come back OVER_LIMIT past it. A descriptor billing cannot read never reaches a limit.
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RateLimitResponse_Code, RateLimitService } from "@luna/contracts/envoy/service/ratelimit/v3/rls_pb.js";
import { billingConfigSchema, createBillingModule } from "@luna/billing";
import { connectNats, connectRedis, createLogger, createMetrics, createServiceVerifier, ensureStreams, generateSigningKey, hostModules,
  loadConfig, type HostedModules } from "@luna/kit";
import { createTestDatabase, testServers, type TestDatabase } from "@luna/kit/testing";
import { jetstream } from "@nats-io/jetstream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JWT_FILTER, JWT_PAYLOAD_METADATA } from "../src/envoy.js";
import { descriptorsFor, httpFiltersOf, resolve, type Descriptor, type RequestFacts } from "../src/model.js";
import { committedConfig, hcmOf, type Obj } from "./helpers.js";

const MIGRATIONS = fileURLToPath(new URL("../../services/billing/prisma/migrations", import.meta.url));
// Small limits for the edge's features, set the way an operator would (BILLING_RATE_LIMITS).
const LIMITS = { roles: { user: { rates: { "edge.chat-router": { limit: 3, per: "minute" } } },
  anonymous: { rates: { signin: { limit: 2, per: "minute" } } } } };

let db: TestDatabase;
let hosted: HostedModules;
let nc: Awaited<ReturnType<typeof connectNats>>;
let redis: ReturnType<typeof connectRedis>;
let rls: ReturnType<typeof createClient<typeof RateLimitService>>;

beforeAll(async () => {
  db = await createTestDatabase({ migrationsDir: MIGRATIONS, prefix: "gateway_rl" });
  const log = createLogger({ service: "billing", level: "silent" });
  redis = connectRedis(testServers().redisUrl, { log, name: "gateway-rl-test" });
  await redis.ping();
  nc = await connectNats({ servers: testServers().natsUrl, name: "gateway-rl-test", log });
  await ensureStreams(nc);
  const config = loadConfig(billingConfigSchema, { BILLING_RATE_LIMITS: JSON.stringify(LIMITS), BILLING_DB_POOL_SIZE: "2" });
  const metrics = createMetrics({ service: "billing" });
  const mod = await createBillingModule(config, { log, metrics, redis, js: jetstream(nc), databaseUrl: db.url });
  const key = await generateSigningKey({ kid: "k" });
  const verifier = createServiceVerifier({ userIssuer: "luna-auth", audience: "luna", userKeys: { keys: async () => ({ keys: [key.publicJwk] }) },
    internalIssuer: "luna-internal", internalPublicKey: key.publicJwk });
  hosted = await hostModules({ modules: [mod], verifier, metrics, log, host: "127.0.0.1", port: 0, adminPort: 0, corsOrigins: [],
    shutdownGraceMs: 500, readiness: [] });
  // As Envoy calls it: gRPC over HTTP/2, no token (billing serves RateLimitService without one).
  rls = createClient(RateLimitService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${hosted.port}` }));
}, 120_000);

afterAll(async () => {
  await hosted?.close();
  await nc?.close();
  redis?.disconnect();
  await db?.drop();
});

const config = committedConfig();
const hcm = hcmOf(config);
const rateLimitFilter = httpFiltersOf(hcm).find((f) => f.name === "envoy.filters.http.ratelimit")!.typed_config as Obj;
const domain = rateLimitFilter.domain as string;

/** The descriptors Envoy sends for a request to `path`. */
function descriptors(path: string, req: RequestFacts): Descriptor[] {
  const r = resolve(hcm, path);
  if (r.kind !== "cluster") throw new Error(`${path} is not routed`);
  return descriptorsFor(r.route, req, JWT_FILTER, JWT_PAYLOAD_METADATA);
}

async function ask(ds: Descriptor[]): Promise<RateLimitResponse_Code> {
  const res = await rls.shouldRateLimit({ domain, descriptors: ds.map((entries) => ({ entries })) });
  return res.overallCode;
}

/** The answers to `n` identical requests in a row. */
async function answers(ds: Descriptor[], n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(RateLimitResponse_Code[await ask(ds)]!);
  return out;
}

const unique = (p: string): string => `${p}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

describe("edge rate limit descriptors against a real billing", () => {
  it("the filter asks billing's domain, as billing is configured by default", () => {
    expect(domain).toBe(loadConfig(billingConfigSchema, {}).BILLING_RATELIMIT_DOMAIN);
  });

  it("a signed-in user on a chat RPC: counted by the JWT sub under the route's feature; OVER_LIMIT past it", async () => {
    const user = unique("u");
    const ds = descriptors("/luna.chat.v1.ChatService/CreateConversation", {
      jwtPayload: { sub: user, role: "user" }, remoteAddress: "203.0.113.7", headers: { authorization: "Bearer x" } });
    expect(ds).toEqual([[{ key: "user_id", value: user }, { key: "role", value: "user" }, { key: "feature", value: "edge.chat-router" }]]);
    expect(await answers(ds, 4)).toEqual(["OK", "OK", "OK", "OVER_LIMIT"]);
    // The same user's streaming RPC on that service shares the bucket; another user does not.
    expect(await ask(descriptors("/luna.chat.v1.ChatService/SendMessage", { jwtPayload: { sub: user, role: "user" }, remoteAddress: "203.0.113.7",
      headers: { authorization: "Bearer x" } }))).toBe(RateLimitResponse_Code.OVER_LIMIT);
    const other = descriptors("/luna.chat.v1.ChatService/CreateConversation", { jwtPayload: { sub: unique("v"), role: "user" },
      remoteAddress: "203.0.113.7", headers: { authorization: "Bearer y" } });
    expect(await ask(other)).toBe(RateLimitResponse_Code.OK);
  });

  it("an anonymous sign-in: counted by client address as `anonymous` under `signin`; OVER_LIMIT past it", async () => {
    const ip = `198.51.100.${Math.floor(Math.random() * 250) + 1}-${process.pid}`;
    const ds = descriptors("/luna.auth.v1.AuthService/SignIn", { remoteAddress: ip, headers: {} });
    expect(ds).toEqual([[{ key: "role", value: "anonymous" }, { key: "remote_address", value: ip }, { key: "feature", value: "signin" }]]);
    expect(await answers(ds, 3)).toEqual(["OK", "OK", "OVER_LIMIT"]);
  });

  it("a public RPC with a token is counted for the user, not also for the address", async () => {
    const ds = descriptors("/luna.auth.v1.AuthService/SignIn", { jwtPayload: { sub: unique("w"), role: "user" }, remoteAddress: "192.0.2.1",
      headers: { authorization: "Bearer z" } });
    expect(ds).toHaveLength(1);
    expect(ds[0]!.map((e) => e.key)).toEqual(["user_id", "role", "feature"]);
  });

  it("a descriptor billing cannot read (a misspelled key) is never limited: the check above would catch it", async () => {
    const broken = committedConfig();
    const route = resolve(hcmOf(broken), "/luna.chat.v1.ChatService/CreateConversation");
    if (route.kind !== "cluster") throw new Error("not routed");
    route.route.route!.rate_limits![0]!.actions[0]!.metadata!.descriptor_key = "userid";
    const ds = descriptorsFor(route.route, { jwtPayload: { sub: unique("x"), role: "user" }, remoteAddress: "203.0.113.8", headers: {} },
      JWT_FILTER, JWT_PAYLOAD_METADATA);
    expect(await answers(ds, 5)).toEqual(["OK", "OK", "OK", "OK", "OK"]);
  });
});
