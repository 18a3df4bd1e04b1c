// The auth service as its own process: the kit's runtime reads the environment (this service's AUTH_* schema plus
// the common variables), applies migrations, connects Postgres/Redis/NATS and serves the module until SIGTERM.
import { runService } from "@luna/kit";
import { authConfigSchema, createAuthModule, migrationsDir } from "./index.js";

await runService({
  name: "auth",
  configSchema: authConfigSchema,
  create: (config, infra) => createAuthModule(config, infra),
  migrationsDir,
});
