// vitest globalSetup for the whole monorepo (see the root vitest.config.ts): one Postgres, Redis and NATS JetStream
// per `vitest run`, on free ports in a temporary folder, torn down when the run ends. Test files reach them through
// `testServers()` / `createTestDatabase()` from @luna/kit/testing.
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { ensureServerBinaries, startNats, startPostgres, startRedis, type ManagedServer } from "../localstack/index.js";
import type { TestServersInfo } from "./provided.js";
import { makeRunRoot, removeStaleRunRoots } from "./tmp.js";

// Only installation progress is worth printing; the servers themselves start silently.
const installLog = {
  info: (msg: string) => process.stderr.write(`[luna test servers] ${msg}\n`),
  warn: (msg: string) => process.stderr.write(`[luna test servers] ${msg}\n`),
};

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  removeStaleRunRoots();
  await ensureServerBinaries(installLog);
  const root = makeRunRoot();
  const started: ManagedServer[] = [];
  const teardown = async () => {
    await Promise.allSettled(started.map((s) => s.stop()));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const track = <T extends ManagedServer>(p: Promise<T>) => p.then((s) => (started.push(s), s));
    const [postgres, redis, nats] = await Promise.all([
      track(startPostgres({ dataDir: join(root, "postgres") })),
      track(startRedis({ dataDir: join(root, "redis") })),
      track(startNats({ dataDir: join(root, "nats") })),
    ]);
    const info: TestServersInfo = {
      postgresUrlBase: `postgresql://${postgres.user}@127.0.0.1:${postgres.port}`,
      redisUrl: redis.url,
      natsUrl: nats.url,
      natsMonitorUrl: nats.monitorUrl,
      tmpRoot: root,
    };
    project.provide("lunaTestServers", info);
  } catch (err) {
    await teardown();
    throw err;
  }
  return teardown;
}
