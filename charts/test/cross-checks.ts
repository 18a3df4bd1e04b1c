// Cross-object checks over a rendered release (what helm-unittest would do elsewhere): each returns a list of
// problems, empty when the objects agree. charts.test.ts runs them on every render and shows each one failing on a
// deliberately broken copy.
import type { K8sObject } from "@luna/kube-check";
import { PROGRAMS } from "../../tools/images/src/programs.js";
import { programReads, SERVICE_ENV } from "./service-env.js";

type Labels = Record<string, string>;
interface Container {
  name: string; image?: string; args?: string[]; command?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown> };
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[] }; seccompProfile?: { type?: string } };
  livenessProbe?: unknown; readinessProbe?: unknown; startupProbe?: unknown;
  lifecycle?: { preStop?: { sleep?: { seconds: number } } };
}
interface PodSpec {
  containers: Container[]; initContainers?: Container[];
  securityContext?: Record<string, unknown> & { seccompProfile?: { type?: string } };
  terminationGracePeriodSeconds?: number;
}
/** A pod the release creates: from a workload's template, or a bare Pod (helm test). */
export interface RenderedPod { owner: string; kind: string; name: string; labels: Labels; spec: PodSpec; hook?: string }

const id = (o: K8sObject) => `${o.kind}/${o.metadata?.name}`;
const spec = <T>(o: K8sObject) => (o as { spec?: T }).spec;
const hookOf = (o: K8sObject) => o.metadata?.annotations?.["helm.sh/hook"];

/** Every pod template in the objects (Deployments, StatefulSets, DaemonSets, Jobs, bare Pods). */
export function podsOf(objects: readonly K8sObject[]): RenderedPod[] {
  const pods: RenderedPod[] = [];
  for (const o of objects) {
    if (["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind ?? "")) {
      const t = spec<{ template?: { metadata?: { labels?: Labels }; spec?: PodSpec } }>(o)?.template;
      if (t?.spec) pods.push({ owner: id(o), kind: o.kind!, name: o.metadata?.name ?? "", labels: t.metadata?.labels ?? {}, spec: t.spec, hook: hookOf(o) });
    } else if (o.kind === "Pod") {
      pods.push({ owner: id(o), kind: "Pod", name: o.metadata?.name ?? "", labels: o.metadata?.labels ?? {}, spec: spec<PodSpec>(o)!, hook: hookOf(o) });
    }
  }
  return pods;
}

interface LabelSelector { matchLabels?: Labels; matchExpressions?: { key: string; operator: string; values?: string[] }[] }
export function selects(sel: LabelSelector | Labels | undefined, labels: Labels): boolean {
  if (!sel) return false;
  const s: LabelSelector = "matchLabels" in sel || "matchExpressions" in sel ? (sel as LabelSelector) : { matchLabels: sel as Labels };
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of s.matchExpressions ?? []) {
    const has = k(labels, e.key);
    if (e.operator === "In" && !(has && e.values?.includes(labels[e.key]!))) return false;
    if (e.operator === "NotIn" && has && e.values?.includes(labels[e.key]!)) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}
const k = (labels: Labels, key: string) => Object.prototype.hasOwnProperty.call(labels, key);
const containerPortNames = (p: RenderedPod) => new Set(p.spec.containers.flatMap((c) => (c.ports ?? []).map((x) => x.name).filter(Boolean)));
const serving = (pods: RenderedPod[]) => pods.filter((p) => p.kind !== "Job" && p.hook !== "test");

/** Every Service selects at least one pod of the release, and its named target ports exist on those pods. */
export function checkServicesSelectPods(objects: readonly K8sObject[]): string[] {
  const pods = serving(podsOf(objects));
  const out: string[] = [];
  for (const o of objects.filter((x) => x.kind === "Service")) {
    const s = spec<{ type?: string; selector?: Labels; ports?: { name?: string; targetPort?: string | number }[] }>(o);
    if (s?.type === "ExternalName") continue;
    const matched = pods.filter((p) => s?.selector && Object.keys(s.selector).length > 0 && selects(s.selector, p.labels));
    if (matched.length === 0) { out.push(`${id(o)} selects no pod`); continue; }
    for (const port of s?.ports ?? []) {
      if (typeof port.targetPort === "string" && !matched.every((p) => containerPortNames(p).has(port.targetPort as string))) {
        out.push(`${id(o)} port ${port.name}: targetPort ${port.targetPort} is not a container port of ${matched.map((p) => p.owner).join(", ")}`);
      }
    }
  }
  return out;
}

/** Pod-selecting objects (NetworkPolicy, PDB, ServiceMonitor's Service, HPA/ScaledObject targets) find what they mean. */
export function checkSelectorsAndTargets(objects: readonly K8sObject[]): string[] {
  const pods = podsOf(objects);
  const out: string[] = [];
  const byKind = (kind: string) => new Set(objects.filter((o) => o.kind === kind).map((o) => o.metadata?.name));
  for (const o of objects) {
    if (o.kind === "NetworkPolicy") {
      const s = spec<{ podSelector?: LabelSelector; ingress?: { ports?: { port?: string | number }[] }[] }>(o);
      const matched = pods.filter((p) => selects(s?.podSelector, p.labels));
      if (matched.length === 0) out.push(`${id(o)} selects no pod`);
      for (const rule of s?.ingress ?? []) {
        for (const port of rule.ports ?? []) {
          if (typeof port.port === "string" && matched.length > 0 && !matched.some((p) => containerPortNames(p).has(port.port as string))) {
            out.push(`${id(o)} allows port ${port.port}, which no selected pod has`);
          }
        }
      }
    } else if (o.kind === "PodDisruptionBudget") {
      if (!serving(pods).some((p) => selects(spec<{ selector?: LabelSelector }>(o)?.selector, p.labels))) out.push(`${id(o)} selects no pod`);
    } else if (o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject") {
      const ref = spec<{ scaleTargetRef?: { kind?: string; name?: string } }>(o)?.scaleTargetRef;
      const kind = ref?.kind ?? "Deployment";
      if (!byKind(kind).has(ref?.name)) out.push(`${id(o)} targets ${kind}/${ref?.name}, which the release does not render`);
    } else if (o.kind === "PodMonitor") {
      const s = spec<{ selector?: LabelSelector; podMetricsEndpoints?: { port?: string }[] }>(o);
      const matched = serving(pods).filter((p) => selects(s?.selector, p.labels));
      if (matched.length === 0) out.push(`${id(o)} selects no pod`);
      for (const e of s?.podMetricsEndpoints ?? []) {
        if (e.port && !matched.every((p) => containerPortNames(p).has(e.port!))) out.push(`${id(o)} scrapes port ${e.port}, which its pods lack`);
      }
    } else if (o.kind === "ServiceMonitor") {
      const s = spec<{ selector?: LabelSelector; endpoints?: { port?: string }[] }>(o);
      const svcs = objects.filter((x) => x.kind === "Service" && selects(s?.selector, x.metadata?.labels ?? {}));
      if (svcs.length !== 1) out.push(`${id(o)} selects ${svcs.length} Services (want exactly one: a second doubles every series)`);
      for (const e of s?.endpoints ?? []) {
        if (!svcs.every((v) => spec<{ ports?: { name?: string }[] }>(v)?.ports?.some((p) => p.name === e.port))) out.push(`${id(o)} scrapes port ${e.port}, which its Service lacks`);
      }
    }
  }
  return out;
}

/**
 * NetworkPolicy peers naming a Luna app (`app.kubernetes.io/part-of: luna` + name) select pods the release renders,
 * except apps listed in `absent` (parts disabled in this render). For whole-platform renders (the umbrella).
 */
export function checkNetworkPolicyPeers(objects: readonly K8sObject[], absent: readonly string[] = []): string[] {
  const pods = podsOf(objects);
  const out: string[] = [];
  for (const o of objects.filter((x) => x.kind === "NetworkPolicy")) {
    const s = spec<{ ingress?: { from?: { podSelector?: LabelSelector; namespaceSelector?: unknown }[] }[]; egress?: { to?: { podSelector?: LabelSelector; namespaceSelector?: unknown }[] }[] }>(o);
    const peers = [...(s?.ingress ?? []).flatMap((r) => r.from ?? []), ...(s?.egress ?? []).flatMap((r) => r.to ?? [])];
    for (const peer of peers) {
      const ml = peer.podSelector?.matchLabels;
      if (!ml || peer.namespaceSelector || ml["app.kubernetes.io/part-of"] !== "luna") continue;
      const app = ml["app.kubernetes.io/name"];
      if (app && absent.includes(app)) continue;
      if (!pods.some((p) => selects(peer.podSelector, p.labels))) out.push(`${id(o)}: peer ${JSON.stringify(ml)} matches no pod of the platform`);
    }
  }
  return out;
}

/** No workload without probes (long-running ones), resources, and the hardened security context. */
export function checkWorkloadsHardened(objects: readonly K8sObject[]): string[] {
  const out: string[] = [];
  for (const p of podsOf(objects)) {
    const podSc = p.spec.securityContext ?? {};
    for (const c of [...p.spec.containers, ...(p.spec.initContainers ?? [])]) {
      const where = `${p.owner} container ${c.name}`;
      const sc = c.securityContext ?? {};
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory || !c.resources?.limits?.memory) out.push(`${where}: resources need cpu/memory requests and a memory limit`);
      if (sc.readOnlyRootFilesystem !== true) out.push(`${where}: readOnlyRootFilesystem must be true`);
      if (sc.allowPrivilegeEscalation !== false) out.push(`${where}: allowPrivilegeEscalation must be false`);
      if (!c.securityContext?.capabilities?.drop?.includes("ALL")) out.push(`${where}: capabilities must drop ALL`);
      if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) out.push(`${where}: runAsNonRoot must be true`);
      if ((c.securityContext?.seccompProfile?.type ?? podSc.seccompProfile?.type) !== "RuntimeDefault") out.push(`${where}: seccompProfile must be RuntimeDefault`);
      if (sc.privileged === true) out.push(`${where}: privileged`);
    }
    if (p.kind === "Deployment" || p.kind === "StatefulSet") {
      for (const c of p.spec.containers) {
        if (!c.livenessProbe || !c.readinessProbe) out.push(`${p.owner} container ${c.name}: liveness and readiness probes are required`);
      }
    }
  }
  return out;
}

const LUNA_IMAGE = /(?:^|\/)luna\/([a-z0-9-]+)(?::|@|$)/;
/** The programs the root Dockerfile builds and the ports each listens on (tools/images, the images issue). */
const PROGRAM_PORTS = new Map(PROGRAMS.map((p) => [p.name, p.ports]));
export const LUNA_PROGRAMS = [...PROGRAM_PORTS.keys()];

function containerEnv(c: Container, configMaps: Map<string, Record<string, string>>): { vars: Map<string, string | undefined>; missing: string[] } {
  const vars = new Map<string, string | undefined>();
  const missing: string[] = [];
  for (const f of c.envFrom ?? []) {
    if (f.configMapRef) {
      const data = configMaps.get(f.configMapRef.name);
      if (!data) missing.push(`ConfigMap/${f.configMapRef.name}`);
      for (const [k2, v] of Object.entries(data ?? {})) vars.set(k2, v);
    }
  }
  for (const e of c.env ?? []) vars.set(e.name, e.value);
  return { vars, missing };
}

/**
 * Luna containers: the image is a known program; every variable set is one the program reads (its zod config);
 * LUNA_PORT / LUNA_ADMIN_PORT agree with the container ports named api/admin; the pod's termination grace exceeds
 * the preStop sleep plus LUNA_SHUTDOWN_GRACE.
 */
export function checkLunaContainers(objects: readonly K8sObject[]): string[] {
  const configMaps = new Map(objects.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata!.name!, ((o as { data?: Record<string, string> }).data ?? {})]));
  const out: string[] = [];
  for (const p of podsOf(objects)) {
    for (const c of p.spec.containers) {
      const m = LUNA_IMAGE.exec(c.image ?? "");
      if (!m) continue;
      const program = m[1]!;
      const where = `${p.owner} container ${c.name} (luna/${program})`;
      if (!LUNA_PROGRAMS.includes(program)) { out.push(`${where}: no such Luna image program`); continue; }
      const { vars, missing } = containerEnv(c, configMaps);
      for (const x of missing) out.push(`${where}: envFrom ${x} is not rendered`);
      if (p.hook === "test") continue; // helm test pods run `node -e` in the image, not the program
      if (SERVICE_ENV[program]) {
        for (const name of vars.keys()) if (!programReads(program, name)) out.push(`${where}: sets ${name}, which ${program} does not read`);
      } else if (program === "migrate") {
        for (const name of vars.keys()) if (name !== "DATABASE_URL") out.push(`${where}: sets ${name}; luna-migrate reads DATABASE_URL only`);
        if (!vars.has("DATABASE_URL")) out.push(`${where}: DATABASE_URL is not set`);
      }
      const ports = new Map((c.ports ?? []).map((x) => [x.name, x.containerPort]));
      if (SERVICE_ENV[program] && program !== "migrate") {
        const admin = Number(vars.get("LUNA_ADMIN_PORT") ?? 9090);
        if (ports.get("admin") !== admin) out.push(`${where}: container port admin ${ports.get("admin")} but LUNA_ADMIN_PORT ${admin}`);
        if (program !== "image-worker") {
          const api = Number(vars.get("LUNA_PORT") ?? 8080);
          if (ports.get("api") !== api) out.push(`${where}: container port api ${ports.get("api")} but LUNA_PORT ${api}`);
        }
        if (p.kind === "Deployment") {
          const grace = /^(\d+)s$/.exec(vars.get("LUNA_SHUTDOWN_GRACE") ?? "10s");
          const need = (c.lifecycle?.preStop?.sleep?.seconds ?? 0) + Number(grace?.[1] ?? 10);
          if ((p.spec.terminationGracePeriodSeconds ?? 30) <= need) {
            out.push(`${where}: terminationGracePeriodSeconds ${p.spec.terminationGracePeriodSeconds ?? 30} must exceed preStop + LUNA_SHUTDOWN_GRACE (${need}s)`);
          }
          // Only containers behind a Service (an api port) need the sleep; the image worker is a queue consumer.
          if (ports.has("api") && !c.lifecycle?.preStop) out.push(`${where}: no preStop (endpoint removal must reach clients before SIGTERM)`);
        }
      }
      // Declared container ports are ports the image listens on. (Not the reverse: sim-comfyui, like ComfyUI,
      // listens on 127.0.0.1 for its sidecar and declares none.)
      for (const [name, port] of ports) {
        if (!PROGRAM_PORTS.get(program)!.includes(port)) out.push(`${where}: container port ${name ?? ""} ${port} is not one the image listens on (${PROGRAM_PORTS.get(program)!.join(", ") || "none"}; Envoy and the kit's URLs assume those)`);
      }
    }
  }
  return out;
}

/**
 * Migrations: a Deployment that sets LUNA_MIGRATE_ON_START=false relies on the hook Job; that Job must exist, run
 * pre-install and pre-upgrade (before the Deployment is applied), run `--service <name>` with luna/migrate, and read
 * DATABASE_URL from a Secret (not from an object of the same release: hooks run before those exist).
 */
export function checkMigrationsHook(objects: readonly K8sObject[]): string[] {
  const configMaps = new Map(objects.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata!.name!, ((o as { data?: Record<string, string> }).data ?? {})]));
  const releaseObjects = new Set(objects.filter((o) => !hookOf(o)).map((o) => `${o.kind}/${o.metadata?.name}`));
  const jobs = podsOf(objects).filter((p) => p.kind === "Job");
  const out: string[] = [];
  for (const p of podsOf(objects).filter((x) => x.kind === "Deployment")) {
    for (const c of p.spec.containers) {
      const m = LUNA_IMAGE.exec(c.image ?? "");
      if (!m || !SERVICE_ENV[m[1]!]) continue;
      const { vars } = containerEnv(c, configMaps);
      if (vars.get("LUNA_MIGRATE_ON_START") !== "false") continue;
      const service = m[1]!;
      const job = jobs.find((j) => j.spec.containers.some((jc) => /(?:^|\/)luna\/migrate(?::|@)/.test(jc.image ?? "") && jc.args?.[0] === "--service" && jc.args[1] === service));
      if (!job) { out.push(`${p.owner}: LUNA_MIGRATE_ON_START=false but no luna/migrate Job runs --service ${service}`); continue; }
      const hooks = (job.hook ?? "").split(",").map((h) => h.trim());
      if (!hooks.includes("pre-install") || !hooks.includes("pre-upgrade")) out.push(`${job.owner}: must be a pre-install,pre-upgrade hook (is ${job.hook ?? "not a hook"})`);
      for (const jc of job.spec.containers) {
        const db = jc.env?.find((e) => e.name === "DATABASE_URL");
        const ref = db?.valueFrom?.secretKeyRef;
        if (!ref) out.push(`${job.owner}: DATABASE_URL must come from a Secret`);
        else if (releaseObjects.has(`Secret/${ref.name}`)) out.push(`${job.owner}: reads Secret/${ref.name}, which the release itself creates after the hook`);
        for (const f of jc.envFrom ?? []) {
          const ref2 = f.configMapRef ? `ConfigMap/${f.configMapRef.name}` : `Secret/${f.secretRef?.name}`;
          if (releaseObjects.has(ref2)) out.push(`${job.owner}: envFrom ${ref2}, which the release creates after the hook`);
        }
      }
    }
  }
  return out;
}

/**
 * PodDisruptionBudgets that a node drain can satisfy: with the workload at its minimum size (replicas, or the
 * HPA's minReplicas), at least one pod may be evicted — else `kubectl drain` blocks forever.
 */
export function checkDisruptionBudgets(objects: readonly K8sObject[]): string[] {
  const out: string[] = [];
  const workloads = objects.filter((o) => o.kind === "Deployment" || o.kind === "StatefulSet");
  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    const s = spec<{ selector?: LabelSelector; minAvailable?: number | string; maxUnavailable?: number | string }>(pdb)!;
    for (const w of workloads) {
      const t = spec<{ replicas?: number; template?: { metadata?: { labels?: Labels } } }>(w);
      if (!selects(s.selector, t?.template?.metadata?.labels ?? {})) continue;
      const hpa = objects.find((o) => (o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject")
        && spec<{ scaleTargetRef?: { name?: string } }>(o)?.scaleTargetRef?.name === w.metadata?.name);
      const hs = hpa && spec<{ minReplicas?: number; minReplicaCount?: number }>(hpa);
      const min = hs ? (hs.minReplicas ?? hs.minReplicaCount ?? 1) : (t?.replicas ?? 1);
      if (min === 0) continue; // scaled to zero: nothing to protect
      const evictable = typeof s.maxUnavailable === "number" ? s.maxUnavailable
        : typeof s.minAvailable === "number" ? min - s.minAvailable
          : typeof s.maxUnavailable === "string" ? Math.floor((min * parseInt(s.maxUnavailable, 10)) / 100)
            : typeof s.minAvailable === "string" ? min - Math.ceil((min * parseInt(s.minAvailable, 10)) / 100) : 1;
      if (evictable < 1) out.push(`${id(pdb)}: with ${id(w)} at ${min} replica(s) no pod may be evicted (a node drain would block)`);
    }
  }
  return out;
}

/** All cross-object checks. */
export function crossCheck(objects: readonly K8sObject[]): string[] {
  return [
    ...checkServicesSelectPods(objects), ...checkSelectorsAndTargets(objects), ...checkWorkloadsHardened(objects),
    ...checkLunaContainers(objects), ...checkMigrationsHook(objects), ...checkDisruptionBudgets(objects),
  ];
}
