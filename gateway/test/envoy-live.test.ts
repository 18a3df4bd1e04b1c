// The real Envoy (container, host network) running the generated configuration in front of fake upstreams — one h2c
// server per cluster that answers gRPC health checks, reports which cluster it is and which claim headers reached it.
// Needs a container engine and the Envoy image: it runs in .github/workflows/gateway.yml (LUNA_E2E_ENVOY=1) and is
// skipped elsewhere. It checks against Envoy itself what the other tests check against the protos and the model:
// the route table path for path, gRPC/Connect local replies, JWT, claim headers stripped, rate limit failing open.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { generateSigningKey, signAccessToken, toJwks, type SigningKey } from "@luna/kit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLAIM_HEADERS, UPSTREAM_SERVICES } from "../src/envoy.js";
import { startEnvoyContainer, type EnvoyContainer } from "../src/envoy-run.js";
import { matchRoute } from "../src/routes.js";
import { corpus } from "./helpers.js";

const live = process.env.LUNA_E2E_ENVOY === "1";

// grpc.health.v1.HealthCheckResponse{status: SERVING}, as one length-prefixed gRPC message.
const SERVING = Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]);
// envoy.service.ratelimit.v3.RateLimitResponse{overall_code: OVER_LIMIT}, likewise.
const OVER_LIMIT = Buffer.from([0, 0, 0, 0, 2, 0x08, 0x02]);

describe.runIf(live)("the real Envoy with the generated configuration", () => {
  const servers: http2.Http2Server[] = [];
  const upstreams: Record<string, string> = {};
  let key: SigningKey;
  let token: string;
  let limitedToken: string;
  let envoy: EnvoyContainer;
  let session: http2.ClientHttp2Session;

  beforeAll(async () => {
    key = await generateSigningKey({ kid: "live" });
    token = await signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: "luna-auth", audience: "luna", subject: "user-1",
      role: "user", ttlSeconds: 600 });
    limitedToken = await signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: "luna-auth", audience: "luna",
      subject: "limited-user", role: "user", ttlSeconds: 600 });
    for (const name of UPSTREAM_SERVICES) {
      const server = http2.createServer();
      server.on("stream", (stream, headers) => {
        const path = String(headers[":path"]);
        stream.on("error", () => undefined);
        if (!path.startsWith("/envoy.service.ratelimit.v3.RateLimitService/")) stream.resume();
        if (path === "/grpc.health.v1.Health/Check") {
          stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          stream.end(SERVING);
        } else if (path.startsWith("/envoy.service.ratelimit.v3.RateLimitService/")) {
          const chunks: Buffer[] = [];
          stream.on("data", (c: Buffer) => chunks.push(c));
          stream.on("end", () => {
            if (Buffer.concat(chunks).includes("limited-user")) {
              // RateLimitResponse{overall_code: OVER_LIMIT}
              stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
              stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
              stream.end(OVER_LIMIT);
            } else {
              // billing's rate limit service is down: Envoy must let requests through (failure_mode_deny: false).
              stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "14", "grpc-message": "down" }, { endStream: true });
            }
          });
          return;
        } else if (name === "auth" && path === "/.well-known/jwks.json") {
          stream.respond({ ":status": 200, "content-type": "application/json" });
          stream.end(JSON.stringify(toJwks(key)));
        } else {
          stream.respond({ ":status": 200, "content-type": "application/json", "x-upstream": name,
            "x-seen-user": String(headers[CLAIM_HEADERS.sub] ?? ""), "x-seen-role": String(headers[CLAIM_HEADERS.role] ?? "") });
          stream.end("{}");
        }
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      servers.push(server);
      upstreams[name] = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    }
    envoy = await startEnvoyContainer({ upstreams });
    session = http2.connect(envoy.url);
    session.on("error", () => undefined);
  }, 180_000);

  afterAll(async () => {
    session?.close();
    await envoy?.stop();
    for (const s of servers) await new Promise((r) => s.close(r));
  });

  interface Answer { status: number; headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: string; reset?: boolean }

  async function call(path: string, headers: Record<string, string> = {}, body = "{}"): Promise<Answer> {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/json", ...headers });
    req.end(body);
    return new Promise((resolve) => {
      let h: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (x) => (h = x));
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve({ status: Number(h[":status"]), headers: h, trailers, body: Buffer.concat(chunks).toString("utf8") }));
      // Envoy's codec may refuse a path outright (a reset): the request reached no service.
      req.on("error", () => resolve({ status: 0, headers: {}, trailers: {}, body: "", reset: true }));
    });
  }

  it("routes the whole corpus as the route table (and the dev gateway) does", async () => {
    const wrong: string[] = [];
    for (const target of await corpus()) {
      const a = await call(target, { authorization: `Bearer ${token}` });
      const got = typeof a.headers["x-upstream"] === "string" ? a.headers["x-upstream"] : a.reset || [400, 404].includes(a.status) ? "refused" : `status ${a.status}`;
      const m = matchRoute(target);
      const want = m.kind === "route" ? m.service : "refused";
      if (got !== want) wrong.push(`${target}: Envoy ${got}, table ${want}`);
    }
    expect(wrong).toEqual([]);
  });

  it("answers a missing token with a Connect `unauthenticated` error, and lets public RPCs through without one", async () => {
    const a = await call("/luna.auth.v1.AuthService/GetMe");
    expect(a.status).toBe(401);
    expect(a.headers["content-type"]).toContain("application/json");
    expect(JSON.parse(a.body)).toMatchObject({ code: "unauthenticated" });
    expect((await call("/luna.models.v1.ModelService/ListModels")).headers["x-upstream"]).toBe("model-registry");
    const bad = await call("/luna.models.v1.ModelService/ListModels", { authorization: "Bearer not.a.token" });
    expect(bad.status).toBe(401);
  });

  it("answers gRPC clients with grpc-status: UNIMPLEMENTED for internal services, UNAUTHENTICATED without a token", async () => {
    const frame = Buffer.from([0, 0, 0, 0, 0]).toString("latin1");
    const internal = await call("/luna.billing.v1.CreditsService/Reserve", { "content-type": "application/grpc", te: "trailers" }, frame);
    expect(internal.status).toBe(200);
    expect(internal.headers["grpc-status"] ?? internal.trailers["grpc-status"]).toBe("12");
    const noToken = await call("/luna.chat.v1.ChatService/ListConversations", { "content-type": "application/grpc", te: "trailers" }, frame);
    expect(noToken.headers["grpc-status"] ?? noToken.trailers["grpc-status"]).toBe("16");
  });

  it("answers an unknown path with a Connect `unimplemented` error, never HTML or plain text", async () => {
    const a = await call("/luna.nothing.v1.Nope/Call");
    expect(a.status).toBe(404);
    expect(JSON.parse(a.body)).toMatchObject({ code: "unimplemented" });
  });

  it("forwards verified claims as headers and drops client-sent copies", async () => {
    const forged = { [CLAIM_HEADERS.sub]: "someone-else", [CLAIM_HEADERS.role]: "admin" };
    const anonymous = await call("/luna.models.v1.ModelService/ListModels", forged);
    expect(anonymous.headers["x-seen-user"]).toBe("");
    expect(anonymous.headers["x-seen-role"]).toBe("");
    const signedIn = await call("/luna.auth.v1.AuthService/GetMe", { ...forged, authorization: `Bearer ${token}` });
    expect(signedIn.headers["x-seen-user"]).toBe("user-1");
    expect(signedIn.headers["x-seen-role"]).toBe("user");
  });

  it("answers a rate-limited caller RESOURCE_EXHAUSTED in every protocol, and fails open when billing is down", async () => {
    const auth = { authorization: `Bearer ${limitedToken}` };
    const unary = await call("/luna.auth.v1.AuthService/GetMe", auth);
    expect(unary.status).toBe(429);
    expect(JSON.parse(unary.body)).toMatchObject({ code: "resource_exhausted" });
    const grpc = await call("/luna.auth.v1.AuthService/GetMe", { ...auth, "content-type": "application/grpc", te: "trailers" },
      Buffer.from([0, 0, 0, 0, 0]).toString("latin1"));
    expect(grpc.headers["grpc-status"] ?? grpc.trailers["grpc-status"]).toBe("8");
    const stream = await call("/luna.chat.v1.ChatService/SendMessage", { ...auth, "content-type": "application/connect+json" }, "\0\0\0\0\x02{}");
    expect(stream.status).toBe(200);
    expect(stream.body).toContain('"code":"resource_exhausted"');
    // Everyone else passes although the rate limit service answers UNAVAILABLE.
    expect((await call("/luna.auth.v1.AuthService/GetMe", { authorization: `Bearer ${token}` })).headers["x-upstream"]).toBe("auth");
  });

  it("serves Prometheus stats on the stats listener, and nothing else of the admin interface", async () => {
    const stats = await fetch(`${envoy.statsUrl}/stats/prometheus`);
    expect(stats.status).toBe(200);
    expect(await stats.text()).toContain("envoy_cluster_upstream_rq");
    expect((await fetch(`${envoy.statsUrl}/config_dump`)).status).toBe(404);
    expect((await fetch(`${envoy.statsUrl}/quitquitquit`, { method: "POST" })).status).toBe(404);
  });

  it("answers CORS preflights without a token", async () => {
    const req = session.request({ ":method": "OPTIONS", ":path": "/luna.chat.v1.ChatService/SendMessage", origin: "https://app.example",
      "access-control-request-method": "POST", "access-control-request-headers": "content-type,connect-protocol-version,authorization" });
    req.end();
    const h = await new Promise<http2.IncomingHttpHeaders>((r) => req.on("response", r));
    req.resume();
    expect(Number(h[":status"])).toBe(200);
    expect(h["access-control-allow-origin"]).toBeTruthy();
    expect(String(h["access-control-allow-headers"]).toLowerCase()).toContain("connect-protocol-version");
  });
});
