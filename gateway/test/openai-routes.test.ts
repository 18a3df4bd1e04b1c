// Issue 22: the OpenAI-compatible API at the edge. `/v1/*` is plain at the gateway (its bearer is usually an API key,
// not a JWT: the services verify it), each path goes to the service that serves it, the long ones get the streaming
// timeouts (an SSE reply, a wait for an image job), and AuthInternalService (API-key verification) is never routed.
import { describe, expect, it } from "vitest";
import { buildRoutes, DEFAULT_SETTINGS } from "../src/envoy.js";
import { matchRoute, PUBLIC_ROUTES, type GatewayRoute } from "../src/routes.js";

type Route = { name: string; route?: { cluster?: string; timeout?: string; rate_limits?: unknown }; typed_per_filter_config?: Record<string, { disabled?: boolean }>;
  direct_response?: { status: number } };

function routeNamed(routes: Route[], name: string): Route {
  const r = routes.find((x) => x.name === name);
  expect(r, name).toBeDefined();
  return r!;
}

describe("the /v1 routes", () => {
  it("go to chat-router and image-job, plain, with streaming timeouts for the long ones", () => {
    expect(matchRoute("/v1/models")).toMatchObject({ kind: "route", service: "chat-router" });
    expect(matchRoute("/v1/chat/completions")).toMatchObject({ kind: "route", service: "chat-router" });
    expect(matchRoute("/v1/images/generations")).toMatchObject({ kind: "route", service: "image-job" });
    expect(matchRoute("/v1/embeddings")).toMatchObject({ kind: "none", reason: "unknown" });
    expect(matchRoute("/luna.auth.v1.AuthInternalService/VerifyApiKey")).toMatchObject({ kind: "none", reason: "denied" });

    const routes = buildRoutes([], DEFAULT_SETTINGS) as Route[];
    for (const [name, cluster, streaming] of [["path /v1/models", "chat-router", false], ["path /v1/chat/completions", "chat-router", true],
      ["path /v1/images/generations", "image-job", true]] as const) {
      const r = routeNamed(routes, name);
      expect(r.route?.cluster).toBe(cluster);
      expect(r.route?.timeout === "0s", name).toBe(streaming);
      expect(r.route?.rate_limits).toBeUndefined();
      expect(r.typed_per_filter_config?.["envoy.filters.http.jwt_authn"]?.disabled).toBe(true);
    }
    expect(routeNamed(routes, "deny /luna.auth.v1.AuthInternalService/").direct_response?.status).toBe(404);
  });

  it("a table whose chat route lacks `streaming` gets the unary timeout (the check above would catch it)", () => {
    const broken: GatewayRoute[] = PUBLIC_ROUTES.map((r) => (r.prefix === "/v1/chat/completions" ? { ...r, streaming: false } : r));
    const r = routeNamed(buildRoutes([], DEFAULT_SETTINGS, broken) as Route[], "path /v1/chat/completions");
    expect(r.route?.timeout).not.toBe("0s");
  });
});
