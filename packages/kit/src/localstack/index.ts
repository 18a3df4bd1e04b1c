// @luna/kit/localstack: local Postgres, Redis and NATS JetStream processes for development and tests.
export type { LocalLog, ManagedServer, ServerKind, ServerOptions } from "./types.js";
export { silentLog } from "./types.js";
export {
  ensureServerBinaries,
  findPgBinDir,
  findServerBinaries,
  manualInstructions,
  planInstall,
  type FindBinariesOptions,
  type InstallEnvironment,
  type InstallPlan,
  type MissingServer,
  type ServerBinaries,
} from "./binaries.js";
export { findRunningServer, freePort, freePorts, logTail, stopServerInDir } from "./managed.js";
export { DEFAULT_PG_MAX_CONNECTIONS, DEFAULT_PG_USER, startPostgres, type PostgresOptions, type PostgresServer } from "./postgres.js";
export { pingRedis, startRedis, type RedisOptions, type RedisServer } from "./redis.js";
export { startNats, type NatsOptions, type NatsServer } from "./nats.js";
