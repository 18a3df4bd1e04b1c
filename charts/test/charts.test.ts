// Every chart under charts/ with the real helm (v3.17.2, @luna/kube-check): dependency build, lint --strict and
// template for every ci/*-values.yaml, every rendered object validated against the Kubernetes/KEDA/Prometheus-
// operator schemas (unknown fields included), the cross-object checks (and the GPU pool checks for vllm and
// comfyui); every ci/invalid/*.yaml (schema) and ci/invalid-render/*.yaml (template `fail`) refused with the error
// its `# expect-error:` line names. Each check is also shown failing on a deliberately broken render.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { dependencyBuild, formatIssues, helmResult, renderChart, repoRoot, templateArgs, validateObjects } from "@luna/kube-check";
import type { K8sObject } from "@luna/kube-check";
import {
  checkDisruptionBudgets, checkLunaContainers, checkMigrationsHook, checkNetworkPolicyPeers, checkSelectorsAndTargets, checkServicesSelectPods,
  checkWorkloadsHardened, crossCheck, podsOf,
} from "./cross-checks.js";
import { NetworkPolicies, platformEndpoints } from "./netpol.js";
import type { Endpoint } from "./netpol.js";
import { chartRenderer, expectedError } from "./chart-renders.js";
import { GPU_CHART_CHECKS } from "./gpu-checks.js";
import { gpuValuesSchemaText } from "./gpu-values-schema.js";
import { DOCUMENTED_CHARTS, renderReadme, undocumented, unknownParams } from "./values-doc.js";
import { SERVICE_CHARTS, serviceValuesSchemaText } from "./values-schema.js";

const chartsDir = join(repoRoot, "charts");
const isChart = (d: string) => existsSync(join(chartsDir, d, "Chart.yaml"));
const chartType = (d: string) => (parseYaml(readFileSync(join(chartsDir, d, "Chart.yaml"), "utf8")) as { type?: string }).type;
/** Application charts, the umbrella last (it packages the others). */
const CHARTS = readdirSync(chartsDir).filter((d) => isChart(d) && chartType(d) !== "library")
  .sort((a, b) => Number(a === "luna") - Number(b === "luna") || a.localeCompare(b));
const ciFiles = (chart: string, sub = "ci") => {
  const dir = join(chartsDir, chart, sub);
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".yaml")).sort() : [];
};

const renderers = new Map<string, ReturnType<typeof chartRenderer>>();
/** helm template of a chart with one ci file, once per run. */
function rendered(chart: string, values?: string): Promise<K8sObject[]> {
  let render = renderers.get(chart);
  if (!render) renderers.set(chart, (render = chartRenderer(chart)));
  return render(values);
}
const clone = <T>(x: T): T => structuredClone(x);

beforeAll(async () => {
  for (const chart of CHARTS) await dependencyBuild(`charts/${chart}`);
}, 300_000);

describe.each(CHARTS)("chart %s", (chart) => {
  it("has the files every chart ships (schema, NOTES, helm tests, ci values incl. defaults)", () => {
    for (const f of ["values.yaml", "values.schema.json", "templates/NOTES.txt"]) expect(existsSync(join(chartsDir, chart, f)), f).toBe(true);
    expect(readdirSync(join(chartsDir, chart, "templates", "tests")).length).toBeGreaterThan(0);
    expect(ciFiles(chart)).toContain("default-values.yaml");
    expect(ciFiles(chart, "ci/invalid").length).toBeGreaterThan(0);
    const schema = JSON.parse(readFileSync(join(chartsDir, chart, "values.schema.json"), "utf8")) as { $schema?: string };
    expect(schema.$schema).toBe("http://json-schema.org/draft-07/schema#");
  });

  it.each(ciFiles(chart))("ci/%s: lint --strict, template, schemas, cross-object checks", async (values) => {
    const [lint, objects] = await Promise.all([
      helmResult(["lint", "--strict", join(chartsDir, chart), "-f", join(chartsDir, chart, "ci", values)]), rendered(chart, values),
    ]);
    expect(lint.code, lint.stdout + lint.stderr).toBe(0);
    expect(objects.length).toBeGreaterThan(0);
    expect(formatIssues(await validateObjects(objects))).toBe("");
    expect([...crossCheck(objects), ...(GPU_CHART_CHECKS[chart]?.(objects, "luna") ?? [])]).toEqual([]);
  });

  // ci/invalid: refused by values.schema.json; ci/invalid-render: by a template `fail` (helm lint only logs those).
  it.each([...ciFiles(chart, "ci/invalid").map((f) => `invalid/${f}`), ...ciFiles(chart, "ci/invalid-render").map((f) => `invalid-render/${f}`)])(
    "ci/%s is refused with the expected error", async (values) => {
    const file = join(chartsDir, chart, "ci", values);
    const expected = expectedError(file);
    expect(expected, `${file} needs a "# expect-error: <message>" line`).toBeTruthy();
    const r = await helmResult(templateArgs(`charts/${chart}`, { valuesFiles: [file] }));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(expected);
  });
});

it("luna-lib (the library) lints --strict", async () => {
  const r = await helmResult(["lint", "--strict", join(chartsDir, "luna-lib")]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
});

describe("generated values schemas", () => {
  it.each(Object.keys(SERVICE_CHARTS))("charts/%s/values.schema.json is what values-schema.ts generates", (chart) => {
    // Stale when a service gains or drops a variable: run `make charts-gen`.
    expect(readFileSync(join(chartsDir, chart, "values.schema.json"), "utf8")).toBe(serviceValuesSchemaText(chart));
  });
  it.each(["vllm", "comfyui"] as const)("charts/%s/values.schema.json is what gpu-values-schema.ts generates", (chart) => {
    // Stale when the worker or a simulator gains or drops a variable: run `make charts-gen`.
    expect(readFileSync(join(chartsDir, chart, "values.schema.json"), "utf8")).toBe(gpuValuesSchemaText(chart));
  });
});

describe("values documentation", () => {
  it.each(DOCUMENTED_CHARTS)("charts/%s/values.yaml documents every key with @param, and no @param is stale", (chart) => {
    const text = readFileSync(join(chartsDir, chart, "values.yaml"), "utf8");
    expect(undocumented(text)).toEqual([]);
    expect(unknownParams(text)).toEqual([]);
  });

  it("finds an undocumented key and a stale @param", () => {
    const text = "## @param a.b The b\na:\n  b: 1\n  c: {x: 2}\n## @param d Gone\n";
    expect(undocumented(text)).toEqual(["a.c.x"]);
    expect(unknownParams(text)).toEqual(["d"]);
  });

  it("charts/README.md's values tables are what values-doc.ts generates (make charts-gen)", () => {
    const readme = readFileSync(join(chartsDir, "README.md"), "utf8");
    expect(readme).toBe(renderReadme(readme));
  });
});

const find = (objects: K8sObject[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!o) throw new Error(`${kind}/${name} not rendered`);
  return o as K8sObject & { spec: Record<string, any>; data?: Record<string, string> }; // eslint-disable-line @typescript-eslint/no-explicit-any
};

describe("luna-lib service charts", () => {
  it("name objects after the service whatever the release, within 63 characters", async () => {
    const objects = (await renderChart("charts/billing", { release: "prod-billing-release" })).objects;
    expect(objects.filter((o) => o.kind === "Service").map((o) => o.metadata?.name).sort()).toEqual(["billing", "billing-headless"]);
    const long = "x".repeat(63);
    const named = (await renderChart("charts/billing", { set: { fullnameOverride: long } })).objects;
    expect(formatIssues(await validateObjects(named))).toBe("");
    const names = named.map((o) => o.metadata?.name ?? "");
    expect(names).toContain(`${"x".repeat(54)}-headless`);
    expect(Math.max(...names.map((n) => n.length))).toBeLessThanOrEqual(63);
  });

  it("put secrets in env from existingSecret, the rest in the ConfigMap, and images per the conventions", async () => {
    const objects = await rendered("image-job", "production-values.yaml");
    const d = find(objects, "Deployment", "image-job");
    const c = d.spec.template.spec.containers[0];
    expect(c.image).toBe("registry.example.com/luna/luna/image-job:1.4.2");
    expect(c.envFrom).toEqual([{ configMapRef: { name: "image-job" } }]);
    expect(c.env.map((e: { name: string; valueFrom: { secretKeyRef: { name: string } } }) => [e.name, e.valueFrom.secretKeyRef.name])).toEqual([
      ["DATABASE_URL", "image-job-secrets"], ["LUNA_INTERNAL_KEY", "image-job-secrets"], ["IMAGE_URL_SECRET", "image-job-secrets"],
      ["IMAGE_S3_ACCESS_KEY_ID", "image-job-secrets"], ["IMAGE_S3_SECRET_ACCESS_KEY", "image-job-secrets"],
    ]);
    expect(d.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    expect(c.readinessProbe.grpc.port).toBe(8080);
    const job = find(objects, "Job", "image-job-migrate");
    expect(job.metadata?.annotations?.["helm.sh/hook"]).toBe("pre-install,pre-upgrade");
    expect(job.spec.template.spec.containers[0].image).toBe("registry.example.com/luna/luna/migrate:1.4.2");
    expect(find(objects, "ConfigMap", "image-job").data?.LUNA_MIGRATE_ON_START).toBe("false");
    const defaults = await rendered("image-job", "default-values.yaml");
    expect(find(defaults, "Deployment", "image-job").spec.template.spec.containers[0].image).toBe("luna/image-job:0.1.0");
  });

  it("run as the user the images are built with (the root Dockerfile's runtime USER)", async (ctx) => {
    const dockerfile = join(repoRoot, "Dockerfile");
    if (!existsSync(dockerfile)) ctx.skip();
    const user = /^USER (\d+):(\d+)$/m.exec(readFileSync(dockerfile, "utf8"));
    expect(user).not.toBeNull();
    for (const p of podsOf(await rendered("luna", "cpu-values.yaml"))) {
      for (const c of p.spec.containers.filter((x) => /(?:^|\/)luna\//.test(x.image ?? ""))) {
        const uid = (c.securityContext?.runAsUser ?? p.spec.securityContext?.runAsUser) as number | undefined;
        const gid = (c.securityContext?.runAsGroup ?? p.spec.securityContext?.runAsGroup) as number | undefined;
        expect([uid, gid], `${p.owner} ${c.name}`).toEqual([Number(user![1]), Number(user![2])]);
      }
    }
  });

  it("turn LUNA_MIGRATE_ON_START on and render no hook when migrations are off", async () => {
    const objects = (await renderChart("charts/auth", { set: { "migrations.enabled": "false" } })).objects;
    expect(objects.some((o) => o.kind === "Job")).toBe(false);
    expect(find(objects, "ConfigMap", "auth").data?.LUNA_MIGRATE_ON_START).toBe("true");
    expect(crossCheck(objects)).toEqual([]);
  });

  it("let only the gateway (and the callers the design has) reach the api port; Prometheus the admin port", async () => {
    const apiFrom = async (chart: string) => {
      const np = find(await rendered(chart, "default-values.yaml"), "NetworkPolicy", chart);
      const rule = np.spec.ingress.find((r: { ports: { port: string }[] }) => r.ports[0]!.port === "api");
      return rule.from.map((p: { podSelector: { matchLabels: Record<string, string> } }) => p.podSelector.matchLabels["app.kubernetes.io/name"]).sort();
    };
    expect(await apiFrom("chat-router")).toEqual(["gateway"]);
    expect(await apiFrom("billing")).toEqual(["chat-router", "gateway", "image-job"]);
    expect(await apiFrom("model-registry")).toEqual(["chat-router", "gateway", "image-job"]);
    expect(await apiFrom("image-job")).toEqual(["comfyui", "gateway"]);
    expect(await apiFrom("auth")).toEqual(["billing", "chat-router", "comfyui", "gateway", "image-job", "model-registry"]);
  });
});

describe("gateway chart", () => {
  const envoyFile = join(chartsDir, "gateway", "files", "envoy.yaml");
  it("loads files/envoy.yaml (generated by gateway/) into its ConfigMap, and its listener is the container port", async (ctx) => {
    if (!existsSync(envoyFile)) ctx.skip(); // gateway/ has not generated it yet
    const objects = await rendered("gateway", "default-values.yaml");
    const text = find(objects, "ConfigMap", "gateway").data?.["envoy.yaml"];
    expect(text).toBe(readFileSync(envoyFile, "utf8").replace(/\n$/, ""));
    const envoy = parseYaml(text!) as {
      admin: { address: { socket_address: { address: string } } };
      static_resources: { listeners: { address: { socket_address: { port_value: number } } }[]; clusters: { name: string; load_assignment?: { endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { address: string; port_value: number } } } }[] }[] } }[] };
    };
    expect(envoy.admin.address.socket_address.address).toBe("127.0.0.1");
    const d = find(objects, "Deployment", "gateway");
    const listenPorts = envoy.static_resources.listeners.map((l) => l.address.socket_address.port_value);
    expect(listenPorts).toContain(d.spec.template.spec.containers[0].ports[0].containerPort);
    // Every upstream <service>-headless:<port> is a headless Service with that port in the whole platform's render.
    const platform = await rendered("luna", "default-values.yaml");
    for (const c of envoy.static_resources.clusters) {
      for (const e of c.load_assignment?.endpoints.flatMap((x) => x.lb_endpoints) ?? []) {
        const { address, port_value } = e.endpoint.address.socket_address;
        if (!address.endsWith("-headless")) continue;
        const svc = find(platform, "Service", address);
        expect(svc.spec.clusterIP, address).toBe("None");
        expect(svc.spec.ports.map((p: { port: number }) => p.port), address).toContain(port_value);
      }
    }
  });

  const bytes = (q: string) => {
    const m = /^([0-9.]+)([KMGT]i?)?$/.exec(q);
    if (!m) throw new Error(`quantity ${q}`);
    const unit = m[2] ?? "";
    const pow = { "": 0, K: 1, M: 2, G: 3, T: 4 }[unit.replace("i", "") as "" | "K" | "M" | "G" | "T"];
    return Number(m[1]) * (unit.endsWith("i") ? 1024 : 1000) ** pow;
  };
  /** Envoy's overload-manager heap cap must sit below the container's memory limit, or the OOM killer acts first. */
  const heapProblems = (objects: K8sObject[]) => {
    const text = find(objects, "ConfigMap", "gateway").data?.["envoy.yaml"] ?? "";
    const monitors = (parseYaml(text) as { overload_manager?: { resource_monitors?: { typed_config?: { max_heap_size_bytes?: string } }[] } })
      ?.overload_manager?.resource_monitors ?? [];
    const heap = Math.max(0, ...monitors.map((m) => Number(m.typed_config?.max_heap_size_bytes ?? 0)));
    const limit = find(objects, "Deployment", "gateway").spec.template.spec.containers[0].resources?.limits?.memory;
    return heap > 0 && (!limit || bytes(String(limit)) <= heap) ? [`memory limit ${limit} is not above Envoy's heap cap ${heap}`] : [];
  };

  it.each(ciFiles("gateway"))("ci/%s: the memory limit is above Envoy's overload-manager heap cap", async (values) => {
    expect(heapProblems(await rendered("gateway", values))).toEqual([]);
    expect(bytes("1280Mi")).toBe(1342177280);
  });

  it("the heap check fails on a limit below the cap", async () => {
    const objects = (await renderChart("charts/gateway", { set: { "resources.limits.memory": "512Mi" } })).objects;
    expect(heapProblems(objects)).toEqual(["memory limit 512Mi is not above Envoy's heap cap 1073741824"]);
  });

  it("replaces the configuration whole with envoy.config, and rolls the pods when it changes", async () => {
    const objects = await rendered("gateway", "ingress-values.yaml");
    expect(find(objects, "ConfigMap", "gateway").data?.["envoy.yaml"]).toMatch(/^admin:\n/);
    const a = find(objects, "Deployment", "gateway").spec.template.metadata.annotations["checksum/config"];
    const b = find(await rendered("gateway", "default-values.yaml"), "Deployment", "gateway").spec.template.metadata.annotations["checksum/config"];
    expect(a).not.toBe(b);
    expect(find(objects, "Ingress", "gateway").spec.rules[0].http.paths[0].backend.service.name).toBe("gateway");
  });
});

describe("the umbrella", () => {
  const parts = (values: string) => (parseYaml(readFileSync(join(chartsDir, "luna", values), "utf8")) ?? {}) as Record<string, { enabled?: boolean }>;
  const disabledApps = (values: string) => {
    const all = { ...parts("values.yaml"), ...parts(`ci/${values}`) };
    const off = Object.entries(all).filter(([, v]) => v && typeof v === "object" && v.enabled === false).map(([k]) => k);
    // Parts whose charts do not exist yet are absent too (the umbrella lists only existing charts).
    return [...off, ...["vllm", "comfyui"].filter((c) => !isChart(c))];
  };

  it.each(ciFiles("luna"))("ci/%s: every NetworkPolicy peer naming a Luna app selects pods of the platform", async (values) => {
    expect(checkNetworkPolicyPeers(await rendered("luna", values), disabledApps(values))).toEqual([]);
  });

  it("lists only file:// dependencies, each behind <alias>.enabled", () => {
    const chart = parseYaml(readFileSync(join(chartsDir, "luna", "Chart.yaml"), "utf8")) as { dependencies: { name: string; alias?: string; repository: string; condition?: string }[] };
    for (const d of chart.dependencies) {
      expect(d.repository).toMatch(/^file:\/\/\.\.\//);
      if (d.name !== "luna-lib") expect(d.condition).toBe(`${d.alias ?? d.name}.enabled`);
    }
    for (const c of ["vllm", "comfyui"].filter(isChart)) expect(chart.dependencies.map((d) => d.name)).toContain(c);
  });

  it("renders the whole platform on CPUs with ci/cpu-values.yaml (simulators instead of GPUs)", async () => {
    const objects = await rendered("luna", "cpu-values.yaml");
    const deployments = objects.filter((o) => o.kind === "Deployment").map((o) => o.metadata?.name);
    expect(deployments).toEqual(expect.arrayContaining(["auth", "billing", "model-registry", "chat-router", "image-job", "gateway"]));
    for (const p of podsOf(objects)) {
      for (const c of p.spec.containers) {
        if (/luna\//.test(c.image ?? "")) expect(c.image, p.owner).toMatch(/:dev$/);
        expect(JSON.stringify(c.resources ?? {}), `${p.owner} must not ask for GPUs on CPUs`).not.toMatch(/nvidia\.com|amd\.com\/gpu/);
      }
    }
    if (isChart("vllm")) expect(podsOf(objects).some((p) => p.spec.containers.some((c) => /luna\/sim-vllm/.test(c.image ?? "")))).toBe(true);
    if (isChart("comfyui")) expect(podsOf(objects).some((p) => p.spec.containers.some((c) => /luna\/sim-comfyui/.test(c.image ?? "")))).toBe(true);
  });
});

describe("network reachability of the whole platform (umbrella, ci/cpu-values.yaml)", () => {
  const others: Record<string, Endpoint> = {
    prometheus: { labels: { "app.kubernetes.io/name": "prometheus" }, namespace: "monitoring" },
    "outside-pod": { labels: { app: "curl" }, namespace: "default" },
    "unlabelled-neighbour": { labels: { app: "debug" }, namespace: "luna" },
  };
  const infra: Record<string, Endpoint & { port: number }> = {
    postgres: { labels: { "app.kubernetes.io/name": "postgresql" }, namespace: "infra", port: 5432 },
    cnpg: { labels: { "cnpg.io/cluster": "luna-pg", "cnpg.io/podRole": "instance" }, namespace: "infra", port: 5432 },
    redis: { labels: { "app.kubernetes.io/name": "redis" }, namespace: "infra", port: 6379 },
    nats: { labels: { "app.kubernetes.io/name": "nats" }, namespace: "infra", port: 4222 },
    "otel-collector": { labels: { "app.kubernetes.io/name": "opentelemetry-collector" }, namespace: "observability", port: 4318 },
  };
  let objects: K8sObject[];
  beforeAll(async () => { objects = await rendered("luna", "cpu-values.yaml"); });

  /** Which sources (platform apps and the outsiders above) may connect to `app`'s named port. */
  const reachers = (objs: K8sObject[], app: string, portName: string) => {
    const eps = platformEndpoints(objs);
    const target = eps.get(app);
    if (!target) throw new Error(`${app} not rendered`);
    const port = target.ports?.[portName];
    if (!port) throw new Error(`${app} has no port ${portName}`);
    const np = new NetworkPolicies(objs);
    const sources: [string, Endpoint][] = [...[...eps].filter(([name]) => name !== app), ...Object.entries(others)];
    return sources.filter(([, src]) => np.allowed(src, target, port)).map(([name]) => name).sort();
  };

  it("services' api ports: only the gateway and the callers the design has", () => {
    expect(reachers(objects, "auth", "api")).toEqual(["billing", "chat-router", "comfyui", "gateway", "image-job", "model-registry"]);
    expect(reachers(objects, "billing", "api")).toEqual(["chat-router", "gateway", "image-job"]);
    expect(reachers(objects, "model-registry", "api")).toEqual(["chat-router", "gateway", "image-job"]);
    expect(reachers(objects, "chat-router", "api")).toEqual(["gateway"]);
    expect(reachers(objects, "image-job", "api")).toEqual(["comfyui", "gateway"]);
  });

  it("admin ports: Prometheus only", () => {
    for (const app of ["auth", "billing", "model-registry", "chat-router", "image-job"]) expect(reachers(objects, app, "admin"), app).toEqual(["prometheus"]);
  });

  it("the gateway's listener: everyone (the public edge); vLLM: chat-router and model-registry's probes (and Prometheus)", () => {
    // Anyone whose own egress allows it: the services' egress does not include the gateway (they never call it);
    // the GPU pools' egress is open (model downloads).
    expect(reachers(objects, "gateway", "http")).toEqual(["comfyui", "outside-pod", "prometheus", "unlabelled-neighbour", "vllm"]);
    expect(reachers(objects, "vllm", "http")).toEqual(["chat-router", "model-registry", "prometheus"]);
  });

  it("ComfyUI: nothing from outside its pod (no port declared, listens on 127.0.0.1 for its sidecar)", () => {
    const comfy = platformEndpoints(objects).get("comfyui")!;
    const np = new NetworkPolicies(objects);
    const target = { ...comfy, ports: { comfyui: 8188 } };
    for (const [name, src] of [...platformEndpoints(objects), ...Object.entries(others)]) {
      if (name !== "comfyui") expect(np.allowed(src, target, 8188), name).toBe(false);
    }
  });

  it("services reach Postgres, Redis, NATS and the trace collector; the gateway reaches none of them", () => {
    const np = new NetworkPolicies(objects);
    const eps = platformEndpoints(objects);
    for (const app of ["auth", "billing", "model-registry", "chat-router", "image-job"]) {
      for (const [name, dst] of Object.entries(infra)) expect(np.allowed(eps.get(app)!, dst, dst.port), `${app} -> ${name}`).toBe(true);
    }
    for (const [name, dst] of Object.entries(infra)) {
      if (name !== "otel-collector") expect(np.allowed(eps.get("gateway")!, dst, dst.port), `gateway -> ${name}`).toBe(false);
    }
  });

  it("fails when a policy is missing or too wide (broken copies)", () => {
    const withoutPolicy = objects.filter((o) => !(o.kind === "NetworkPolicy" && o.metadata?.name === "chat-router"));
    expect(reachers(withoutPolicy, "chat-router", "api")).toContain("outside-pod");
    const wide = clone(objects) as any[]; // eslint-disable-line @typescript-eslint/no-explicit-any
    wide.find((o) => o.kind === "NetworkPolicy" && o.metadata?.name === "billing").spec.ingress[0].from.push({ podSelector: {} });
    expect(reachers(wide as K8sObject[], "billing", "api")).toContain("unlabelled-neighbour");
  });
});

// ---- each check fails on a deliberately broken input ----

describe("the checks catch broken renders", () => {
  let base: K8sObject[];
  beforeAll(async () => { base = await rendered("auth", "production-values.yaml"); });
  type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const broken = (edit: (objects: Any[]) => void) => { const o = clone(base) as Any[]; edit(o); return o as K8sObject[]; };
  const dep = (objects: Any[]) => objects.find((o) => o.kind === "Deployment");
  const container = (objects: Any[]) => dep(objects).spec.template.spec.containers[0];

  it("the unbroken render passes them all", () => {
    expect(crossCheck(base)).toEqual([]);
  });

  it("a Service that selects no pod, or targets a port the pods lack", () => {
    expect(checkServicesSelectPods(broken((o) => { o.find((x) => x.metadata.name === "auth-headless").spec.selector["app.kubernetes.io/name"] = "authh"; })))
      .toEqual(["Service/auth-headless selects no pod"]);
    expect(checkServicesSelectPods(broken((o) => { container(o).ports[1].name = "metrics"; })))
      .toEqual(expect.arrayContaining([expect.stringMatching(/^Service\/auth port admin: targetPort admin is not a container port/)]));
  });

  it("a NetworkPolicy, PDB, HPA or ServiceMonitor that finds nothing", () => {
    expect(checkSelectorsAndTargets(broken((o) => { o.find((x) => x.kind === "NetworkPolicy" && x.metadata.name === "auth").spec.podSelector.matchLabels["app.kubernetes.io/instance"] = "other"; })))
      .toEqual(["NetworkPolicy/auth selects no pod"]);
    expect(checkSelectorsAndTargets(broken((o) => { o.find((x) => x.kind === "PodDisruptionBudget").spec.selector.matchLabels["app.kubernetes.io/name"] = "x"; })))
      .toEqual(["PodDisruptionBudget/auth selects no pod"]);
    expect(checkSelectorsAndTargets(broken((o) => { o.find((x) => x.kind === "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "auht"; })))
      .toEqual(["HorizontalPodAutoscaler/auth targets Deployment/auht, which the release does not render"]);
    expect(checkSelectorsAndTargets(broken((o) => { delete o.find((x) => x.kind === "ServiceMonitor").spec.selector.matchExpressions; })))
      .toEqual(["ServiceMonitor/auth selects 2 Services (want exactly one: a second doubles every series)"]);
    expect(checkSelectorsAndTargets(broken((o) => { o.push({ apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "s" }, spec: { scaleTargetRef: { name: "vllm-x" } } }); })))
      .toEqual(["ScaledObject/s targets Deployment/vllm-x, which the release does not render"]);
    expect(checkSelectorsAndTargets(broken((o) => { o.find((x) => x.kind === "NetworkPolicy" && x.metadata.name === "auth").spec.ingress[0].ports[0].port = "grpc"; })))
      .toEqual(["NetworkPolicy/auth allows port grpc, which no selected pod has"]);
  });

  it("a PodMonitor scraping a port its pods lack", async () => {
    const objects = clone(await rendered("gateway", "metrics-values.yaml")) as Any[];
    expect(checkSelectorsAndTargets(objects as K8sObject[])).toEqual([]);
    objects.find((x) => x.kind === "PodMonitor").spec.podMetricsEndpoints[0].port = "stats";
    expect(checkSelectorsAndTargets(objects as K8sObject[])).toEqual(["PodMonitor/gateway scrapes port stats, which its pods lack"]);
  });

  it("a NetworkPolicy peer naming a Luna app that is not in the platform", () => {
    expect(checkNetworkPolicyPeers(base)).toEqual(expect.arrayContaining([expect.stringMatching(/peer .*"gateway".* matches no pod of the platform/)]));
    expect(checkNetworkPolicyPeers(base, ["gateway", "billing", "model-registry", "chat-router", "image-job", "comfyui"])).toEqual([]);
  });

  it("a Deployment without probes, resources or the hardened security context", () => {
    expect(checkWorkloadsHardened(broken((o) => { delete container(o).readinessProbe; })))
      .toEqual(["Deployment/auth container auth: liveness and readiness probes are required"]);
    expect(checkWorkloadsHardened(broken((o) => { delete container(o).resources; })))
      .toEqual(["Deployment/auth container auth: resources need cpu/memory requests and a memory limit"]);
    expect(checkWorkloadsHardened(broken((o) => { container(o).securityContext.readOnlyRootFilesystem = false; })))
      .toEqual(["Deployment/auth container auth: readOnlyRootFilesystem must be true"]);
    expect(checkWorkloadsHardened(broken((o) => { container(o).securityContext.capabilities = { drop: ["NET_RAW"] }; })))
      .toEqual(["Deployment/auth container auth: capabilities must drop ALL"]);
    expect(checkWorkloadsHardened(broken((o) => {
      delete container(o).securityContext.runAsNonRoot; delete dep(o).spec.template.spec.securityContext.runAsNonRoot;
      delete container(o).securityContext.seccompProfile; delete dep(o).spec.template.spec.securityContext.seccompProfile;
      container(o).securityContext.allowPrivilegeEscalation = true;
    }))).toEqual([
      "Deployment/auth container auth: allowPrivilegeEscalation must be false",
      "Deployment/auth container auth: runAsNonRoot must be true",
      "Deployment/auth container auth: seccompProfile must be RuntimeDefault",
    ]);
  });

  it("env a program does not read, ports that disagree with its env, a grace period too short to drain", () => {
    expect(checkLunaContainers(broken((o) => { o.find((x) => x.kind === "ConfigMap").data.AUTH_OPEN_SIGNUPP = "true"; })))
      .toEqual(["Deployment/auth container auth (luna/auth): sets AUTH_OPEN_SIGNUPP, which auth does not read"]);
    expect(checkLunaContainers(broken((o) => { container(o).env.push({ name: "CHAT_TITLE_MODEL", value: "x" }); })))
      .toEqual(["Deployment/auth container auth (luna/auth): sets CHAT_TITLE_MODEL, which auth does not read"]);
    expect(checkLunaContainers(broken((o) => { o.find((x) => x.kind === "ConfigMap").data.LUNA_PORT = "8081"; })))
      .toEqual(["Deployment/auth container auth (luna/auth): container port api 8080 but LUNA_PORT 8081"]);
    expect(checkLunaContainers(broken((o) => { dep(o).spec.template.spec.terminationGracePeriodSeconds = 30; })))
      .toEqual(["Deployment/auth container auth (luna/auth): terminationGracePeriodSeconds 30 must exceed preStop + LUNA_SHUTDOWN_GRACE (40s)"]);
    expect(checkLunaContainers(broken((o) => { delete container(o).lifecycle; })))
      .toEqual(["Deployment/auth container auth (luna/auth): no preStop (endpoint removal must reach clients before SIGTERM)"]);
    expect(checkLunaContainers(broken((o) => { container(o).ports[0].containerPort = 8081; o.find((x) => x.kind === "ConfigMap").data.LUNA_PORT = "8081"; })))
      .toEqual(["Deployment/auth container auth (luna/auth): container port api 8081 is not one the image listens on (8080, 9090; Envoy and the kit's URLs assume those)"]);
    expect(checkLunaContainers(broken((o) => { container(o).image = "luna/auth-service:1"; })))
      .toEqual(["Deployment/auth container auth (luna/auth-service): no such Luna image program"]);
    expect(checkLunaContainers(broken((o) => { o.find((x) => x.kind === "Job").spec.template.spec.containers[0].env.push({ name: "LOG_LEVEL", value: "debug" }); })))
      .toEqual(["Job/auth-migrate container migrate (luna/migrate): sets LOG_LEVEL; luna-migrate reads DATABASE_URL only"]);
  });

  it("a migrations Job that is missing, not a pre-install/pre-upgrade hook, or reads the release's own objects", () => {
    expect(checkMigrationsHook(broken((o) => { o.splice(o.findIndex((x) => x.kind === "Job"), 1); })))
      .toEqual(["Deployment/auth: LUNA_MIGRATE_ON_START=false but no luna/migrate Job runs --service auth"]);
    expect(checkMigrationsHook(broken((o) => { o.find((x) => x.kind === "Job").metadata.annotations["helm.sh/hook"] = "post-install,post-upgrade"; })))
      .toEqual(["Job/auth-migrate: must be a pre-install,pre-upgrade hook (is post-install,post-upgrade)"]);
    expect(checkMigrationsHook(broken((o) => { o.find((x) => x.kind === "Job").spec.template.spec.containers[0].envFrom = [{ configMapRef: { name: "auth" } }]; })))
      .toEqual(["Job/auth-migrate: envFrom ConfigMap/auth, which the release creates after the hook"]);
    expect(checkMigrationsHook(broken((o) => { o.find((x) => x.kind === "Job").spec.template.spec.containers[0].env = [{ name: "DATABASE_URL", value: "postgres://x" }]; })))
      .toEqual(["Job/auth-migrate: DATABASE_URL must come from a Secret"]);
  });

  it("a PodDisruptionBudget no drain can satisfy", () => {
    expect(checkDisruptionBudgets(broken((o) => { o.find((x) => x.kind === "PodDisruptionBudget").spec.minAvailable = 3; })))
      .toEqual(["PodDisruptionBudget/auth: with Deployment/auth at 3 replica(s) no pod may be evicted (a node drain would block)"]);
    expect(checkDisruptionBudgets(broken((o) => { const p = o.find((x) => x.kind === "PodDisruptionBudget").spec; delete p.minAvailable; p.maxUnavailable = 0; })))
      .toEqual(["PodDisruptionBudget/auth: with Deployment/auth at 3 replica(s) no pod may be evicted (a node drain would block)"]);
  });

  it("a cluster older than the charts support (preStop sleep needs Kubernetes 1.30)", async () => {
    const r = await helmResult(templateArgs("charts/auth", { extraArgs: ["--kube-version", "1.29.0"] }));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("chart requires kubeVersion: >=1.30.0-0 which is incompatible with Kubernetes v1.29.0");
  });

  it("schema validation of a rendered object with a misspelled field", async () => {
    const issues = await validateObjects(broken((o) => { container(o).imagePullPolice = "Always"; dep(o).spec.replica = 2; }));
    expect(formatIssues(issues)).toBe([
      'Deployment/auth /spec/template/spec/containers/0/imagePullPolice: unknown field "imagePullPolice" (not in the Deployment schema)',
      'Deployment/auth /spec/replica: unknown field "replica" (not in the Deployment schema)',
    ].join("\n"));
  });
});
