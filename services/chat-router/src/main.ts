// chat-router as its own process: config, dependencies and lifecycle come from the kit's service runtime.
import { runService } from "@luna/kit";
import { chatRouterConfigSchema } from "./config.js";
import { createChatRouterModule, migrationsDir } from "./index.js";

await runService({
  name: "chat-router",
  configSchema: chatRouterConfigSchema,
  create: (config, infra) => createChatRouterModule(config, infra),
  migrationsDir,
});
