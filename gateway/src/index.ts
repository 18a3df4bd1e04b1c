/**
 * @luna/gateway — the edge's route table (shared by the dev gateway in tools/split and Envoy). The Envoy
 * configuration generator is `@luna/gateway/envoy`, its inputs from the services `@luna/gateway/sources`, and the
 * parser against Envoy's own protos `@luna/gateway/protos`.
 */
export { DENIED_PREFIXES, MALFORMED_PATH, PUBLIC_ROUTES, RATE_LIMIT_FEATURES, matchRoute, pathOf, rateLimitFeature,
  type GatewayRoute, type RouteMatch } from "./routes.js";
