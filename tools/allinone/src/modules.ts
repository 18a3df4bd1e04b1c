// The services hosted by the all-in-one process, in start order (a module may call the ones before it).
import { loadConfig, type ServiceInfra, type ServiceModule } from "@luna/kit";
import * as registry from "@luna/model-registry";

export interface ModuleContext {
  /** The local data dir (.luna). */
  dataDir: string;
  /** Lines to print in the start-up summary (invite codes, first admin). */
  notes: string[];
}

export interface ModuleEntry {
  name: string;
  /** The module's own database on the local Postgres. */
  database: string;
  migrationsDir?: string;
  /** Text models the vLLM simulator must serve for this module's seeded catalog. */
  simulatedModels?: Array<{ name: string; maxModelLen: number }>;
  create(env: NodeJS.ProcessEnv, infra: ServiceInfra, ctx: ModuleContext): Promise<ServiceModule>;
  /** Runs once the API port serves (e.g. dev bootstrap: first admin, invite codes). */
  afterStart?(mod: ServiceModule, ctx: ModuleContext): Promise<void>;
}

export const MODULES: ModuleEntry[] = [
  {
    name: "model-registry",
    database: "luna_models",
    migrationsDir: registry.migrationsDir,
    // The seeded catalog's text models, so the registry's health probe finds each one served.
    simulatedModels: registry.defaultCatalog({ vllmUrl: "http://unused", comfyuiUrl: "http://unused" }).models
      .filter((m) => m.kind === "TEXT").map((m) => ({ name: m.id, maxModelLen: m.contextWindow })),
    create: (env, infra) => registry.createModelRegistryModule(loadConfig(registry.configSchema, env), infra),
  },
];
