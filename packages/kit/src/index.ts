/**
 * @luna/kit — the one place for Luna's service plumbing (see README.md for the public surface).
 * Test helpers live in `@luna/kit/testing`, local server processes in `@luna/kit/localstack`.
 */
export * from "./config.js";
export * from "./log.js";
export * from "./errors.js";
export * from "./metrics.js";
export * from "./admin.js";
export * from "./tracing.js";
export * from "./health.js";
export * from "./server.js";
export * from "./client-address.js";
export * from "./auth.js";
export * from "./revocation.js";
export * from "./api-keys.js";
export * from "./openai-http.js";
export * from "./nats.js";
export * from "./outbox.js";
export * from "./inbox.js";
export * from "./audit-events.js";
export * from "./retention.js";
export * from "./redis.js";
export * from "./migrate.js";
export * from "./pg.js";
export * from "./ids.js";
export * from "./catalog.js";
export * from "./service.js";
export * from "./direct-transport.js";
export * from "./dual-protocol.js";
