import { runService } from "@luna/kit";
import { configSchema, createModelRegistryModule, migrationsDir } from "./index.js";

await runService({ name: "model-registry", configSchema, create: createModelRegistryModule, migrationsDir });
