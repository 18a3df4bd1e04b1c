// The environment variables each Luna program reads, from the services' own zod config schemas (the single source
// of truth; services validate their environment with them at start). Charts may set only these.
import { runtimeConfigSchema } from "@luna/kit";
import { authConfigSchema } from "../../services/auth/src/config.js";
import { billingConfigSchema } from "../../services/billing/src/config.js";
import { chatRouterConfigSchema } from "../../services/chat-router/src/config.js";
import { configSchema as imageJobConfigSchema } from "../../services/image-job/src/config.js";
import { workerConfigSchema } from "../../services/image-job/src/worker/config.js";
import { configSchema as modelRegistryConfigSchema } from "../../services/model-registry/src/config.js";

const keys = (...schemas: { shape: Record<string, unknown> }[]) => [...new Set(schemas.flatMap((s) => Object.keys(s.shape)))].sort();

/** Variables per program (the image's PROGRAM), the kit's runtime variables included. */
export const SERVICE_ENV: Readonly<Record<string, readonly string[]>> = {
  auth: keys(runtimeConfigSchema, authConfigSchema),
  billing: keys(runtimeConfigSchema, billingConfigSchema),
  "model-registry": keys(runtimeConfigSchema, modelRegistryConfigSchema),
  "chat-router": keys(runtimeConfigSchema, chatRouterConfigSchema),
  "image-job": keys(runtimeConfigSchema, imageJobConfigSchema),
  "image-worker": keys(runtimeConfigSchema, workerConfigSchema),
};

/** Variables read by libraries rather than a zod schema: OpenTelemetry's standard OTEL_* and Node's own. */
export const EXTERNAL_ENV = /^(OTEL_[A-Z0-9_]+|NODE_OPTIONS|NODE_EXTRA_CA_CERTS|TZ)$/;

/** Whether `program` reads variable `name`. */
export function programReads(program: string, name: string): boolean {
  const known = SERVICE_ENV[program];
  if (!known) throw new Error(`unknown program ${program}`);
  return known.includes(name) || EXTERNAL_ENV.test(name);
}
