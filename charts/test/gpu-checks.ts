// Checks of the GPU pool charts (vllm, comfyui) over rendered objects, beyond the generic ones in cross-checks.ts:
// each returns a list of problems (empty = fine); charts.test.ts runs them on every ci render (GPU_CHART_CHECKS)
// and gpu-*.test.ts show each failing on a deliberately broken copy.
import type { K8sObject } from "@luna/kube-check";
import { helpText as simVllmHelp, parseCli as parseSimVllm } from "../../tools/sim-vllm/src/cli.js";
import { parseConfig as parseSimComfy, SETTINGS as SIM_COMFY_SETTINGS, envName as simComfyEnv } from "../../tools/sim-comfyui/src/config.js";
import { IMAGE_JOBS_STREAM } from "@luna/kit";
import { poolDurable } from "../../services/image-job/src/domain/job.js";
import { podsOf, selects, type RenderedPod } from "./cross-checks.js";
import { programReads } from "./service-env.js";

type Labels = Record<string, string>;
type Env = { name: string; value?: string; valueFrom?: unknown };
type Container = NonNullable<RenderedPod["spec"]["containers"]>[number] & {
  env?: Env[]; args?: string[]; command?: string[];
  volumeMounts?: { name: string; mountPath: string }[];
  startupProbe?: Probe; readinessProbe?: Probe; livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] } } };
};
type Probe = { httpGet?: { path?: string; port?: string | number }; periodSeconds?: number; failureThreshold?: number; tcpSocket?: unknown };
type Volume = { name: string; emptyDir?: { medium?: string; sizeLimit?: string }; persistentVolumeClaim?: { claimName: string } };
type Trigger = { type: string; name?: string; metricType?: string; metadata: Record<string, string> };
type ScaledObjectSpec = {
  scaleTargetRef: { kind?: string; name: string }; minReplicaCount?: number; maxReplicaCount?: number; cooldownPeriod?: number;
  advanced?: { horizontalPodAutoscalerConfig?: { behavior?: { scaleDown?: { stabilizationWindowSeconds?: number } } } };
  triggers: Trigger[];
};

const spec = <T>(o: K8sObject) => (o as unknown as { spec: T }).spec;
const id = (o: K8sObject) => `${o.kind}/${o.metadata?.name}`;
const deployments = (objects: readonly K8sObject[]) => objects.filter((o) => o.kind === "Deployment");
const podOf = (d: K8sObject) => spec<{ template: { metadata: { labels: Labels }; spec: RenderedPod["spec"] & { volumes?: Volume[]; terminationGracePeriodSeconds?: number } } }>(d).template;
const envOf = (c: Container) => new Map((c.env ?? []).map((e) => [e.name, e.value]));
const scaledObjects = (objects: readonly K8sObject[]) => objects.filter((o) => o.kind === "ScaledObject");
const soFor = (objects: readonly K8sObject[], deployment: string) =>
  scaledObjects(objects).find((s) => spec<ScaledObjectSpec>(s).scaleTargetRef.name === deployment && (spec<ScaledObjectSpec>(s).scaleTargetRef.kind ?? "Deployment") === "Deployment");

/** The model a vLLM (or simulator) container serves: --served-model-name, or the simulator's SIM_VLLM_MODEL name. */
export function servedModel(c: Container): string | undefined {
  const arg = (c.args ?? []).find((a) => a.startsWith("--served-model-name="));
  if (arg) return arg.slice("--served-model-name=".length);
  return envOf(c).get("SIM_VLLM_MODEL")?.split(",")[0]?.split(":")[0];
}

/** The simulators' images set these (root Dockerfile); the pod's env comes on top. */
const SIM_VLLM_IMAGE_ENV = { SIM_VLLM_HOST: "0.0.0.0", SIM_VLLM_PORT: "8000" };
const SIM_COMFYUI_IMAGE_ENV = { SIM_COMFYUI_HOST: "0.0.0.0", SIM_COMFYUI_PORT: "8188" };

const isSimulator = (c: Container) => /(?:^|\/)luna\/sim-vllm[:@]/.test(c.image ?? "");
const seconds = (p?: Probe) => (p?.periodSeconds ?? 10) * (p?.failureThreshold ?? 3);

/**
 * vLLM pods: probes on /health (startup long enough to load a model: ≥ 5 min for vLLM, the simulator less), GPU limits
 * for vLLM and none for the simulator, /dev/shm as a memory emptyDir, the model cache claim rendered (or an existing
 * claim), the simulator's SIM_VLLM_* variables known to it and parsed by its own parser, its port the container's.
 */
export function checkVllmPods(objects: readonly K8sObject[], opts: { gpuResource?: string } = {}): string[] {
  const gpu = opts.gpuResource ?? "nvidia.com/gpu";
  const pvcs = new Set(objects.filter((o) => o.kind === "PersistentVolumeClaim").map((o) => o.metadata?.name));
  const knownSimEnv = new Set([...simVllmHelp().matchAll(/SIM_VLLM_[A-Z0-9_]+/g)].map((m) => m[0]));
  const out: string[] = [];
  for (const d of deployments(objects)) {
    const t = podOf(d);
    for (const c of t.spec.containers as Container[]) {
      if (c.name !== "vllm") continue;
      const where = `${id(d)} container vllm`;
      const sim = isSimulator(c);
      for (const [kind, p] of [["startup", c.startupProbe], ["readiness", c.readinessProbe], ["liveness", c.livenessProbe]] as const) {
        if (p?.httpGet?.path !== "/health") out.push(`${where}: ${kind} probe must GET /health`);
      }
      if (!sim && seconds(c.startupProbe) < 300) out.push(`${where}: startup probe allows ${seconds(c.startupProbe)} s; loading a model needs minutes (≥ 300 s)`);
      const gpus = Number(c.resources?.limits?.[gpu] ?? 0);
      if (!sim && !(gpus >= 1)) out.push(`${where}: no ${gpu} limit`);
      if (sim && c.resources?.limits?.[gpu] !== undefined) out.push(`${where}: the simulator must not request GPUs`);
      const shm = (c.volumeMounts ?? []).find((m) => m.mountPath === "/dev/shm");
      const shmVol = t.spec.volumes?.find((v) => v.name === shm?.name);
      if (shmVol?.emptyDir?.medium !== "Memory") out.push(`${where}: /dev/shm must be a memory emptyDir`);
      for (const v of t.spec.volumes ?? []) {
        const claim = v.persistentVolumeClaim?.claimName;
        if (claim && !pvcs.has(claim) && claim === `${d.metadata?.name}-cache`) out.push(`${where}: claim ${claim} is not rendered`);
      }
      const port = (c.ports ?? []).find((p) => p.name === "http")?.containerPort;
      if (sim) {
        const env = Object.fromEntries(envOf(c));
        for (const name of Object.keys(env)) if (name.startsWith("SIM_VLLM_") && !knownSimEnv.has(name)) out.push(`${where}: sets ${name}, which the simulator does not read`);
        try {
          const parsed = parseSimVllm([], { ...SIM_VLLM_IMAGE_ENV, ...env });
          if (parsed.sim.port !== port) out.push(`${where}: the simulator listens on ${parsed.sim.port}, the container port is ${port}`);
          if (parsed.sim.host !== "0.0.0.0") out.push(`${where}: the simulator listens on ${parsed.sim.host} only`);
        } catch (e) {
          out.push(`${where}: the simulator rejects its environment: ${(e as Error).message}`);
        }
      } else if (!(c.args ?? []).includes(`--port=${port}`)) {
        out.push(`${where}: vLLM's --port is not the container port ${port}`);
      }
      if (!servedModel(c)) out.push(`${where}: no served model name`);
    }
  }
  return out;
}

/**
 * vLLM ScaledObjects: one per vLLM Deployment, which then has no fixed `replicas` (Helm and KEDA would fight); the
 * first trigger is the prometheus scaler on sum(vllm:num_requests_waiting{model_name="<served>"...}) with metricType
 * at trigger level; at minReplicaCount 0 a trigger on chat-router's demand metrics for the same model wakes it, and
 * cooldownPeriod and the HPA scale-down window exceed the cold start (annotation luna.dev/cold-start-seconds).
 */
export function checkVllmScaling(objects: readonly K8sObject[], namespace: string): string[] {
  const out: string[] = [];
  for (const d of deployments(objects)) {
    const c = (podOf(d).spec.containers as Container[]).find((x) => x.name === "vllm");
    if (!c) continue;
    const so = soFor(objects, d.metadata!.name!);
    if (!so) continue;
    const s = spec<ScaledObjectSpec>(so);
    const served = servedModel(c);
    if ((spec<{ replicas?: number }>(d)).replicas !== undefined) out.push(`${id(d)}: sets replicas although ${id(so)} scales it`);
    const queue = s.triggers[0];
    const want = `sum(vllm:num_requests_waiting{model_name="${served}",namespace="${namespace}"})`;
    if (queue?.type !== "prometheus" || queue.metadata.query !== want) out.push(`${id(so)}: first trigger must be prometheus ${want}, is ${queue?.type} ${queue?.metadata.query}`);
    for (const t of s.triggers) {
      if ("metricType" in t.metadata) out.push(`${id(so)}: metricType belongs at trigger level, not in metadata`);
      if (t.metricType !== "AverageValue") out.push(`${id(so)} trigger ${t.name}: metricType must be AverageValue (per replica)`);
    }
    if (s.minReplicaCount === 0) {
      const wake = s.triggers.find((t) => t.metadata.query?.includes("luna_chat_model_waiting_requests"));
      const q = wake?.metadata.query ?? "";
      if (!wake || !q.includes(`luna_chat_model_requests_total{model="${served}"`) || !q.includes(`luna_chat_model_waiting_requests{model="${served}"`)) {
        out.push(`${id(so)}: at minReplicaCount 0 it needs an activation trigger on luna_chat_model_waiting_requests and luna_chat_model_requests_total for model ${served}`);
      } else if (wake.metadata.activationThreshold === undefined) out.push(`${id(so)}: the demand trigger needs an activationThreshold`);
      const cold = Number(so.metadata?.annotations?.["luna.dev/cold-start-seconds"]);
      const stab = s.advanced?.horizontalPodAutoscalerConfig?.behavior?.scaleDown?.stabilizationWindowSeconds ?? 300;
      if (!(cold > 0)) out.push(`${id(so)}: scales to zero without a luna.dev/cold-start-seconds annotation`);
      if (!((s.cooldownPeriod ?? 300) > cold)) out.push(`${id(so)}: cooldownPeriod ${s.cooldownPeriod} must exceed the cold start ${cold} s`);
      if (!(stab > cold)) out.push(`${id(so)}: scale-down stabilization ${stab} s must exceed the cold start ${cold} s`);
    }
  }
  for (const so of scaledObjects(objects)) {
    const ref = spec<ScaledObjectSpec>(so).scaleTargetRef;
    if (!deployments(objects).some((d) => d.metadata?.name === ref.name)) out.push(`${id(so)} targets Deployment/${ref.name}, which is not rendered`);
  }
  return out;
}

/**
 * NetworkPolicy over pods matched by `podLabels`: every such pod is selected by a policy with Ingress, and the Luna
 * apps admitted are exactly `allowedApps` (plus helm test pods and non-Luna peers such as Prometheus' namespace); an
 * empty `from` (anyone) fails. `allowedApps: []` = no Luna app at all.
 */
export function checkIngressOnlyFrom(objects: readonly K8sObject[], podLabels: Labels, allowedApps: readonly string[]): string[] {
  const out: string[] = [];
  const pods = podsOf(objects).filter((p) => p.hook !== "test" && selects(podLabels, p.labels));
  const policies = objects.filter((o) => o.kind === "NetworkPolicy");
  type Peer = { podSelector?: { matchLabels?: Labels }; namespaceSelector?: unknown; ipBlock?: unknown };
  for (const p of pods) {
    const mine = policies.filter((np) => selects(spec<{ podSelector: Labels }>(np).podSelector, p.labels));
    if (mine.length === 0) { out.push(`${p.owner}: no NetworkPolicy selects its pods`); continue; }
    const apps = new Set<string>();
    for (const np of mine) {
      const s = spec<{ policyTypes?: string[]; ingress?: { from?: Peer[] }[] }>(np);
      if (!(s.policyTypes ?? ["Ingress"]).includes("Ingress")) out.push(`${id(np)}: does not restrict ingress`);
      for (const rule of s.ingress ?? []) {
        if (!rule.from || rule.from.length === 0) { out.push(`${id(np)}: an ingress rule without "from" admits everyone`); continue; }
        for (const peer of rule.from) {
          const ml = peer.podSelector?.matchLabels ?? {};
          if (peer.podSelector && !peer.namespaceSelector && Object.keys(ml).length === 0) out.push(`${id(np)}: an empty podSelector admits every pod of the namespace`);
          if (ml["app.kubernetes.io/component"] === "helm-test") continue;
          if (ml["app.kubernetes.io/part-of"] === "luna" && ml["app.kubernetes.io/name"]) apps.add(ml["app.kubernetes.io/name"]);
        }
      }
    }
    const extra = [...apps].filter((a) => !allowedApps.includes(a));
    const missing = allowedApps.filter((a) => !apps.has(a));
    if (extra.length) out.push(`${p.owner}: admits ${extra.join(", ")} (only ${allowedApps.join(", ") || "no Luna app"} may connect)`);
    if (missing.length) out.push(`${p.owner}: does not admit ${missing.join(", ")}`);
  }
  return out;
}

// ---- ComfyUI pools ----

const COMFY_PORT = 8188;
const isComfy = (c: Container) => c.name === "comfyui";
const isWorker = (c: Container) => /(?:^|\/)luna\/image-worker[:@]/.test(c.image ?? "");

/**
 * ComfyUI pool pods: a ComfyUI container listening on 127.0.0.1 only (the simulator via SIM_COMFYUI_HOST, ComfyUI via
 * --listen), never behind a Service port; the image worker as a sidecar that reads only variables it knows, drives
 * http://127.0.0.1:<port>, takes the pool's jobs (IMAGE_WORKER_POOLS), and whose termination grace covers its drain
 * (IMAGE_WORKER_DRAIN_TIMEOUT) and shutdown steps, with ComfyUI kept alive by a preStop that waits for the worker's
 * admin port to close; GPU limits on ComfyUI (not on the simulator); the simulator's env parsed by its own parser.
 */
export function checkComfyPods(objects: readonly K8sObject[], opts: { gpuResource?: string } = {}): string[] {
  const gpu = opts.gpuResource ?? "nvidia.com/gpu";
  const out: string[] = [];
  const knownSimEnv = new Set(SIM_COMFY_SETTINGS.map((s) => simComfyEnv(s.flag)));
  const services = objects.filter((o) => o.kind === "Service");
  for (const d of deployments(objects)) {
    const t = podOf(d);
    const cs = t.spec.containers as Container[];
    const comfy = cs.find(isComfy);
    if (!comfy) continue;
    const where = id(d);
    const worker = cs.find(isWorker);
    if (!worker) { out.push(`${where}: no image-worker sidecar`); continue; }
    const env = Object.fromEntries(envOf(comfy));
    const sim = /(?:^|\/)luna\/sim-comfyui[:@]/.test(comfy.image ?? "");
    let port = COMFY_PORT;
    if (sim) {
      for (const name of Object.keys(env)) if (name.startsWith("SIM_COMFYUI_") && !knownSimEnv.has(name)) out.push(`${where}: sets ${name}, which the ComfyUI simulator does not read`);
      try {
        const cfg = parseSimComfy([], { ...SIM_COMFYUI_IMAGE_ENV, ...env });
        port = cfg.options.port ?? COMFY_PORT;
        if (cfg.options.host !== "127.0.0.1") out.push(`${where}: the ComfyUI simulator listens on ${cfg.options.host}, not 127.0.0.1 only`);
      } catch (e) {
        out.push(`${where}: the ComfyUI simulator rejects its environment: ${(e as Error).message}`);
      }
      if (comfy.resources?.limits?.[gpu] !== undefined) out.push(`${where}: the simulator must not request GPUs`);
    } else {
      const args = [...(comfy.command ?? []), ...(comfy.args ?? [])];
      const listen = args[args.indexOf("--listen") + 1];
      if (!args.includes("--listen") || listen !== "127.0.0.1") out.push(`${where}: ComfyUI must run with --listen 127.0.0.1 (it has no authentication)`);
      const p = args.indexOf("--port");
      if (p >= 0) port = Number(args[p + 1]);
      if (!(Number(comfy.resources?.limits?.[gpu] ?? 0) >= 1)) out.push(`${where}: ComfyUI has no ${gpu} limit`);
    }
    if ((comfy.ports ?? []).length > 0) out.push(`${where}: the ComfyUI container declares ports (it is reachable inside the pod only)`);
    for (const svc of services) {
      const s = spec<{ selector?: Labels; ports?: { port: number; targetPort?: string | number }[] }>(svc);
      if (!s.selector || !selects(s.selector, t.metadata.labels)) continue;
      for (const sp of s.ports ?? []) if (sp.targetPort === port || sp.port === port) out.push(`${id(svc)} exposes ComfyUI's port ${port}`);
    }
    const wenv = envOf(worker);
    for (const name of wenv.keys()) if (!programReads("image-worker", name)) out.push(`${where} worker: sets ${name}, which image-worker does not read`);
    if (wenv.get("COMFYUI_URL") !== `http://127.0.0.1:${port}`) out.push(`${where} worker: COMFYUI_URL ${wenv.get("COMFYUI_URL")} is not http://127.0.0.1:${port}`);
    if (!wenv.get("IMAGE_WORKER_POOLS")) out.push(`${where} worker: IMAGE_WORKER_POOLS is not set`);
    if (!(worker.ports ?? []).some((p) => p.name === "admin" && p.containerPort === Number(wenv.get("LUNA_ADMIN_PORT") ?? 9090))) out.push(`${where} worker: admin port disagrees with LUNA_ADMIN_PORT`);
    if (!worker.readinessProbe || !worker.livenessProbe) out.push(`${where} worker: probes missing`);
    const drain = /^(\d+)s$/.exec(wenv.get("IMAGE_WORKER_DRAIN_TIMEOUT") ?? "0s");
    const drainS = drain ? Number(drain[1]) : Number.NaN;
    if (Number.isNaN(drainS)) out.push(`${where} worker: IMAGE_WORKER_DRAIN_TIMEOUT ${wenv.get("IMAGE_WORKER_DRAIN_TIMEOUT")} is not whole seconds`);
    const grace = t.spec.terminationGracePeriodSeconds ?? 30;
    if (grace < drainS + 45) out.push(`${where}: terminationGracePeriodSeconds ${grace} does not cover the worker's drain (${drainS} s) and shutdown steps (45 s)`);
    const wait = (comfy.lifecycle?.preStop?.exec?.command ?? []).join(" ");
    const adminPort = wenv.get("LUNA_ADMIN_PORT") ?? "9090";
    if (drainS > 0 && !new RegExp(`\\b${adminPort}\\b`).test(wait)) out.push(`${where} comfyui: no preStop waiting for the worker (admin port ${adminPort}) to exit; ComfyUI would stop under a draining job`);
    if (!comfy.readinessProbe || !comfy.startupProbe) out.push(`${where} comfyui: readiness and startup probes required`);
    const mem = Number(/^(\d+)Gi$/.exec(String(t.spec.volumes?.find((v) => v.name === "dshm")?.emptyDir?.sizeLimit ?? ""))?.[1] ?? 0);
    if (!sim && mem < 1) out.push(`${where}: /dev/shm memory emptyDir missing or under 1Gi`);
  }
  return out;
}

/**
 * ComfyUI pool ScaledObjects: the nats-jetstream scaler on the pool's durable consumer of LUNA_IMAGE_JOBS
 * (poolDurable() of image-job, the one image-job creates), monitoring endpoint host:port without a scheme, account
 * $G, lag thresholds set; one per pool Deployment; at minReplicaCount 0 an activation lag threshold.
 */
export function checkComfyScaling(objects: readonly K8sObject[]): string[] {
  const out: string[] = [];
  for (const d of deployments(objects)) {
    const cs = podOf(d).spec.containers as Container[];
    if (!cs.some(isComfy)) continue;
    const worker = cs.find(isWorker);
    const pools = (envOf(worker ?? { name: "" } as Container).get("IMAGE_WORKER_POOLS") ?? "").split(",").filter(Boolean);
    const so = soFor(objects, d.metadata!.name!);
    if (!so) continue;
    const s = spec<ScaledObjectSpec>(so);
    if ((spec<{ replicas?: number }>(d)).replicas !== undefined) out.push(`${id(d)}: sets replicas although ${id(so)} scales it`);
    const nats = s.triggers.filter((t) => t.type === "nats-jetstream");
    for (const pool of pools) {
      const t = nats.find((x) => x.metadata.consumer === poolDurable(pool));
      if (!t) { out.push(`${id(so)}: no nats-jetstream trigger on consumer ${poolDurable(pool)} (pool ${pool})`); continue; }
      const m = t.metadata;
      if (m.stream !== IMAGE_JOBS_STREAM) out.push(`${id(so)}: stream ${m.stream}, not ${IMAGE_JOBS_STREAM}`);
      if (m.account !== "$G") out.push(`${id(so)}: account ${m.account}, not $G (NATS' global account)`);
      if (!/^[a-z0-9.-]+:\d+$/.test(m.natsServerMonitoringEndpoint ?? "")) out.push(`${id(so)}: natsServerMonitoringEndpoint ${m.natsServerMonitoringEndpoint} must be host:port without a scheme`);
      if (!m.lagThreshold) out.push(`${id(so)}: no lagThreshold`);
      if (s.minReplicaCount === 0 && m.activationLagThreshold === undefined) out.push(`${id(so)}: scales to zero without activationLagThreshold`);
      if ("metricType" in m) out.push(`${id(so)}: metricType belongs at trigger level, not in metadata`);
    }
  }
  for (const so of scaledObjects(objects)) {
    const ref = spec<ScaledObjectSpec>(so).scaleTargetRef;
    if (!deployments(objects).some((d) => d.metadata?.name === ref.name)) out.push(`${id(so)} targets Deployment/${ref.name}, which is not rendered`);
  }
  return out;
}

/** Who may reach each pool's pods: chat-router (and the registry's probes) for vLLM, only the registry for ComfyUI. */
export const GPU_POOL_CLIENTS = {
  vllm: { pods: { "app.kubernetes.io/name": "vllm" }, apps: ["chat-router", "model-registry"] },
  comfyui: { pods: { "app.kubernetes.io/name": "comfyui" }, apps: ["model-registry"] },
} as const;

/** The GPU pool checks of each chart, run by charts.test.ts on every ci render beside the generic ones. */
export const GPU_CHART_CHECKS: Record<string, (objects: readonly K8sObject[], namespace: string) => string[]> = {
  vllm: (objects, namespace) => [...checkVllmPods(objects), ...checkVllmScaling(objects, namespace),
    ...checkIngressOnlyFrom(objects, GPU_POOL_CLIENTS.vllm.pods, GPU_POOL_CLIENTS.vllm.apps)],
  comfyui: (objects) => [...checkComfyPods(objects), ...checkComfyScaling(objects),
    ...checkIngressOnlyFrom(objects, GPU_POOL_CLIENTS.comfyui.pods, GPU_POOL_CLIENTS.comfyui.apps)],
};
