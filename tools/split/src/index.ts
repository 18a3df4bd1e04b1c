/**
 * @luna/split — every Luna service as its own process behind a dev gateway (the local stand-in for Envoy):
 * `startSplitPlatform` (used by `make dev-split` and the end-to-end tests), `startGateway` and its route table.
 */
export { prefixedOutput, splitConfigSchema, startSplitPlatform, type SplitPlatform, type SplitPlatformOptions,
  type SplitProcessInfo } from "./platform.js";
export { startGateway, upstreamRequestHeaders, type Gateway, type GatewayOptions } from "./gateway.js";
export { DENIED_PREFIXES, PUBLIC_ROUTES, matchRoute, type GatewayRoute, type RouteMatch } from "./routes.js";
export { SPLIT_PROCESSES, discoverProcesses, splitDatabases, type SplitProcessSpec } from "./services.js";
export { bootstrapInvites, devAdmin, devSecret } from "./dev-bootstrap.js";
export { spawnServiceProcess, waitUntilReady, type ServiceProcess } from "./children.js";
