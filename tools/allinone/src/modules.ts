// The services hosted by the all-in-one process, in start order (a module may call the ones before it).
import type { ServiceInfra, ServiceModule } from "@luna/kit";

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

export const MODULES: ModuleEntry[] = [];
