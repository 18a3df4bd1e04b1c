// Billing as its own process: config, dependencies and lifecycle come from the kit's service runtime.
import { runService } from "@luna/kit";
import { billingConfigSchema } from "./config.js";
import { createBillingModule, migrationsDir } from "./index.js";

await runService({
  name: "billing",
  configSchema: billingConfigSchema,
  create: createBillingModule,
  migrationsDir,
});
