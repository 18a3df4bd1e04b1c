// The dev gateway's route table: which service answers which path, as the cluster's Envoy routes by proto package
// prefix. It is data, so a new service or public path is one line here. Internal services are denied before any
// route is tried, so a broad prefix (`/luna.chat.v1.`) can never expose an internal sibling added later to the list.
import type { ServiceName } from "@luna/kit";

/** A path prefix served by one service. */
export interface GatewayRoute {
  /** Matched against the request path (without the query): a prefix, or the whole path when `exact`. */
  prefix: string;
  exact?: boolean;
  service: ServiceName;
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
  { prefix: "/.well-known/jwks.json", exact: true, service: "auth" },
  // image-job's signed, expiring image URLs (IMAGE_PATH_PREFIX in services/image-job).
  { prefix: "/images/", service: "image-job" },
  // Health of the edge: answered by auth, the service every session depends on.
  { prefix: "/grpc.health.v1.Health/", service: "auth" },
];

/**
 * Never routed, whatever PUBLIC_ROUTES says: the services only other services (or Envoy itself) may call. Their
 * servers would refuse a user token anyway; the gateway does not even let the request reach them.
 */
export const DENIED_PREFIXES: readonly string[] = [
  "/luna.billing.v1.CreditsService/",
  "/luna.billing.v1.LimitsService/",
  "/luna.models.v1.ModelUpstreamService/",
  "/luna.image.v1.ImageWorkerService/",
  "/envoy.",
];

/** The outcome of matching a request path. */
export type RouteMatch =
  | { kind: "route"; service: ServiceName; route: GatewayRoute }
  /** No route (unknown, internal, or a path that is not in normal form): 404. */
  | { kind: "none"; reason: "denied" | "unknown" | "malformed" };

// Letters, digits and the few punctuation marks proto names and the plain HTTP routes use. Anything else
// (percent-escapes, backslashes, `;`) could be read differently by the gateway and the service, so it is refused.
const PATH_CHARS = /^\/[A-Za-z0-9._~\-/]*$/;

/**
 * Matches a request target (`/path?query`) against the table. A path that is not in normal form (`.` or `..`
 * segments, `//`, escapes) matches nothing, so a prefix check cannot be walked around (`/luna.billing.v1.
 * BillingService/../CreditsService/Reserve`).
 */
export function matchRoute(target: string, routes: readonly GatewayRoute[] = PUBLIC_ROUTES,
  denied: readonly string[] = DENIED_PREFIXES): RouteMatch {
  const q = target.indexOf("?");
  const path = q === -1 ? target : target.slice(0, q);
  if (!PATH_CHARS.test(path) || path.includes("//") || path.split("/").some((s) => s === "." || s === "..")) {
    return { kind: "none", reason: "malformed" };
  }
  if (denied.some((p) => path.startsWith(p))) return { kind: "none", reason: "denied" };
  for (const route of routes) {
    if (route.exact ? path === route.prefix : path.startsWith(route.prefix)) return { kind: "route", service: route.service, route };
  }
  return { kind: "none", reason: "unknown" };
}
