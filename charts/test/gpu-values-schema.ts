// values.schema.json of the GPU pool charts (vllm, comfyui), generated: the per-model/per-pool settings are written
// once and used for both `defaults` and each list entry (draft-07 cannot extend a closed object), and the variable
// names come from the programs themselves (the image worker's zod config, the simulators' flag tables), so a
// misspelled variable fails `helm lint/template/install` at the schema.
// Write: `node --conditions=luna-source --import tsx charts/test/gpu-values-schema.ts`; gpu-*.test.ts fail when a
// committed schema differs from this output.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { envName as simVllmEnv, helpText as simVllmHelp } from "../../tools/sim-vllm/src/cli.js";
import { SETTINGS as SIM_COMFY_SETTINGS, envName as simComfyEnv } from "../../tools/sim-comfyui/src/config.js";
import { SERVICE_ENV } from "./service-env.js";

type Schema = Record<string, unknown>;
const str = { type: "string" }, bool = { type: "boolean" };
const int = (min = 0, max?: number): Schema => ({ type: "integer", minimum: min, ...(max !== undefined ? { maximum: max } : {}) });
const obj = (properties: Schema, required: string[] = [], extra: boolean | Schema = false): Schema =>
  ({ type: "object", properties, ...(required.length ? { required } : {}), additionalProperties: extra });
const quantity = { type: ["string", "number"], pattern: "^[0-9.]+([eE][0-9]+|[a-zA-Z]{0,2})?$" };
const duration = { type: "string", pattern: "^([0-9]+(ms|s|m|h|d))+$" };
const image = obj({ registry: str, repository: { type: "string", minLength: 1 }, tag: { type: ["string", "number"] },
  digest: { type: "string", pattern: "^(|sha256:[a-f0-9]{64})$" }, pullPolicy: { enum: ["Always", "IfNotPresent", "Never"] } }, ["repository"]);
const probe = obj({ initialDelaySeconds: int(), periodSeconds: int(1), timeoutSeconds: int(1), failureThreshold: int(1), successThreshold: int(1) });
const resources = obj({ requests: obj({}, [], quantity), limits: obj({}, [], quantity), claims: { type: "array" } });
const scalar = { type: ["string", "number", "boolean"] };
const dnsLabel = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const gpu = obj({ count: int(1, 16), resourceName: { type: "string", pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$" } });
const storage = (extra: Schema = {}) => obj({ enabled: bool, existingClaim: str, size: quantity, storageClassName: str,
  accessModes: { type: "array", minItems: 1, items: { enum: ["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"] } },
  mountPath: { type: "string", pattern: "^/[^:]*$" }, keep: bool, ...extra });
const scheduling = {
  strategy: { type: "object" }, nodeSelector: obj({}, [], str), runtimeClassName: str, priorityClassName: str,
  tolerations: { type: "array", items: { type: "object" } }, affinity: { type: "object" },
  podAnnotations: obj({}, [], str), podLabels: obj({}, [], str),
};
const keda = { enabled: bool, minReplicaCount: int(0), maxReplicaCount: int(1), pollingInterval: int(1), cooldownPeriod: int(0),
  scaleDownStabilizationSeconds: int(0, 3600), scaleDownPodsPerMinute: int(1) };
/** Environment maps: exactly `names`, minus those the chart sets itself. */
const envOf = (names: readonly string[], chartSets: readonly string[] = []): Schema => ({
  type: "object", properties: Object.fromEntries(names.filter((n) => !chartSets.includes(n)).map((n) => [n, scalar])), additionalProperties: false,
});
const common = (): Schema => ({
  enabled: { type: "boolean", description: "Read by the umbrella chart's dependency condition." },
  global: { type: "object", properties: { imageRegistry: str, imageTag: { type: ["string", "number"] }, imagePullSecrets: { type: "array" } } },
  "luna-lib": { type: "object", description: "Helm adds the library dependency's (empty) values here." },
  nameOverride: { type: "string", maxLength: 63 },
  fullnameOverride: { type: "string", maxLength: 63 },
  commonLabels: obj({}, [], str),
  imagePullSecrets: { type: "array", items: { type: ["string", "object"] } },
  image,
  port: int(1, 65535),
  podSecurityContext: { type: "object" },
  securityContext: { type: "object" },
  tmpSizeLimit: quantity,
});
const monitor = obj({ enabled: bool, interval: duration, scrapeTimeout: duration, labels: obj({}, [], str) });

/** The vllm chart's values schema. */
export function vllmValuesSchema(): Schema {
  const simEnv = [...new Set([...simVllmHelp().matchAll(/SIM_VLLM_[A-Z0-9_]+/g)].map((m) => m[0]))].sort();
  const numStr = { type: ["string", "number"], pattern: "^[0-9]+(\\.[0-9]+)?$", description: "A number (KEDA wants strings; numbers are quoted)" };
  const modelSettings: Schema = {
    replicaCount: int(0), gpu, resources, shmSizeLimit: quantity, modelCache: storage(),
    extraArgs: { type: "array", items: str },
    env: { type: "object", propertyNames: { pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }, additionalProperties: scalar },
    probes: obj({ startup: probe, readiness: probe, liveness: probe }),
    terminationGracePeriodSeconds: int(0, 3600),
    ...scheduling,
    autoscaling: obj({ ...keda, waitingThreshold: numStr, activationWaitingThreshold: numStr,
      prometheusAddress: { type: "string", pattern: "^https?://[^\\s]+$" }, scopeToNamespace: bool,
      scaleToZero: obj({ enabled: bool, coldStartSeconds: int(1), demandWindow: duration }) }),
  };
  const model = obj({
    name: { type: "string", pattern: dnsLabel, maxLength: 46, description: "DNS label; objects are vllm-<name>" },
    servedModelName: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9._:/-]*$", maxLength: 200, description: "Catalog model id = vLLM --served-model-name = model_name label" },
    model: { type: "string", minLength: 1, description: "Hugging Face id or a path in the model cache" },
    maxModelLen: int(1), tensorParallelSize: int(1, 16), ...modelSettings,
  }, ["name", "servedModelName", "model"]);
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "Luna vllm chart values",
    description: "Generated by charts/test/gpu-values-schema.ts; do not edit by hand.",
    type: "object",
    additionalProperties: false,
    required: ["image", "simulator", "port", "defaults", "models", "networkPolicy", "podMonitor", "tests"],
    properties: {
      ...common(),
      simulator: obj({ enabled: bool, image, env: envOf(simEnv, [simVllmEnv("host"), simVllmEnv("port"), simVllmEnv("model"), "SIM_VLLM_MODELS"]), resources }),
      existingSecret: str,
      defaults: obj(modelSettings, ["gpu", "resources", "modelCache", "probes", "autoscaling"]),
      models: { type: "array", minItems: 1, items: model },
      networkPolicy: obj({ enabled: bool, clientApps: { type: "array", items: { type: "string", pattern: dnsLabel } },
        healthApps: { type: "array", items: { type: "string", pattern: dnsLabel } }, metricsFrom: { type: "array", items: { type: "object" } } }),
      podMonitor: monitor,
      tests: obj({ image }),
    },
  };
}

/** The comfyui chart's values schema. */
export function comfyuiValuesSchema(): Schema {
  const numStr = { type: ["string", "number"], pattern: "^[0-9]+$", description: "A whole number (KEDA wants strings; numbers are quoted)" };
  const poolSettings: Schema = {
    replicaCount: int(0), gpu, resources, shmSizeLimit: quantity, modelStorage: storage({ readOnly: bool }),
    drainSeconds: { ...int(0, 3600), description: "On SIGTERM a running job may finish for this long (IMAGE_WORKER_DRAIN_TIMEOUT) before it is handed back; 0 = at once" },
    terminationGracePeriodSeconds: { type: "integer", minimum: 50, maximum: 3600, description: "Covers drainSeconds plus the worker's shutdown steps (45 s)" },
    probes: obj({ startup: probe, readiness: probe, liveness: probe }),
    ...scheduling,
    autoscaling: obj({ ...keda, lagThreshold: numStr, activationLagThreshold: numStr,
      natsMonitoringEndpoint: { type: "string", pattern: "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[0-9]{1,5}$", description: "host:port, no scheme" },
      account: { type: "string", minLength: 1 },
      scaleToZero: obj({ enabled: bool, coldStartSeconds: int(1) }) }),
  };
  const pool = obj({
    name: { type: "string", pattern: dnsLabel, maxLength: 40, description: "DNS label; objects are comfyui-<name>" },
    pool: { type: "string", pattern: "^[a-z0-9][a-z0-9.-]{0,63}$", description: "The catalog's image model id (IMAGE_WORKER_POOLS)" },
    ...poolSettings,
  }, ["name", "pool"]);
  const simEnv = SIM_COMFY_SETTINGS.map((s) => simComfyEnv(s.flag));
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    title: "Luna comfyui chart values",
    description: "Generated by charts/test/gpu-values-schema.ts; do not edit by hand.",
    type: "object",
    additionalProperties: false,
    required: ["image", "comfyui", "simulator", "port", "worker", "defaults", "pools", "networkPolicy", "podMonitor"],
    properties: {
      ...common(),
      comfyui: obj({ command: { type: "array", minItems: 1, items: str }, extraArgs: { type: "array", items: str },
        env: { type: "object", propertyNames: { pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }, additionalProperties: scalar },
        probeCommand: { type: "array", minItems: 1, items: str },
        waitForWorkerCommand: { type: "array", minItems: 1, items: str } }, ["command", "probeCommand", "waitForWorkerCommand"]),
      simulator: obj({ enabled: bool, image, env: envOf(simEnv, [simComfyEnv("host"), simComfyEnv("port")]), resources }),
      worker: obj({ image, adminPort: int(1, 65535),
        env: { ...envOf(SERVICE_ENV["image-worker"]!, ["COMFYUI_URL", "IMAGE_WORKER_POOLS", "LUNA_ADMIN_PORT"]),
          description: "Variables image-worker reads (its zod config); the chart sets COMFYUI_URL, IMAGE_WORKER_POOLS and LUNA_ADMIN_PORT" },
        resources, probes: obj({ readiness: probe, liveness: probe }) }, ["image", "adminPort"]),
      existingSecret: str,
      secretEnv: { type: "array", items: obj({ name: { enum: SERVICE_ENV["image-worker"] }, key: str, optional: bool }, ["name"]) },
      defaults: obj(poolSettings, ["gpu", "resources", "modelStorage", "probes", "autoscaling", "drainSeconds", "terminationGracePeriodSeconds"]),
      pools: { type: "array", minItems: 1, items: pool },
      networkPolicy: obj({ enabled: bool, healthApps: { type: "array", items: { type: "string", pattern: dnsLabel } },
        metricsFrom: { type: "array", items: { type: "object" } } }),
      podMonitor: monitor,
    },
  };
}

export const GPU_SCHEMAS: Readonly<Record<string, () => Schema>> = { vllm: vllmValuesSchema, comfyui: comfyuiValuesSchema };

/** The file content of charts/<chart>/values.schema.json. */
export function gpuValuesSchemaText(chart: string): string {
  const make = GPU_SCHEMAS[chart];
  if (!make) throw new Error(`not a GPU pool chart: ${chart}`);
  return `${JSON.stringify(make(), null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const chartsDir = join(dirname(fileURLToPath(import.meta.url)), "..");
  for (const chart of Object.keys(GPU_SCHEMAS)) {
    writeFileSync(join(chartsDir, chart, "values.schema.json"), gpuValuesSchemaText(chart));
    console.log(`wrote charts/${chart}/values.schema.json`);
  }
}
