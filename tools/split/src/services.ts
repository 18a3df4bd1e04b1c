// The processes of the split platform: each service's own `src/main.ts` (exactly what its container runs, compiled),
// plus the image worker. A process is started only when its entry file exists, so the platform grows as services land.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { ServiceName } from "@luna/kit";
import { MODULES } from "@luna/allinone";

/** One process of the split platform. */
export interface SplitProcessSpec {
  /** Log prefix and key; a ServiceName for API services. */
  name: string;
  /** The service it is (API services) — the key of LUNA_SERVICE_URLS and of gateway routes. */
  service?: ServiceName;
  /** Entry file, relative to the repository root. */
  entry: string;
  /** The service's own database (same name as in the all-in-one process); none for the worker. */
  database?: string;
  /** Serves an API port (the worker only has its admin port). */
  api: boolean;
  /**
   * Start wave: a wave starts once every process of the waves before it is ready (a service calls the ones before it
   * while starting), and stops in reverse order (chat-router can still commit a stopped reply to billing).
   */
  wave: number;
}

// Database names used when the all-in-one process does not host a service yet (MODULES wins when it does).
const FALLBACK_DATABASES: Record<ServiceName, string> = {
  auth: "luna_auth",
  billing: "luna_billing",
  "model-registry": "luna_models",
  "chat-router": "luna_chat",
  "image-job": "luna_images",
};

function api(service: ServiceName, wave: number): SplitProcessSpec {
  const database = MODULES.find((m) => m.name === service)?.database ?? FALLBACK_DATABASES[service];
  return { name: service, service, entry: `services/${service}/src/main.ts`, database, api: true, wave };
}

/** Every process the split platform knows, in start order. */
export const SPLIT_PROCESSES: readonly SplitProcessSpec[] = [
  api("auth", 0),
  api("billing", 0),
  api("model-registry", 0),
  api("chat-router", 1),
  api("image-job", 1),
  { name: "image-worker", entry: "services/image-job/src/worker/main.ts", api: false, wave: 2 },
];

/**
 * The processes whose entry file exists under `repoRoot`, optionally limited to `only` (names). An unknown name in
 * `only` is an error, so a typo does not silently start less.
 */
export function discoverProcesses(repoRoot: string, only?: readonly string[]): SplitProcessSpec[] {
  if (only && only.length > 0) {
    const unknown = only.filter((n) => !SPLIT_PROCESSES.some((p) => p.name === n));
    if (unknown.length > 0) {
      throw new Error(`unknown service ${unknown.map((n) => `"${n}"`).join(", ")}: known are ${SPLIT_PROCESSES.map((p) => p.name).join(", ")}`);
    }
  }
  return SPLIT_PROCESSES.filter((p) => (!only || only.length === 0 || only.includes(p.name)) && existsSync(join(repoRoot, p.entry)));
}

/** The databases the given processes need (create them before starting the platform). */
export function splitDatabases(processes: readonly SplitProcessSpec[]): string[] {
  return processes.flatMap((p) => (p.database ? [p.database] : []));
}
