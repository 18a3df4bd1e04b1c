// A NetworkPolicy evaluator (Kubernetes semantics, pod and namespace selectors; ipBlocks are ignored): may a pod
// open a TCP connection to another pod's port? Used to assert the platform's reachability matrix — who reaches which
// port — on the whole rendered platform, rather than reading selectors by eye.
import type { K8sObject } from "@luna/kube-check";
import { podsOf, selects } from "./cross-checks.js";
import type { RenderedPod } from "./cross-checks.js";

type Labels = Record<string, string>;
interface Selector { matchLabels?: Labels; matchExpressions?: { key: string; operator: string; values?: string[] }[] }
interface Peer { podSelector?: Selector; namespaceSelector?: Selector; ipBlock?: unknown }
interface PortRule { port?: number | string; protocol?: string; endPort?: number }
interface Rule { ports?: PortRule[]; from?: Peer[]; to?: Peer[] }
interface PolicySpec { podSelector: Selector; policyTypes?: string[]; ingress?: Rule[]; egress?: Rule[] }

/** A pod somewhere in the cluster: its labels, its namespace's labels, and its named container ports. */
export interface Endpoint { labels: Labels; namespace: string; namespaceLabels?: Labels; ports?: Record<string, number> }

const matchesSelector = (sel: Selector, labels: Labels) => (Object.keys(sel.matchLabels ?? {}).length === 0 && !(sel.matchExpressions?.length)) || selects(sel, labels);

function peerMatches(peer: Peer, other: Endpoint, policyNamespace: string): boolean {
  if (peer.ipBlock) return false;
  const nsLabels = { "kubernetes.io/metadata.name": other.namespace, ...(other.namespaceLabels ?? {}) };
  const nsOk = peer.namespaceSelector ? matchesSelector(peer.namespaceSelector, nsLabels) : other.namespace === policyNamespace;
  const podOk = peer.podSelector ? matchesSelector(peer.podSelector, other.labels) : true;
  return nsOk && podOk;
}

function portMatches(rule: Rule, port: number, target: Endpoint): boolean {
  if (!rule.ports || rule.ports.length === 0) return true;
  return rule.ports.some((p) => {
    if ((p.protocol ?? "TCP") !== "TCP") return false;
    if (p.port === undefined) return true;
    if (typeof p.port === "string") return target.ports?.[p.port] === port;
    return p.endPort ? port >= p.port && port <= p.endPort : p.port === port;
  });
}

export class NetworkPolicies {
  private readonly policies: { namespace: string; spec: PolicySpec }[];
  constructor(objects: readonly K8sObject[], readonly namespace = "luna") {
    // Hook policies (the migrations Job's) exist only while hooks run; they are evaluated like the others.
    this.policies = objects.filter((o) => o.kind === "NetworkPolicy").map((o) => ({ namespace: o.metadata?.namespace ?? namespace, spec: (o as { spec: PolicySpec }).spec }));
  }

  private applying(pod: Endpoint, type: "Ingress" | "Egress") {
    return this.policies.filter((p) => p.namespace === pod.namespace && matchesSelector(p.spec.podSelector, pod.labels)
      && (p.spec.policyTypes ?? (type === "Ingress" ? ["Ingress"] : p.spec.egress ? ["Egress"] : [])).includes(type));
  }

  /** Whether `from` may connect to `to` on TCP `port` (both its egress and the target's ingress allow it). */
  allowed(from: Endpoint, to: Endpoint, port: number): boolean {
    const egress = this.applying(from, "Egress");
    const egressOk = egress.length === 0 || egress.some((p) => (p.spec.egress ?? []).some((r) =>
      portMatches(r, port, to) && (!r.to || r.to.length === 0 || r.to.some((peer) => peerMatches(peer, to, p.namespace)))));
    const ingress = this.applying(to, "Ingress");
    const ingressOk = ingress.length === 0 || ingress.some((p) => (p.spec.ingress ?? []).some((r) =>
      portMatches(r, port, to) && (!r.from || r.from.length === 0 || r.from.some((peer) => peerMatches(peer, from, p.namespace)))));
    return egressOk && ingressOk;
  }
}

/** The platform's long-running pods as endpoints, keyed by app name (app.kubernetes.io/name; the first pod of each). */
export function platformEndpoints(objects: readonly K8sObject[], namespace = "luna"): Map<string, Endpoint & { pod: RenderedPod }> {
  const out = new Map<string, Endpoint & { pod: RenderedPod }>();
  for (const p of podsOf(objects)) {
    if (p.kind === "Job" || p.hook) continue;
    const app = p.labels["app.kubernetes.io/name"];
    if (!app || out.has(app)) continue;
    const ports = Object.fromEntries(p.spec.containers.flatMap((c) => (c.ports ?? []).filter((x) => x.name).map((x) => [x.name!, x.containerPort])));
    out.set(app, { labels: p.labels, namespace, ports, pod: p });
  }
  return out;
}
