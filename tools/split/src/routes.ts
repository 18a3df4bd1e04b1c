// The dev gateway's route table is the edge's one table (gateway/src/routes.ts), which Envoy's configuration is also
// generated from; re-exported here for the dev gateway and its users.
export { DENIED_PREFIXES, PUBLIC_ROUTES, matchRoute, type GatewayRoute, type RouteMatch } from "@luna/gateway";
