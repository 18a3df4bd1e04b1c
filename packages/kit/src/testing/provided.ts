// Coordinates of the shared test servers, handed from the root globalSetup to every test file via vitest's
// provide/inject.

/** What the global setup provides under the key "lunaTestServers". */
export interface TestServersInfo {
  /** `postgresql://luna@127.0.0.1:<port>`; append `/<database>`. */
  postgresUrlBase: string;
  redisUrl: string;
  natsUrl: string;
  natsMonitorUrl: string;
  /** Per-run temporary folder (removed at teardown); dedicated servers put their data here. */
  tmpRoot: string;
}

declare module "vitest" {
  export interface ProvidedContext {
    lunaTestServers: TestServersInfo;
  }
}
