// image-job as its own process: the kit reads the shared configuration, applies migrations and hosts the module.
import { runService } from "@luna/kit";
import { configSchema, createImageJobModule, migrationsDir } from "./index.js";

await runService({ name: "image-job", configSchema, create: createImageJobModule, migrationsDir });
