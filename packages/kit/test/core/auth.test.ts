// The JWT rejection suite (RELIABILITY.md) against authInterceptor through a real server, with the verifier fetching
// the JWKS over HTTP from the same server's extraHttp route, as services fetch auth's /.well-known/jwks.json.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { ConnectRouter, HandlerContext, Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { base64url, exportSPKI, SignJWT } from "jose";
import type { JSONWebKeySet } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  authInterceptor, createInternalTokenMinter, createJwtVerifier, generateSigningKey, internalCallInterceptor, principalKey,
  toJwks,
} from "../../src/auth.js";
import type { MethodRules, SigningKey } from "../../src/auth.js";
import { healthAuthRules } from "../../src/health.js";
import { startTestServer } from "./helpers.js";
import type { TestServer } from "./helpers.js";

const ISS = "https://auth.luna.test";
const AUD = "luna";

/** Health with each method reporting the principal it saw in the x-principal response header. */
function routes(router: ConnectRouter): void {
  const who = (ctx: HandlerContext) => {
    const p = ctx.values.get(principalKey);
    ctx.responseHeader.set("x-principal", p ? `${p.userId}:${p.role}` : "anonymous");
  };
  router.service(Health, {
    check(_req, ctx) {
      who(ctx);
      return create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
    list(_req, ctx) {
      who(ctx);
      return create(HealthListResponseSchema, {});
    },
    async *watch(_req, ctx) {
      who(ctx);
      yield create(HealthCheckResponseSchema, { status: Status.SERVING });
    },
  });
}

let keyA: SigningKey;
let keyB: SigningKey;
let jwks: JSONWebKeySet;
let jwksFetches = 0;
let srv: TestServer;
let internalSrv: TestServer;

async function serve(rules: MethodRules, jwksCooldownMs: number): Promise<TestServer> {
  // The verifier needs the server's URL (its JWKS route), known only after listen: bind the interceptor late.
  const late: { auth?: Interceptor } = {};
  const server = await startTestServer({
    routes,
    interceptors: [(next) => (req) => late.auth!(next)(req)],
    extraHttp(req, res) {
      if (req.url !== "/.well-known/jwks.json") return false;
      jwksFetches++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(jwks));
      return true;
    },
  });
  const verifier = createJwtVerifier({ jwksUrl: `${server.baseUrl}/.well-known/jwks.json`, issuer: ISS, audience: AUD, jwksCooldownMs });
  late.auth = authInterceptor({ verifier, rules });
  return server;
}

beforeAll(async () => {
  keyA = await generateSigningKey();
  keyB = await generateSigningKey();
  jwks = toJwks(keyA);
  srv = await serve({
    "grpc.health.v1.Health": "user", // service default: Watch
    "grpc.health.v1.Health/Check": "public",
    "grpc.health.v1.Health/List": "admin",
  }, 0);
  internalSrv = await serve({ "grpc.health.v1.Health": "internal" }, 0);
});
afterAll(async () => {
  await srv.server.close();
  await internalSrv.server.close();
});

type Claims = Record<string, unknown>;
const now = () => Math.floor(Date.now() / 1000);
const validClaims = (): Claims => ({ iss: ISS, aud: AUD, sub: "user-1", role: "user", jti: crypto.randomUUID(),
  token_use: "access", iat: now(), exp: now() + 300 });

function sign(claims: Claims, key: SigningKey = keyA, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.kid, ...header }).sign(key.privateKey);
}
const tokenFor = (role: string, extra: Claims = {}) => sign({ ...validClaims(), role, ...extra });

async function call(method: "check" | "list" | "watch", token?: string, server: TestServer = srv) {
  const client = createClient(Health, createGrpcTransport({ baseUrl: server.baseUrl }));
  let principal: string | null = null;
  const opts = { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, onHeader: (h: Headers) => { principal = h.get("x-principal"); } };
  try {
    if (method === "watch") {
      for await (const _ of client.watch({}, opts)) { /* drain */ }
    } else if (method === "list") {
      await client.list({}, opts);
    } else {
      await client.check({}, opts);
    }
    return { code: undefined as Code | undefined, principal, message: "" };
  } catch (e) {
    const err = ConnectError.from(e);
    return { code: err.code as Code | undefined, principal, message: err.rawMessage };
  }
}

describe("JWT rejection suite: every forged or unusable token is UNAUTHENTICATED", () => {
  const cases: Array<[string, () => Promise<string>]> = [
    ["alg: none", async () => {
      const header = base64url.encode(JSON.stringify({ alg: "none", typ: "JWT", kid: keyA.kid }));
      const payload = base64url.encode(JSON.stringify({ ...validClaims(), role: "admin" }));
      return `${header}.${payload}.`;
    }],
    ["HS256 signed with the public key as the secret", async () => {
      const secret = new TextEncoder().encode(await exportSPKI(keyA.publicKey));
      return new SignJWT(validClaims()).setProtectedHeader({ alg: "HS256", kid: keyA.kid }).sign(secret);
    }],
    ["unknown kid", async () => sign(validClaims(), { ...keyB, kid: "kid-nobody-published" })],
    ["tampered payload (role raised to admin, signature kept)", async () => {
      const [h, , s] = (await tokenFor("user")).split(".");
      return `${h}.${base64url.encode(JSON.stringify({ ...validClaims(), role: "admin" }))}.${s}`;
    }],
    ["expired", async () => tokenFor("user", { iat: now() - 600, exp: now() - 300 })],
    ["not yet valid (future nbf)", async () => tokenFor("user", { nbf: now() + 300 })],
    ["wrong audience", async () => tokenFor("user", { aud: "someone-else" })],
    ["wrong issuer", async () => tokenFor("user", { iss: "https://evil.test" })],
    ["refresh token used as an access token", async () => tokenFor("user", { token_use: "refresh" })],
    ["no token type claim", async () => tokenFor("user", { token_use: undefined })],
    ["missing role", async () => tokenFor("user", { role: undefined })],
    ["unknown role", async () => tokenFor("superuser")],
    ["garbage", async () => "not-a-jwt"],
  ];

  for (const [name, make] of cases) {
    it(`rejects ${name}`, async () => {
      const token = await make();
      expect(await call("watch", token)).toMatchObject({ code: Code.Unauthenticated });
      // also on a public method: an invalid token is rejected, not ignored
      expect(await call("check", token)).toMatchObject({ code: Code.Unauthenticated });
    });
  }

  it("rejects a missing token on a user method and a malformed Authorization header", async () => {
    expect(await call("watch")).toMatchObject({ code: Code.Unauthenticated, message: "missing bearer token" });
    const client = createClient(Health, createGrpcTransport({ baseUrl: srv.baseUrl }));
    await expect(client.check({}, { headers: { authorization: `Basic ${btoa("a:b")}` } })).rejects.toMatchObject({ code: Code.Unauthenticated });
  });
});

describe("rules", () => {
  it("admits valid tokens and exposes the principal", async () => {
    expect(await call("watch", await tokenFor("user"))).toEqual({ code: undefined, principal: "user-1:user", message: "" });
    expect(await call("watch", await tokenFor("admin"))).toMatchObject({ code: undefined, principal: "user-1:admin" });
    expect(await call("list", await tokenFor("admin"))).toMatchObject({ code: undefined, principal: "user-1:admin" });
  });

  it("lets anyone call a public method and still knows a valid caller there", async () => {
    expect(await call("check")).toMatchObject({ code: undefined, principal: "anonymous" });
    expect(await call("check", await tokenFor("user"))).toMatchObject({ code: undefined, principal: "user-1:user" });
  });

  it("denies a user token on admin and internal methods with PERMISSION_DENIED", async () => {
    expect(await call("list", await tokenFor("user"))).toMatchObject({ code: Code.PermissionDenied });
    expect(await call("check", await tokenFor("user"), internalSrv)).toMatchObject({ code: Code.PermissionDenied });
    expect(await call("check", await tokenFor("admin"), internalSrv)).toMatchObject({ code: Code.PermissionDenied });
  });

  it("keeps internal tokens off user and admin methods", async () => {
    expect(await call("watch", await tokenFor("internal"))).toMatchObject({ code: Code.PermissionDenied });
    expect(await call("list", await tokenFor("internal"))).toMatchObject({ code: Code.PermissionDenied });
  });

  it("healthAuthRules keep probes working without a token under deny-by-default", async () => {
    const server = await serve({ ...healthAuthRules }, 0);
    try {
      expect(await call("check", undefined, server)).toMatchObject({ code: undefined });
      expect(await call("watch", undefined, server)).toMatchObject({ code: undefined });
    } finally {
      await server.server.close();
    }
  });

  it("denies a method without any rule", async () => {
    const server = await serve({ "grpc.health.v1.Health/Check": "public" }, 0);
    try {
      expect(await call("watch", await tokenFor("admin"), server)).toMatchObject({ code: Code.PermissionDenied });
      expect(await call("check", undefined, server)).toMatchObject({ code: undefined });
    } finally {
      await server.server.close();
    }
  });

  it("accepts internal tokens minted for service-to-service calls", async () => {
    const minter = createInternalTokenMinter({ privateKey: keyA.privateJwk, kid: keyA.kid, issuer: ISS, audience: AUD, subject: "chat-router" });
    const client = createClient(Health, createGrpcTransport({ baseUrl: internalSrv.baseUrl, interceptors: [internalCallInterceptor(minter)] }));
    let principal: string | null = null;
    await client.check({}, { onHeader: (h) => { principal = h.get("x-principal"); } });
    expect(principal).toBe("chat-router:internal");
  });
});

describe("JWKS key rotation", () => {
  it("refetches the JWKS on an unknown kid and then accepts the new key", async () => {
    jwks = toJwks(keyA);
    expect((await call("watch", await tokenFor("user"))).code).toBeUndefined();
    const before = jwksFetches;
    // auth rotates: publishes B (and keeps A for tokens still in flight)
    jwks = toJwks(keyA, keyB);
    const tokenB = await sign(validClaims(), keyB);
    expect(await call("watch", tokenB)).toMatchObject({ code: undefined, principal: "user-1:user" });
    expect(jwksFetches).toBe(before + 1);
    // now cached: no further fetch
    expect((await call("watch", tokenB)).code).toBeUndefined();
    expect(jwksFetches).toBe(before + 1);
  });

  it("does not refetch within the cooldown, so unknown kids cannot hammer the JWKS endpoint", async () => {
    jwks = toJwks(keyA);
    const server = await serve({ "grpc.health.v1.Health": "user" }, 60_000);
    try {
      expect((await call("watch", await tokenFor("user"), server)).code).toBeUndefined();
      const before = jwksFetches;
      for (let i = 0; i < 3; i++) {
        expect(await call("watch", await sign(validClaims(), { ...keyB, kid: `random-${i}` }), server)).toMatchObject({ code: Code.Unauthenticated });
      }
      expect(jwksFetches).toBe(before);
    } finally {
      await server.server.close();
    }
  });
});
