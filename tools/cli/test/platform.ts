// A real all-in-one Luna for client tests (the CLI's and the web client's): every hosted service in this process on
// a free port, over fresh databases on the run's shared Postgres and a NATS and Redis of its own (so durable
// consumers and rate-limit keys never meet another test file's), with the inference simulators.
import { chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "@luna/kit/localstack";
import { createTestDatabase, startDedicatedNats, startDedicatedRedis, type TestDatabase } from "@luna/kit/testing";
import { MODULES } from "../../allinone/src/modules.js";
import { startPlatform, type Platform } from "../../allinone/src/platform.js";

export const ADMIN_EMAIL = "admin@luna.test";
export const ADMIN_PASSWORD = "correct-horse-battery-staple-42";

/** Whether the all-in-one process hosts this service yet (tests of its features are skipped until it does). */
export function hosts(service: "auth" | "billing" | "model-registry" | "chat-router" | "image-job"): boolean {
  return MODULES.some((m) => m.name === service);
}

export interface TestPlatform {
  url: string;
  platform: Platform;
  dataDir: string;
  /** Invite codes the dev bootstrap wrote (`invites.txt`), when auth hosts it. */
  devInvites(): string[];
  stop(): Promise<void>;
}

/** Starts the platform; call `stop()` in afterAll. */
export async function startTestPlatform(env: Record<string, string> = {}): Promise<TestPlatform> {
  const dataDir = mkdtempSync(join(tmpdir(), "luna-client-test-"));
  chmodSync(dataDir, 0o755); // Postgres runs as an unprivileged user when tests run as root
  const databases = new Map<string, TestDatabase>();
  const [nats, redis] = await Promise.all([startDedicatedNats(), startDedicatedRedis()]);
  const cleanup = async () => {
    await Promise.allSettled([...databases.values()].map((d) => d.drop()));
    await Promise.allSettled([nats.dispose(), redis.dispose()]);
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    for (const m of MODULES) databases.set(m.database, await createTestDatabase({ prefix: m.database.replace(/[^a-z0-9_]/g, "_") }));
    const [api, admin, vllm, comfy] = await freePorts(4);
    const platform = await startPlatform({
      dataDir,
      env: {
        LUNA_PORT: String(api), LUNA_ADMIN_PORT: String(admin), LUNA_SIM_VLLM_PORT: String(vllm), LUNA_SIM_COMFYUI_PORT: String(comfy),
        LUNA_DEV_HOST: "127.0.0.1", LOG_LEVEL: "silent", AUTH_ADMIN_EMAIL: ADMIN_EMAIL, AUTH_ADMIN_PASSWORD: ADMIN_PASSWORD,
        // Tests make replies hang on purpose (to stop them); a title request caught by that would hang until its
        // timeout and hold up the platform's shutdown. Titles are not what client tests check.
        CHAT_TITLE_ENABLED: "false",
        ...env,
      },
      stack: {
        databaseUrl: (db) => {
          const d = databases.get(db);
          if (!d) throw new Error(`no test database for ${db}`);
          return d.url;
        },
        redisUrl: redis.url,
        natsUrl: nats.url,
      },
    });
    return {
      url: `http://127.0.0.1:${platform.port}`,
      platform,
      dataDir,
      devInvites: () => {
        try {
          return readFileSync(join(dataDir, "invites.txt"), "utf8").split(/\s+/).filter(Boolean);
        } catch {
          return [];
        }
      },
      async stop() {
        await platform.stop();
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
