// What Envoy's protos cannot say: every client RPC reaches the service that serves it, no internal RPC is routed,
// referenced clusters exist, router is last, streams have no route timeout, CORS fits Connect/gRPC-Web, and the JWT
// rules exempt exactly the RPCs the services themselves serve without a token. Each check is shown failing on a
// deliberately broken copy of the committed configuration.
import { checkAccess, ruleOf } from "@luna/kit";
import { describe, expect, it } from "vitest";
import { checkEnvoyConfig, jwtRequirement, ownerFromRules } from "../src/checks.js";
import { CLAIM_HEADERS, OPTIONAL_TOKEN, REQUIRE_TOKEN } from "../src/envoy.js";
import { clusters, httpFiltersOf, listeners, resolve, routesOf } from "../src/model.js";
import { RULES_BY_SERVICE, SERVICE_RULES } from "../src/sources.js";
import { allRpcs, committedConfig, hcmOf, routeList, type Obj } from "./helpers.js";

const owner = ownerFromRules(RULES_BY_SERVICE);
const check = async (config: Obj): Promise<string[]> => checkEnvoyConfig(config, await allRpcs(), owner);

/** The route Envoy picks for a path in a config (must be a cluster route). */
function routeFor(config: Obj, path: string): NonNullable<ReturnType<typeof routesOf>[number]> {
  const r = resolve(hcmOf(config), path);
  if (r.kind !== "cluster") throw new Error(`${path} is not routed`);
  return r.route;
}

describe("the committed edge configuration", () => {
  it("passes every semantic check", async () => {
    expect(await check(committedConfig())).toEqual([]);
  });

  it("routes every client RPC of proto/ to the service that serves it", async () => {
    const config = committedConfig();
    const rpcs = await allRpcs();
    const client = rpcs.filter((r) => r.rule !== undefined && r.rule !== "internal" && !r.path.startsWith("/envoy."));
    expect(client.length).toBeGreaterThan(40);
    for (const rpc of client) {
      const r = resolve(hcmOf(config), rpc.path);
      // grpc.health.v1 is served by every server; the table sends the edge's health to auth.
      const expected = rpc.service === "grpc.health.v1.Health" ? "auth" : owner(rpc.service);
      expect(r.kind === "cluster" ? r.cluster : r.status, rpc.path).toBe(expected);
    }
    // Spot checks a reader can follow.
    expect(resolve(hcmOf(config), "/luna.chat.v1.ChatService/SendMessage")).toMatchObject({ kind: "cluster", cluster: "chat-router" });
    expect(resolve(hcmOf(config), "/luna.models.v1.ModelService/ListModels")).toMatchObject({ kind: "cluster", cluster: "model-registry" });
  });

  it("routes no internal RPC: every one of them is a 404 from Envoy", async () => {
    const config = committedConfig();
    const internal = (await allRpcs()).filter((r) => r.rule === "internal" || r.path.startsWith("/envoy."));
    expect(internal.map((r) => r.service)).toEqual(expect.arrayContaining(["luna.billing.v1.CreditsService", "luna.billing.v1.LimitsService",
      "luna.models.v1.ModelUpstreamService", "luna.image.v1.ImageWorkerService", "envoy.service.ratelimit.v3.RateLimitService"]));
    for (const rpc of internal) expect(resolve(hcmOf(config), rpc.path), rpc.path).toMatchObject({ kind: "local", status: 404 });
  });

  it("exempts from the token exactly the RPCs the services serve without one", async () => {
    const config = committedConfig();
    const rpcs = (await allRpcs()).filter((r) => resolve(hcmOf(config), r.path).kind === "cluster" && !r.path.startsWith("/grpc.health."));
    // What the services allow without a token, asked of the kit's own access check with each service's rules.
    const servedWithoutToken = rpcs.filter((r) => {
      try {
        checkAccess(ruleOf(SERVICE_RULES, r.service, r.method), r.path, undefined);
        return true;
      } catch {
        return false;
      }
    }).map((r) => r.path).sort();
    const exempt = rpcs.filter((r) => jwtRequirement(routeFor(config, r.path)) !== REQUIRE_TOKEN).map((r) => r.path).sort();
    expect(exempt).toEqual(servedWithoutToken);
    expect(exempt).toEqual(expect.arrayContaining(["/luna.auth.v1.AuthService/SignIn", "/luna.auth.v1.AuthService/SignUp",
      "/luna.auth.v1.AuthService/Refresh", "/luna.models.v1.ModelService/ListModels", "/luna.models.v1.ModelService/ListWorkflows"]));
    // A token that is sent on a public RPC is still verified (requires_any: valid token, or none at all).
    expect(jwtRequirement(routeFor(config, "/luna.auth.v1.AuthService/SignIn"))).toBe(OPTIONAL_TOKEN);
    // Plain paths need none: JWKS, signed image URLs, health.
    for (const p of ["/.well-known/jwks.json", "/images/u/j/0.png", "/grpc.health.v1.Health/Check"]) expect(jwtRequirement(routeFor(config, p))).toBe("disabled");
  });

  it("gives server streams no route timeout, but idle and duration limits; unary calls an explicit timeout", async () => {
    const config = committedConfig();
    const streaming = (await allRpcs()).filter((r) => r.streaming).map((r) => r.path);
    // From the descriptors, not written by hand here or in the generator.
    expect(streaming).toEqual(expect.arrayContaining(["/luna.chat.v1.ChatService/SendMessage", "/luna.chat.v1.ChatService/RegenerateMessage",
      "/luna.chat.v1.ChatService/ResumeStream", "/luna.image.v1.ImageService/WatchJob"]));
    for (const path of streaming.filter((p) => !p.startsWith("/envoy."))) {
      const route = routeFor(config, path).route!;
      expect(route.timeout, path).toBe("0s");
      expect(route.idle_timeout, path).toMatch(/^\d+s$/);
      expect(route.max_stream_duration?.max_stream_duration, path).toMatch(/^\d+s$/);
    }
    expect(routeFor(config, "/luna.chat.v1.ChatService/CreateConversation").route!.timeout).toBe("60s");
  });

  it("strips client-sent claim headers before jwt_authn sets them", () => {
    const filters = httpFiltersOf(hcmOf(committedConfig()));
    const mutation = filters.find((f) => f.name === "envoy.filters.http.header_mutation")!.typed_config as Obj;
    expect(JSON.stringify(mutation)).toContain(CLAIM_HEADERS.sub);
    expect(filters.findIndex((f) => f.name === "envoy.filters.http.header_mutation"))
      .toBeLessThan(filters.findIndex((f) => f.name === "envoy.filters.http.jwt_authn"));
  });

  it("answers Envoy's own errors to Connect clients as Connect JSON errors with the right code", () => {
    const mappers = ((hcmOf(committedConfig()).local_reply_config as Obj).mappers as Obj[]);
    const codeFor = (status: number): unknown => mappers.find((m) => JSON.stringify(m.filter).includes(`"default_value":${status},`)
      && JSON.stringify(m.filter).includes('"invert_match":true'))
      ?.body_format_override as Obj | undefined;
    expect(codeFor(401)).toMatchObject({ json_format: { code: "unauthenticated" }, content_type: "application/json" });
    expect(codeFor(404)).toMatchObject({ json_format: { code: "unimplemented" } });
    expect(codeFor(429)).toMatchObject({ json_format: { code: "resource_exhausted" } });
    expect(codeFor(503)).toMatchObject({ json_format: { code: "unavailable" } });
    // gRPC and gRPC-Web requests are left to Envoy's gRPC local replies (grpc-status), which the mappers never touch.
    for (const m of mappers) expect(JSON.stringify(m.filter)).toMatch(/"invert_match":true|"exact":"application\/connect\+(json|proto)"/);
  });

  it("sends upstream traffic to headless Services over HTTP/2, health-checked", () => {
    const auth = clusters(committedConfig()).find((c) => c.name === "auth")!;
    expect(JSON.stringify(auth.load_assignment)).toContain('"address":"auth-headless","port_value":8080');
    expect(auth.type).toBe("STRICT_DNS");
  });
});

describe("the checks catch a deliberately broken configuration", () => {
  const broken: Array<[string, (c: Obj) => void, RegExp]> = [
    ["an internal service routed (its deny route removed)", (c) => {
      const routes = routeList(c);
      routes.splice(routes.findIndex((r) => r.match.prefix === "/luna.image.v1.ImageWorkerService/"), 1);
    }, /ImageWorkerService\/StartJob \(denied in the route table\) is routed to image-job/],
    ["an internal service routed (a route added for it)", (c) => {
      routeList(c).splice(1, 0, { name: "oops", match: { prefix: "/luna.billing.v1.CreditsService/" }, route: { cluster: "billing", timeout: "60s" } });
    }, /CreditsService\/Reserve \(denied in the route table\) is routed to billing/],
    ["a streaming route with Envoy's default timeout", (c) => {
      delete routeFor(c, "/luna.chat.v1.ChatService/SendMessage").route!.timeout;
    }, /streaming \/luna\.chat\.v1\.ChatService\/SendMessage has route timeout default \(15s\), expected 0s/],
    ["a missing cluster", (c) => {
      const cs = clusters(c);
      cs.splice(cs.findIndex((x) => x.name === "billing"), 1);
    }, /uses cluster billing, which does not exist/],
    ["router not last", (c) => {
      const fs = httpFiltersOf(hcmOf(c));
      fs.push(fs.splice(fs.length - 2, 1)[0]!);
    }, /router is not the last HTTP filter/],
    ["jwt_authn before the header mutation", (c) => {
      const fs = httpFiltersOf(hcmOf(c));
      [fs[2], fs[3]] = [fs[3]!, fs[2]!];
    }, /HTTP filters are .*; expected/],
    ["an RPC sent to the wrong service", (c) => {
      routeFor(c, "/luna.billing.v1.BillingService/GetBalance").route!.cluster = "auth";
    }, /GetBalance goes to auth, but billing serves/],
    ["a user RPC exempted from the token", (c) => {
      routeFor(c, "/luna.auth.v1.AuthService/GetMe").typed_per_filter_config!["envoy.filters.http.jwt_authn"]!.requirement_name = OPTIONAL_TOKEN;
    }, /GetMe \(user\) has jwt requirement optional, expected token/],
    ["a public RPC demanding a token", (c) => {
      routeFor(c, "/luna.models.v1.ModelService/ListModels").typed_per_filter_config!["envoy.filters.http.jwt_authn"]!.requirement_name = REQUIRE_TOKEN;
    }, /ListModels \(public\) has jwt requirement token, expected optional/],
    ["tokens accepted from the query string", (c) => {
      const jwt = httpFiltersOf(hcmOf(c)).find((f) => f.name === "envoy.filters.http.jwt_authn")!.typed_config as Obj;
      delete ((jwt.providers as Record<string, Obj>).luna!).from_headers;
    }, /tokens are taken from elsewhere than the Authorization header/],
    ["a claim header not stripped", (c) => {
      const m = httpFiltersOf(hcmOf(c)).find((f) => f.name === "envoy.filters.http.header_mutation")!.typed_config as Obj;
      ((m.mutations as Obj).request_mutations as unknown[]).pop();
    }, /claim header x-luna-role is not stripped/],
    ["a rate limit descriptor key billing does not read", (c) => {
      const md = routeFor(c, "/luna.chat.v1.ChatService/SendMessage").route!.rate_limits![0]!.actions[0]!.metadata!;
      md.descriptor_key = "userid";
    }, /route luna\.chat\.v1\.ChatService\/SendMessage sends descriptor key userid, which billing does not read/],
    ["a rate limit subject from a client-controlled header", (c) => {
      routeFor(c, "/luna.billing.v1.BillingService/GetBalance").route!.rate_limits![0]!.actions[0] =
        { request_headers: { header_name: "x-luna-user-id", descriptor_key: "user_id" } };
    }, /GetBalance takes descriptor user_id from a request header/],
    ["rate limiting answering UNAVAILABLE", (c) => {
      const rl = httpFiltersOf(hcmOf(c)).find((f) => f.name === "envoy.filters.http.ratelimit")!.typed_config as Obj;
      rl.rate_limited_as_resource_exhausted = false;
    }, /not RESOURCE_EXHAUSTED/],
    ["CORS without a Connect header", (c) => {
      const vh = ((hcmOf(c).route_config as Obj).virtual_hosts as Obj[])[0]!;
      const policy = (vh.typed_per_filter_config as Record<string, Obj>)["envoy.filters.http.cors"]!;
      policy.allow_headers = String(policy.allow_headers).replace("connect-protocol-version, ", "");
    }, /CORS does not allow header Connect-Protocol-Version/],
    ["an upstream through a ClusterIP (not STRICT_DNS)", (c) => {
      clusters(c).find((x) => x.name === "chat-router")!.type = "LOGICAL_DNS";
    }, /cluster chat-router: type LOGICAL_DNS, expected STRICT_DNS/],
    ["the stats listener exposing the whole admin interface", (c) => {
      const stats = listeners(c).find((l) => l.name === "stats")!;
      const hcm = ((stats.filter_chains as Obj[])[0]!.filters as Obj[])[0]!.typed_config as Obj;
      routesOf(hcm)[0]!.match = { prefix: "/" };
    }, /stats listener: route \{"prefix":"\/"\}/],
    ["an API route to the admin interface", (c) => {
      routeList(c).splice(1, 0, { name: "oops", match: { prefix: "/admin/" }, route: { cluster: "envoy-admin", timeout: "60s" } });
    }, /route oops reaches envoy-admin, not a Luna service/],
    ["admin reachable from outside", (c) => {
      ((((c.admin as Obj).address as Obj).socket_address as Obj)).address = "0.0.0.0";
    }, /admin listens on 0\.0\.0\.0/],
  ];
  it.each(broken)("%s", async (_what, breakIt, problem) => {
    const config = committedConfig();
    breakIt(config);
    const problems = await check(config);
    expect(problems.join("\n")).toMatch(problem);
  });
});
