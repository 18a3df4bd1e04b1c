// The services hosted by the all-in-one process, in start order (a module may call the ones before it).
import { loadConfig, type ServiceInfra, type ServiceModule } from "@luna/kit";
import { join } from "node:path";
import { devAdmin, devSecret } from "@luna/devstack";
import * as auth from "@luna/auth";
import * as billing from "@luna/billing";
import * as chat from "@luna/chat-router";
import * as image from "@luna/image-job";
import * as registry from "@luna/model-registry";

export interface ModuleContext {
  /** The local data dir (.luna). */
  dataDir: string;
  /** Lines to print in the start-up summary (invite codes, first admin). */
  notes: string[];
}

/**
 * image-job's make dev settings under the environment's own: the local store's secret and folder, and absolute image
 * URLs at the platform's own address (`publicUrl`, what the gateway's public URL is in a cluster; "" = relative).
 */
export function devImageEnv(env: NodeJS.ProcessEnv, ctx: { dataDir: string; publicUrl: string }): NodeJS.ProcessEnv {
  return { IMAGE_URL_SECRET: devSecret(ctx.dataDir, "image-url.key"), IMAGE_LOCAL_DIR: join(ctx.dataDir, "images"),
    IMAGE_PUBLIC_BASE_URL: ctx.publicUrl, ...env };
}

export interface ModuleEntry {
  name: string;
  /** The module's own database on the local Postgres. */
  database: string;
  migrationsDir?: string;
  /** Text models the vLLM simulator must serve for this module's seeded catalog. */
  simulatedModels?: Array<{ name: string; maxModelLen: number }>;
  create(env: NodeJS.ProcessEnv, infra: ServiceInfra, ctx: ModuleContext & { comfyUrl: string; publicUrl: string }): Promise<ServiceModule>;
  /** Runs once the API port serves (e.g. dev bootstrap: first admin, invite codes). */
  afterStart?(mod: ServiceModule, ctx: ModuleContext): Promise<void>;
}

/** Invite codes `make dev` keeps ready for new accounts. */
const DEV_INVITES = 5;

export const MODULES: ModuleEntry[] = [
  {
    name: "auth",
    database: "luna_auth",
    migrationsDir: auth.migrationsDir,
    async create(env, infra, ctx) {
      const admin = devAdmin(env, ctx.dataDir);
      ctx.notes.push(`  first admin                    ${admin.email}` + (admin.file ? ` (password in ${admin.file})` : ""));
      const config = loadConfig(auth.authConfigSchema, {
        AUTH_KEY_ENCRYPTION_KEY: devSecret(ctx.dataDir, "auth-key-encryption.key"), ...env,
        AUTH_ADMIN_EMAIL: admin.email, AUTH_ADMIN_PASSWORD: admin.password });
      return auth.createAuthModule(config, infra);
    },
    async afterStart(mod, ctx) {
      const invitesFile = join(ctx.dataDir, "invites.txt");
      const codes = await (mod as auth.AuthModule).bootstrapDev({ inviteCount: DEV_INVITES, invitesFile });
      ctx.notes.push(`  invite codes (${invitesFile})`);
      for (const code of codes) ctx.notes.push(`    ${code}`);
    },
  },
  {
    name: "billing",
    database: "luna_billing",
    migrationsDir: billing.migrationsDir,
    create: (env, infra) => billing.createBillingModule(loadConfig(billing.billingConfigSchema, env), infra),
  },
  {
    name: "model-registry",
    database: "luna_models",
    migrationsDir: registry.migrationsDir,
    // The seeded catalog's text models, so the registry's health probe finds each one served.
    simulatedModels: registry.defaultCatalog({ vllmUrl: "http://unused", comfyuiUrl: "http://unused" }).models
      .filter((m) => m.kind === "TEXT").map((m) => ({ name: m.id, maxModelLen: m.contextWindow })),
    create: (env, infra) => registry.createModelRegistryModule(loadConfig(registry.configSchema, env), infra),
  },
  {
    // After billing and model-registry: it resolves their in-process transports when it is built.
    name: "chat-router",
    database: "luna_chat",
    migrationsDir: chat.migrationsDir,
    create: (env, infra) => chat.createChatRouterModule(loadConfig(chat.chatRouterConfigSchema, env), infra),
  },
  {
    // With one image worker in-process (as the sidecar next to each ComfyUI in the cluster), pointed at the
    // simulator unless LUNA_COMFYUI_URL names a real ComfyUI.
    name: "image-job",
    database: "luna_images",
    migrationsDir: image.migrationsDir,
    async create(env, infra, ctx) {
      const mod = await image.createImageJobModule(loadConfig(image.configSchema, devImageEnv(env, ctx)), infra);
      const worker = image.createImageWorker(loadConfig(image.workerConfigSchema, { ...env, COMFYUI_URL: ctx.comfyUrl }), {
        log: infra.log.child({ component: "image-worker" }), nats: infra.nats, js: infra.js,
        transport: infra.clients.transport("image-job"), store: mod.imageStore, registry: infra.metrics.registry,
      });
      return {
        name: mod.name, routes: (r) => mod.routes(r), authRules: mod.authRules, http: mod.http, readiness: mod.readiness,
        async start() {
          await mod.start();
          await worker.start();
        },
        async stop() {
          await worker.stop();
          await mod.stop();
        },
      };
    },
  },
];
