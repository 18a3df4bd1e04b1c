// The edge's route table — the one source of what clients may reach. The dev gateway (tools/split) matches requests
// with `matchRoute`; the generator (envoy.ts) turns the same table into Envoy's routes, in the same order, so the two
// cannot drift (gateway/test/agreement.test.ts checks them path for path). It is data: a new service or public path
// is one line here, then `make gateway`. Internal services are denied before any route is tried, so a broad prefix
// (`/luna.chat.v1.`) can never expose an internal sibling added later to the list.
import type { ServiceName } from "@luna/kit";

/** A path prefix served by one service. */
export interface GatewayRoute {
  /** Matched against the request path (without the query): a prefix, or the whole path when `exact`. */
  prefix: string;
  exact?: boolean;
  service: ServiceName;
  /**
   * A plain HTTP route, not Luna RPCs (JWKS, signed image URLs, gRPC health): no token needed at the edge and no edge
   * rate limit. RPC routes take who may call what from the services' own access rules (see sources.ts).
   */
  plain?: boolean;
  /** A long response (SSE, a request that waits for a job): stream timeouts instead of the unary one. */
  streaming?: boolean;
}

/**
 * What clients may reach, in match order (first match wins). Every RPC a client may call has its Connect path
 * (`/luna.chat.v1.ChatService/SendMessage`), in Connect, gRPC and gRPC-Web alike.
 */
export const PUBLIC_ROUTES: readonly GatewayRoute[] = [
  { prefix: "/luna.auth.v1.", service: "auth" },
  { prefix: "/luna.billing.v1.BillingService/", service: "billing" },
  { prefix: "/luna.billing.v1.BillingAdminService/", service: "billing" },
  { prefix: "/luna.models.v1.ModelService/", service: "model-registry" },
  { prefix: "/luna.models.v1.ModelAdminService/", service: "model-registry" },
  { prefix: "/luna.chat.v1.", service: "chat-router" },
  { prefix: "/luna.image.v1.", service: "image-job" },
  // auth's signing keys, for clients and other gateways verifying access tokens.
  { prefix: "/.well-known/jwks.json", exact: true, service: "auth", plain: true },
  // image-job's signed, expiring image URLs (IMAGE_PATH_PREFIX in services/image-job): the signature is the access.
  { prefix: "/images/", service: "image-job", plain: true },
  // The OpenAI-compatible API (issue 22). Plain at the edge: its bearer is usually a personal API key (`luna_sk_`),
  // which is not a JWT, so the service verifies it (kit: api-keys.ts) and applies the per-user limits itself.
  { prefix: "/v1/models", exact: true, service: "chat-router", plain: true },
  { prefix: "/v1/chat/completions", exact: true, service: "chat-router", plain: true, streaming: true },
  // Waits for the image job: a long response, like a stream.
  { prefix: "/v1/images/generations", exact: true, service: "image-job", plain: true, streaming: true },
  // Health of the edge: answered by auth, the service every session depends on.
  { prefix: "/grpc.health.v1.Health/", service: "auth", plain: true },
];

/**
 * Never routed, whatever PUBLIC_ROUTES says: the services only other services (or Envoy itself) may call. Their
 * servers would refuse a user token anyway; the gateway does not even let the request reach them.
 */
export const DENIED_PREFIXES: readonly string[] = [
  "/luna.auth.v1.AuthInternalService/",
  "/luna.billing.v1.CreditsService/",
  "/luna.billing.v1.LimitsService/",
  "/luna.models.v1.ModelUpstreamService/",
  "/luna.image.v1.ImageWorkerService/",
  "/envoy.",
];

/**
 * The edge rate limit's feature key per RPC path (billing's `feature` descriptor entry); other RPCs use
 * `edge.<service>`. `signin`/`signup` are billing's anonymous features (limited per client address). The `edge.`
 * names are kept apart from the features services check themselves (chat-router's `chat`), so one request is never
 * counted twice against one bucket; billing applies the role's `default` rate to them unless BILLING_RATE_LIMITS
 * names them.
 */
export const RATE_LIMIT_FEATURES: Readonly<Record<string, string>> = {
  "/luna.auth.v1.AuthService/SignIn": "signin",
  "/luna.auth.v1.AuthService/SignUp": "signup",
};

/** The feature an RPC path is counted under at the edge. */
export function rateLimitFeature(path: string, service: ServiceName): string {
  return RATE_LIMIT_FEATURES[path] ?? `edge.${service}`;
}

/** The outcome of matching a request path. */
export type RouteMatch =
  | { kind: "route"; service: ServiceName; route: GatewayRoute }
  /** No route (unknown, internal, or a path that is not in normal form): 404. */
  | { kind: "none"; reason: "denied" | "unknown" | "malformed" };

/**
 * A path NOT in normal form, as one RE2-compatible pattern (Envoy's `safe_regex` matches the whole path; here it is
 * anchored): anything but letters, digits and `._~-/` (percent-escapes, backslashes, `;` could be read differently
 * by the gateway and the service), a path not starting with `/`, an empty segment (`//`), or a `.`/`..` segment. Such
 * a path is refused, never rewritten: what reaches a service is exactly what the client sent.
 */
export const MALFORMED_PATH = String.raw`[^/].*|.*[^A-Za-z0-9._~/-].*|.*//.*|(.*/)?\.\.?(/.*)?`;
const MALFORMED = new RegExp(`^(?:${MALFORMED_PATH})$`, "s");

/** The path of a request target (`/path?query`). */
export function pathOf(target: string): string {
  const q = target.indexOf("?");
  return q === -1 ? target : target.slice(0, q);
}

/**
 * Matches a request target (`/path?query`) against the table. A path that is not in normal form (`.` or `..`
 * segments, `//`, escapes) matches nothing, so a prefix check cannot be walked around (`/luna.billing.v1.
 * BillingService/../CreditsService/Reserve`).
 */
export function matchRoute(target: string, routes: readonly GatewayRoute[] = PUBLIC_ROUTES,
  denied: readonly string[] = DENIED_PREFIXES): RouteMatch {
  const path = pathOf(target);
  if (path === "" || MALFORMED.test(path)) return { kind: "none", reason: "malformed" };
  if (denied.some((p) => path.startsWith(p))) return { kind: "none", reason: "denied" };
  for (const route of routes) {
    if (route.exact ? path === route.prefix : path.startsWith(route.prefix)) return { kind: "route", service: route.service, route };
  }
  return { kind: "none", reason: "unknown" };
}
