// What a cluster needs before Luna (k8s/): the luna-infra chart, the values of the third-party releases, the
// namespaces, the kind cluster and k8s/bootstrap.sh — rendered with the real helm and validated with the same
// checks as the charts (@luna/kube-check), CloudNativePG objects against the operator's own CRD schemas. Each
// check is also shown failing on a deliberately broken input.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv } from "ajv";
import { parse, parseAllDocuments } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { KUBE_VERSION, ensureHelm, formatIssues, helmResult, renderChart, validateObjects, type K8sObject } from "@luna/kube-check";
import { FREE_FORM_KEYS, isCustomResource, unknownValueKeys, validateCustomResource } from "./infra-lib.js";
import { repoRoot } from "./skaffold-lib.js";

const SERVICES = readdirSync(join(repoRoot, "services"), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
const INFRA_CHART = "k8s/charts/luna-infra";
const read = (f: string): string => readFileSync(join(repoRoot, f), "utf8");
const yamlFile = (f: string): Record<string, unknown> => (parse(read(f)) ?? {}) as Record<string, unknown>;

/** kube-check for standard kinds, the CRD schemas for CloudNativePG's. */
async function validateAll(objects: K8sObject[]): Promise<string[]> {
  const std = objects.filter((o) => !isCustomResource(o));
  const issues = (await validateObjects(std)).map((i) => `${i.object}: ${i.path} ${i.message}`);
  for (const o of objects.filter(isCustomResource)) issues.push(...validateCustomResource(o));
  return issues;
}

const byKind = (objects: K8sObject[], kind: string): K8sObject[] => objects.filter((o) => o.kind === kind);

/** The labels CloudNativePG 1.30 puts on a cluster's instance pods (pkg/specs/pods.go, pkg/utils/labels_annotations.go). */
function cnpgInstanceLabels(cluster: string): Record<string, string> {
  return {
    "cnpg.io/cluster": cluster, "cnpg.io/podRole": "instance", "app.kubernetes.io/name": "postgresql",
    "app.kubernetes.io/instance": cluster, "app.kubernetes.io/component": "database", "app.kubernetes.io/managed-by": "cloudnative-pg",
  };
}
type Any = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

beforeAll(async () => {
  await ensureHelm();
}, 180_000);

describe("luna-infra chart (Postgres clusters, Redis, object storage)", () => {
  it.each([
    ["defaults (production)", []],
    ["kind", ["k8s/values/infra-kind.yaml"]],
  ] as const)("lints and renders valid objects: %s", async (_name, valuesFiles) => {
    const lint = await helmResult(["lint", "--strict", join(repoRoot, INFRA_CHART), ...valuesFiles.flatMap((f) => ["-f", join(repoRoot, f)])]);
    expect(lint.code, lint.stdout + lint.stderr).toBe(0);
    for (const set of [{}, { "postgres.backups.enabled": "true" }] as Array<Record<string, string>>) {
      const { objects } = await renderChart(INFRA_CHART, { release: "luna-infra", valuesFiles, set });
      expect(await validateAll(objects)).toEqual([]);
      // One CloudNativePG cluster per service, database and owner named after it.
      const clusters = byKind(objects, "Cluster") as Any[];
      expect(clusters.map((c) => c.metadata.name).sort()).toEqual(SERVICES.map((s) => `pg-${s}`).sort());
      for (const c of clusters) {
        const svc = c.metadata.name.slice(3).replaceAll("-", "_");
        expect(c.spec.bootstrap.initdb).toEqual({ database: svc, owner: svc });
      }
      if ("postgres.backups.enabled" in set) expect(byKind(objects, "ScheduledBackup")).toHaveLength(SERVICES.length);
    }
  });

  it("production: 3 instances with a synchronous standby each; kind: one instance, no synchronous replication", async () => {
    const prod = byKind((await renderChart(INFRA_CHART, { release: "luna-infra" })).objects, "Cluster") as Any[];
    for (const c of prod) {
      expect(c.spec.instances).toBe(3);
      expect(c.spec.postgresql.synchronous).toMatchObject({ method: "any", number: 1 });
      expect(c.spec.enablePDB).toBe(true);
    }
    const kind = byKind((await renderChart(INFRA_CHART, { release: "luna-infra", valuesFiles: ["k8s/values/infra-kind.yaml"] })).objects, "Cluster") as Any[];
    for (const c of kind) {
      expect(c.spec.instances).toBe(1);
      expect(c.spec.postgresql.synchronous).toBeUndefined();
      expect(c.spec.walStorage).toBeUndefined();
    }
  });

  it("names, ports and labels are the ones the service charts expect by default", async () => {
    const { objects } = await renderChart(INFRA_CHART, { release: "luna-infra" });
    const services = new Map((byKind(objects, "Service") as Any[]).map((s) => [s.metadata.name, s]));
    const deployments = byKind(objects, "Deployment") as Any[];
    for (const svc of SERVICES) {
      const values = yamlFile(`charts/${svc}/values.yaml`) as Any;
      const env: Record<string, string> = values.env ?? {};
      for (const [key, url] of Object.entries(env)) {
        if (!["REDIS_URL", "IMAGE_S3_ENDPOINT"].includes(key)) continue;
        const u = new URL(url);
        const target = services.get(u.hostname);
        expect(target, `${svc} ${key}=${url}: no Service ${u.hostname} in luna-infra`).toBeDefined();
        expect(target!.spec.ports.map((p: Any) => p.port), `${svc} ${key}`).toContain(Number(u.port));
      }
      // The charts' NetworkPolicies let the services reach pods with these labels.
      const redisTo = values.networkPolicy?.egress?.redis?.to ?? [];
      for (const peer of redisTo) {
        const want = peer.podSelector?.matchLabels ?? {};
        expect(deployments.some((d) => Object.entries(want).every(([k, v]) => d.spec.template.metadata.labels[k] === v)), `${svc}: no Redis pod labelled ${JSON.stringify(want)}`).toBe(true);
      }
      // The service's Postgres peer must select the instance pods of its cluster.
      for (const peer of values.networkPolicy?.egress?.postgres?.to ?? []) {
        const want: Record<string, string> = peer.podSelector?.matchLabels ?? {};
        const labels = cnpgInstanceLabels(`pg-${svc}`);
        expect(Object.entries(want).every(([k, v]) => labels[k] === v), `${svc}: ${JSON.stringify(want)} selects no pod of pg-${svc} (${JSON.stringify(labels)})`).toBe(true);
      }
      // A peer for another cluster's pods, or a role instance pods do not have, selects nothing.
      expect(Object.entries({ "cnpg.io/podRole": "primary" }).every(([k, v]) => cnpgInstanceLabels(`pg-${svc}`)[k] === v)).toBe(false);
    }
  });

  it("fails on a misspelled Cluster field, a wrong type, a bad enum and an unknown field in a Deployment", async () => {
    const { objects } = await renderChart(INFRA_CHART, { release: "luna-infra", set: { "postgres.backups.enabled": "true" } });
    const cluster = structuredClone(byKind(objects, "Cluster")[0]!) as Any;
    cluster.spec.instance = 3;
    expect(validateCustomResource(cluster).join("\n")).toMatch(/must NOT have additional properties 'instance'/);
    const wrongType = structuredClone(byKind(objects, "Cluster")[0]!) as Any;
    wrongType.spec.instances = "three";
    expect(validateCustomResource(wrongType).join("\n")).toMatch(/\/spec\/instances must be integer/);
    const backup = structuredClone(byKind(objects, "ScheduledBackup")[0]!) as Any;
    backup.spec.method = "snapshot";
    expect(validateCustomResource(backup).join("\n")).toMatch(/\/spec\/method must be equal to one of the allowed values/);
    const deep = structuredClone(byKind(objects, "Cluster")[0]!) as Any;
    deep.spec.bootstrap.initdb.databse = "x";
    expect(validateCustomResource(deep).join("\n")).toMatch(/'databse'/);
    const redis = structuredClone(byKind(objects, "Deployment").find((d) => d.metadata?.name === "redis")!) as Any;
    redis.spec.template.spec.containers[0].imagePullPolice = "Always";
    expect(formatIssues(await validateObjects([redis]))).toMatch(/imagePullPolice/);
  });
});

/** Durability and reachability settings NATS must have (docs/DEPLOY.md#nats-durability); issues, empty = fine. */
function natsIssues(objects: K8sObject[]): string[] {
  const issues: string[] = [];
  const sts = byKind(objects, "StatefulSet")[0] as Any | undefined;
  if (!sts || sts.spec.replicas !== 3) issues.push(`NATS must run 3 servers (StatefulSet replicas ${sts?.spec.replicas})`);
  const conf = String((byKind(objects, "ConfigMap")[0] as Any | undefined)?.data?.["nats.conf"] ?? "");
  // The chart renders the server configuration as JSON (with << >> size literals).
  const js = /"jetstream":\s*\{([^}]*)\}/.exec(conf)?.[1] ?? "";
  if (!/"store_dir":\s*"\/data"/.test(js)) issues.push("JetStream must use file storage");
  if (!/"sync_interval":\s*"always"/.test(js)) issues.push("JetStream must fsync every write (sync_interval: always)");
  if (!/"cluster":\s*\{/.test(conf)) issues.push("NATS must be clustered");
  const svc = (byKind(objects, "Service") as Any[]).find((s) => s.metadata.name === "nats");
  const ports = (svc?.spec.ports ?? []).map((p: Any) => p.port);
  if (!ports.includes(4222)) issues.push("Service nats must expose 4222 (the services' NATS_URL)");
  if (!ports.includes(8222)) issues.push("Service nats must expose the monitoring port 8222 (KEDA's nats-jetstream scaler)");
  const pvc = (sts?.spec.volumeClaimTemplates ?? []) as Any[];
  if (!pvc.length) issues.push("JetStream needs a volume per server");
  return issues;
}

describe("NATS values (the official chart, vendored at the pinned version)", () => {
  const chart = "k8s/vendor/nats-2.14.2.tgz";

  it.each([
    ["production", ["k8s/values/nats.yaml"]],
    ["kind", ["k8s/values/nats.yaml", "k8s/values/nats-kind.yaml"]],
  ] as const)("%s: 3 clustered servers, JetStream on files with sync_interval: always, monitoring for KEDA; valid objects", async (_n, valuesFiles) => {
    const { objects } = await renderChart(chart, { release: "nats", valuesFiles });
    expect(natsIssues(objects)).toEqual([]);
    expect(await validateAll(objects.filter((o) => o.kind !== "Pod"))).toEqual([]);
    const sts = byKind(objects, "StatefulSet")[0] as Any;
    expect(sts.spec.template.metadata.labels["app.kubernetes.io/name"]).toBe("nats"); // the services' NetworkPolicy peer
  });

  it("fails without sync_interval, with one server, or without the monitoring port", async () => {
    const dir = mkdtempSync(join(tmpdir(), "luna-nats-"));
    try {
      const write = (name: string, fn: (v: Any) => void): string => {
        const v = yamlFile("k8s/values/nats.yaml") as Any;
        fn(v);
        const f = join(dir, name);
        writeFileSync(f, JSON.stringify(v));
        return f;
      };
      const noSync = write("nosync.yaml", (v) => delete v.config.jetstream.merge);
      expect(natsIssues((await renderChart(chart, { release: "nats", valuesFiles: [noSync] })).objects)).toEqual(["JetStream must fsync every write (sync_interval: always)"]);
      const single = write("single.yaml", (v) => (v.config.cluster.enabled = false));
      expect(natsIssues((await renderChart(chart, { release: "nats", valuesFiles: [single] })).objects).join("\n")).toMatch(/3 servers[\s\S]*clustered/);
      const noMonitor = write("nomon.yaml", (v) => delete v.service);
      expect(natsIssues((await renderChart(chart, { release: "nats", valuesFiles: [noMonitor] })).objects)).toEqual([expect.stringMatching(/monitoring port 8222/)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("values of the other third-party releases", () => {
  // Each file's keys must exist in the chart's own defaults (Helm ignores unknown keys); the cnpg chart also has a schema.
  const cases: Array<[string, string]> = [
    ["k8s/values/cnpg.yaml", "k8s/vendor/values/cloudnative-pg-0.29.0.yaml"],
    ["k8s/values/keda.yaml", "k8s/vendor/values/keda-2.20.2.yaml"],
    ["k8s/values/kube-prometheus-stack.yaml", "k8s/vendor/values/kube-prometheus-stack-88.5.3.yaml"],
    ["k8s/values/kube-prometheus-stack-kind.yaml", "k8s/vendor/values/kube-prometheus-stack-88.5.3.yaml"],
    ["k8s/values/nvidia-device-plugin.yaml", "k8s/vendor/values/nvidia-device-plugin-0.20.0.yaml"],
  ];

  it.each(cases)("%s: every key exists in the chart's values", (file, defaults) => {
    expect(unknownValueKeys(yamlFile(file), yamlFile(defaults), FREE_FORM_KEYS)).toEqual([]);
  });

  it("k8s/values/cnpg.yaml validates against the operator chart's values.schema.json", () => {
    const ajv = new Ajv({ allErrors: true, strict: false });
    const validate = ajv.compile(JSON.parse(read("k8s/schemas/cnpg-operator-values.schema.json")) as object);
    expect(validate(yamlFile("k8s/values/cnpg.yaml")), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ ...yamlFile("k8s/values/cnpg.yaml"), replicaCount: "two" })).toBe(false);
  });

  it("fails on a misspelled key, at the top and deep down", () => {
    const kps = yamlFile("k8s/vendor/values/kube-prometheus-stack-88.5.3.yaml");
    expect(unknownValueKeys({ grafana: { sidecar: { dashboard: { enabled: true } } } }, kps, FREE_FORM_KEYS)).toEqual(["grafana.sidecar.dashboard"]);
    expect(unknownValueKeys({ prometheusSpec: {} }, kps, FREE_FORM_KEYS)).toEqual(["prometheusSpec"]);
    // Free-form maps are not checked below their key.
    expect(unknownValueKeys({ prometheus: { prometheusSpec: { resources: { requests: { cpu: "1" } } } } }, kps, FREE_FORM_KEYS)).toEqual([]);
  });

  it("kube-prometheus-stack loads the charts' dashboards from Luna's namespace and selects release=kube-prometheus-stack", () => {
    const v = yamlFile("k8s/values/kube-prometheus-stack.yaml") as Any;
    expect(v.grafana.sidecar.dashboards).toMatchObject({ enabled: true, label: "grafana_dashboard", labelValue: "1", searchNamespace: "ALL" });
    // The release name is the selector the charts' ServiceMonitors carry (default serviceMonitorSelector: release=<name>).
    expect(read("k8s/bootstrap.sh")).toMatch(/helm_release kube-prometheus-stack monitoring/);
  });
});

describe("namespaces and the kind cluster", () => {
  it("k8s/namespaces.yaml holds valid Namespaces, luna among them", async () => {
    const objects = parseAllDocuments(read("k8s/namespaces.yaml")).map((d) => d.toJS() as K8sObject);
    expect(await validateAll(objects)).toEqual([]);
    expect(objects.map((o) => o.metadata?.name)).toEqual(expect.arrayContaining(["luna", "monitoring", "keda", "cnpg-system"]));
    expect(await validateAll([{ ...objects[0]!, metadata: { name: "Luna_NS" } }])).not.toEqual([]);
  });

  it("the kind cluster runs the Kubernetes minor the charts are rendered for", () => {
    const cfg = yamlFile("k8s/kind/cluster.yaml") as Any;
    expect(cfg).toMatchObject({ kind: "Cluster", apiVersion: "kind.x-k8s.io/v1alpha4", name: "luna" });
    const minor = KUBE_VERSION.split(".").slice(0, 2).join(".");
    for (const n of cfg.nodes) expect(n.image, "pin every node image").toMatch(new RegExp(`^kindest/node:v${minor.replace(".", "\\.")}\\.\\d+`));
    expect(cfg.nodes.filter((n: Any) => n.role === "control-plane")).toHaveLength(1);
  });
});

describe("k8s/bootstrap.sh", () => {
  const script = join(repoRoot, "k8s/bootstrap.sh");
  const dryRun = (file: string, ...args: string[]): string => execFileSync("bash", [file, "--dry-run", ...args], { encoding: "utf8" });
  /** The releases and waits a dry run performs, in order. */
  const plan = (out: string): string[] => [...out.matchAll(/^\s+\+ (helm upgrade --install (\S+)|kubectl -n \S+ wait \S+ (\S+)|set key (\S+) in secret (\S+)|kubectl apply -f \S+\/(\S+))/gm)]
    .map((m) => m[2] ?? (m[3] ? `wait ${m[3]}` : m[4] ? `secret ${m[5]}/${m[4]}` : `apply ${m[6]}`));

  it("is valid bash and refuses unknown steps, options and profiles", () => {
    execFileSync("bash", ["-n", script]);
    expect(spawnSync("bash", [script, "--dry-run", "bogus"]).status).toBe(2);
    expect(spawnSync("bash", [script, "--dry-run", "--profile", "gke"]).status).toBe(2);
    expect(spawnSync("bash", [script, "--frobnicate"]).status).toBe(2);
    expect(execFileSync("bash", [script, "--help"], { encoding: "utf8" })).toMatch(/Steps: namespaces monitoring operators/);
  });

  it.each(["kind", "gpu"])("installs in dependency order (profile %s)", (profile) => {
    const steps = plan(dryRun(script, "--profile", profile));
    const at = (s: string): number => {
      const i = steps.indexOf(s);
      expect(i, `${s} in ${steps.join(", ")}`).toBeGreaterThanOrEqual(0);
      return i;
    };
    expect(at("apply namespaces.yaml")).toBe(0);
    // The Prometheus operator's CRDs come first: the other releases ship PodMonitors and ServiceMonitors.
    for (const r of ["cnpg", "keda", "nats", "luna-infra"]) expect(at("kube-prometheus-stack")).toBeLessThan(at(r));
    expect(at("cnpg")).toBeLessThan(at("luna-infra")); // CloudNativePG's CRDs before the Clusters
    expect(at("secret luna-object-store/MINIO_ROOT_PASSWORD")).toBeLessThan(at("luna-infra")); // MinIO reads it
    for (const s of SERVICES) {
      expect(at(`secret ${s}-secrets/LUNA_INTERNAL_KEY`)).toBeLessThan(at("luna-infra"));
      expect(at(`wait clusters.postgresql.cnpg.io/pg-${s}`)).toBeLessThan(at(`secret ${s}-secrets/DATABASE_URL`));
    }
    expect(steps.includes("nvidia-device-plugin")).toBe(profile === "gpu");
    expect(steps.filter((s) => s.startsWith("secret auth-secrets/")).map((s) => s.split("/")[1]))
      .toEqual(expect.arrayContaining(["LUNA_INTERNAL_KEY", "AUTH_KEY_ENCRYPTION_KEY", "DATABASE_URL"]));
    expect(steps).toEqual(expect.arrayContaining(["secret image-job-secrets/IMAGE_URL_SECRET"]));
  });

  it("fails the order check when a step moves (the luna-infra release before the CloudNativePG operator)", () => {
    const dir = mkdtempSync(join(tmpdir(), "luna-bootstrap-"));
    try {
      const broken = join(dir, "bootstrap.sh");
      const text = read("k8s/bootstrap.sh").replace("ALL_STEPS=(namespaces monitoring operators secrets nats infra", "ALL_STEPS=(namespaces monitoring secrets nats infra operators");
      writeFileSync(broken, text.replace('ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"', `ROOT=${JSON.stringify(repoRoot)}`));
      const steps = plan(dryRun(broken, "--profile", "kind"));
      expect(steps.indexOf("cnpg")).toBeGreaterThan(steps.indexOf("luna-infra"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("pins the chart versions the offline checks use, and every values file it names exists", () => {
    const text = read("k8s/bootstrap.sh");
    const version = (v: string): string => new RegExp(`${v}_VERSION=(\\S+)`).exec(text)?.[1] ?? "?";
    expect(readdirSync(join(repoRoot, "k8s/vendor"))).toContain(`nats-${version("NATS")}.tgz`);
    const vendored = readdirSync(join(repoRoot, "k8s/vendor/values"));
    expect(vendored).toEqual(expect.arrayContaining([`keda-${version("KEDA")}.yaml`, `kube-prometheus-stack-${version("KPS")}.yaml`,
      `nvidia-device-plugin-${version("NVDP")}.yaml`, `cloudnative-pg-${version("CNPG")}.yaml`]));
    const named = [...text.matchAll(/k8s\/values\/[a-z0-9-]+\.yaml/g)].map((m) => m[0]);
    for (const f of named) expect(() => read(f), f).not.toThrow();
    // Every values file for a bootstrap release is used: named, or the -kind variant of a named one.
    for (const f of readdirSync(join(repoRoot, "k8s/values")).filter((x) => x.endsWith(".yaml"))) {
      const used = named.includes(`k8s/values/${f}`) || named.includes(`k8s/values/${f.replace(/-kind\.yaml$/, ".yaml")}`);
      expect(used, `k8s/values/${f} is used by k8s/bootstrap.sh`).toBe(true);
    }
  });
});
