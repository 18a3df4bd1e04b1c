import { describe, expect, it } from "vitest";
import { matchRoute } from "./routes.js";

const serviceOf = (path: string): string => {
  const m = matchRoute(path);
  return m.kind === "route" ? m.service : `none:${m.reason}`;
};

describe("gateway route table", () => {
  it("routes every public proto service by its package prefix", () => {
    expect(serviceOf("/luna.auth.v1.AuthService/SignUp")).toBe("auth");
    expect(serviceOf("/luna.auth.v1.AuthAdminService/CreateInvites")).toBe("auth");
    expect(serviceOf("/luna.billing.v1.BillingService/GetBalance")).toBe("billing");
    expect(serviceOf("/luna.billing.v1.BillingAdminService/GrantCredits")).toBe("billing");
    expect(serviceOf("/luna.models.v1.ModelService/ListModels")).toBe("model-registry");
    expect(serviceOf("/luna.models.v1.ModelAdminService/SetModelEnabled")).toBe("model-registry");
    expect(serviceOf("/luna.chat.v1.ChatService/SendMessage")).toBe("chat-router");
    expect(serviceOf("/luna.image.v1.ImageService/WatchJob")).toBe("image-job");
  });

  it("routes the plain HTTP paths: JWKS (exactly), signed image URLs, health", () => {
    expect(serviceOf("/.well-known/jwks.json")).toBe("auth");
    expect(serviceOf("/.well-known/jwks.json.bak")).toBe("none:unknown");
    expect(serviceOf("/images/u1/j1/0.png?exp=1&sig=abc")).toBe("image-job");
    expect(serviceOf("/grpc.health.v1.Health/Check")).toBe("auth");
  });

  it("never routes internal services, even under a routed package prefix", () => {
    expect(serviceOf("/luna.billing.v1.CreditsService/Reserve")).toBe("none:denied");
    expect(serviceOf("/luna.billing.v1.LimitsService/Check")).toBe("none:denied");
    expect(serviceOf("/luna.models.v1.ModelUpstreamService/GetCatalog")).toBe("none:denied");
    expect(serviceOf("/luna.image.v1.ImageWorkerService/StartJob")).toBe("none:denied");
    expect(serviceOf("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")).toBe("none:denied");
  });

  it("matches on the path only, ignoring the query (Connect GET requests carry the message there)", () => {
    expect(serviceOf("/luna.models.v1.ModelService/ListModels?connect=v1&encoding=json&message=%7B%7D")).toBe("model-registry");
    expect(serviceOf("/luna.billing.v1.CreditsService/Reserve?x=/luna.billing.v1.BillingService/")).toBe("none:denied");
  });

  it("refuses paths that are not in normal form, so a prefix cannot be walked around", () => {
    expect(serviceOf("/luna.billing.v1.BillingService/../luna.billing.v1.CreditsService/Reserve")).toBe("none:malformed");
    expect(serviceOf("/luna.billing.v1.BillingService/./GetBalance")).toBe("none:malformed");
    expect(serviceOf("/luna.billing.v1.BillingService//GetBalance")).toBe("none:malformed");
    expect(serviceOf("/luna.billing.v1.BillingService/%2e%2e/CreditsService/Reserve")).toBe("none:malformed");
    expect(serviceOf("/luna.billing.v1.BillingService\\..\\CreditsService")).toBe("none:malformed");
    expect(serviceOf("luna.auth.v1.AuthService/SignIn")).toBe("none:malformed");
  });

  it("answers nothing it does not know", () => {
    expect(serviceOf("/")).toBe("none:unknown");
    expect(serviceOf("/luna.unknown.v1.Service/Call")).toBe("none:unknown");
    expect(serviceOf("/LUNA.AUTH.V1.AuthService/SignIn")).toBe("none:unknown");
  });

  it("takes a custom table, where the first match wins", () => {
    const routes = [{ prefix: "/a/b", service: "billing" as const }, { prefix: "/a", service: "auth" as const }];
    const first = matchRoute("/a/b/c", routes, []);
    const second = matchRoute("/a/x", routes, []);
    expect(first.kind === "route" ? first.service : first.reason).toBe("billing");
    expect(second.kind === "route" ? second.service : second.reason).toBe("auth");
  });
});
