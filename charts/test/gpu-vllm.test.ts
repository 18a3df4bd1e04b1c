// charts/vllm beyond the generic loop of charts.test.ts (which lints, renders and validates every ci variant, runs
// the cross-object and GPU_CHART_CHECKS on each, and refuses ci/invalid and ci/invalid-render): what each model
// renders, and each vLLM pool check shown failing on a broken copy of a good render.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { dependencyBuild, formatIssues, repoRoot, validateObjects, type K8sObject } from "@luna/kube-check";
import { chartRenderer, edit } from "./chart-renders.js";
import { crossCheck } from "./cross-checks.js";
import { checkIngressOnlyFrom, checkVllmPods, checkVllmScaling, GPU_POOL_CLIENTS } from "./gpu-checks.js";

const CHART = "charts/vllm";
const dir = join(repoRoot, CHART);
const NS = "luna";
const VLLM_PODS = GPU_POOL_CLIENTS.vllm.pods;
const CLIENTS = GPU_POOL_CLIENTS.vllm.apps;

const render = chartRenderer("vllm", { release: "vllm", namespace: NS });
const find = (objects: K8sObject[], kind: string, name?: string) => objects.find((o) => o.kind === kind && (name === undefined || o.metadata?.name === name))!;

beforeAll(async () => {
  await dependencyBuild(CHART);
}, 300_000);

describe("vllm chart", () => {
  const ci = readdirSync(join(dir, "ci")).filter((f) => f.endsWith("-values.yaml")).sort();

  it("ships defaults, simulator, production-like and scale-to-zero variants", () => {
    expect(ci).toEqual(expect.arrayContaining(["default-values.yaml", "simulator-values.yaml", "production-values.yaml", "scale-to-zero-values.yaml"]));
  });

  it("renders per model: Deployment, headless Service, cache PVC, ScaledObject; GPU and /dev/shm as configured", async () => {
    const objects = await render("production-values.yaml");
    const names = (kind: string) => objects.filter((o) => o.kind === kind).map((o) => o.metadata!.name).sort();
    expect(names("Deployment")).toEqual(["vllm-llama-3-1-8b", "vllm-mistral-small-24b", "vllm-qwen2-5-7b"]);
    expect(names("Service")).toEqual(names("Deployment"));
    expect(names("ScaledObject")).toEqual(names("Deployment"));
    // mistral uses an existing claim: no PVC of its own.
    expect(names("PersistentVolumeClaim")).toEqual(["vllm-llama-3-1-8b-cache", "vllm-qwen2-5-7b-cache"]);
    for (const s of objects.filter((o) => o.kind === "Service")) expect((s.spec as { clusterIP?: string }).clusterIP).toBe("None");
    const mistral = find(objects, "Deployment", "vllm-mistral-small-24b") as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    const c = mistral.spec.template.spec.containers[0];
    expect(c.resources.limits["nvidia.com/gpu"]).toBe(2);
    expect(c.args).toContain("--tensor-parallel-size=2");
    expect(mistral.spec.template.spec.volumes).toContainEqual({ name: "model-cache", persistentVolumeClaim: { claimName: "mistral-weights" } });
    expect(mistral.spec.template.spec.volumes).toContainEqual({ name: "dshm", emptyDir: { medium: "Memory", sizeLimit: "16Gi" } });
    // A raw resource override wins over gpu.count; another resource name replaces nvidia.com/gpu.
    const raw = await render(undefined, ["--set-json", 'defaults.resources={"requests":{"cpu":"1","memory":"1Gi"},"limits":{"memory":"2Gi","nvidia.com/mig-3g.40gb":1}}',
      "--set", "defaults.gpu.resourceName=nvidia.com/mig-3g.40gb"]);
    expect((find(raw, "Deployment") as any).spec.template.spec.containers[0].resources.limits).toEqual({ memory: "2Gi", "nvidia.com/mig-3g.40gb": 1 }); // eslint-disable-line @typescript-eslint/no-explicit-any
  });

  it("scales on sum(vllm:num_requests_waiting) and, at zero, wakes on chat-router's demand metrics", async () => {
    const so = find(await render("scale-to-zero-values.yaml"), "ScaledObject", "vllm-mistral-small-24b") as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(so.spec.minReplicaCount).toBe(0);
    expect(so.spec.triggers.map((t: { metadata: { query: string } }) => t.metadata.query)).toEqual([
      'sum(vllm:num_requests_waiting{model_name="mistral-small-24b-abliterated",namespace="luna"})',
      'clamp_max((sum(luna_chat_model_waiting_requests{model="mistral-small-24b-abliterated",namespace="luna"}) or vector(0)) + '
        + '(sum(increase(luna_chat_model_requests_total{model="mistral-small-24b-abliterated",namespace="luna"}[10m])) or vector(0)), 1)',
    ]);
    expect(so.spec.cooldownPeriod).toBe(900);
    expect(so.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds).toBe(900);
    const keep = find(await render("scale-to-zero-values.yaml"), "ScaledObject", "vllm-llama-3-1-8b") as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(keep.spec.minReplicaCount).toBe(1);
    expect(keep.spec.triggers).toHaveLength(1);
  });

  it("the simulator mode runs luna/sim-vllm without GPUs or a model cache", async () => {
    const objects = await render("simulator-values.yaml");
    expect(objects.filter((o) => o.kind === "PersistentVolumeClaim")).toEqual([]);
    expect(objects.filter((o) => o.kind === "ScaledObject")).toEqual([]);
    for (const d of objects.filter((o) => o.kind === "Deployment") as any[]) { // eslint-disable-line @typescript-eslint/no-explicit-any
      const c = d.spec.template.spec.containers[0];
      expect(c.image).toBe("luna/sim-vllm:0.1.0");
      expect(JSON.stringify(c.resources)).not.toContain("gpu");
    }
  });

  it("the validator rejects a misspelled field and metricType inside KEDA metadata", async () => {
    const objects = await render();
    const broken = edit(objects, (c) => {
      c.find((o) => o.kind === "ScaledObject").spec.minReplicas = 0;
      c.find((o) => o.kind === "ScaledObject").spec.triggers[0].metadata.metricType = "AverageValue";
      c.find((o) => o.kind === "Deployment").spec.template.spec.containers[0].imagePullPolice = "Always";
    });
    const issues = formatIssues(await validateObjects(broken));
    expect(issues).toMatch(/unknown field "minReplicas"/);
    expect(issues).toMatch(/metricType/);
    expect(issues).toMatch(/unknown field "imagePullPolice"/);
  });
});

describe("vllm checks fail on broken renders", () => {
  it("a Service that selects no pod / a ScaledObject without its Deployment", async () => {
    const objects = await render();
    const svc = edit(objects, (c) => { c.find((o) => o.kind === "Service").spec.selector["luna.dev/model"] = "other"; });
    expect(crossCheck(svc).join("\n")).toMatch(/Service\/vllm-llama-3-1-8b selects no pod/);
    const so = edit(objects, (c) => { c.find((o) => o.kind === "ScaledObject").spec.scaleTargetRef.name = "vllm-gone"; });
    expect(checkVllmScaling(so, NS).join("\n")).toMatch(/targets Deployment\/vllm-gone, which is not rendered/);
  });

  it("a pod without GPUs, /dev/shm, the /health probes or a long enough startup probe", async () => {
    const objects = await render();
    const broken = edit(objects, (c) => {
      const pod = c.find((o) => o.kind === "Deployment").spec.template.spec;
      delete pod.containers[0].resources.limits["nvidia.com/gpu"];
      pod.containers[0].startupProbe.failureThreshold = 3;
      pod.containers[0].readinessProbe.httpGet.path = "/v1/models";
      pod.volumes.find((v: { name: string }) => v.name === "dshm").emptyDir = {};
    });
    const problems = checkVllmPods(broken).join("\n");
    expect(problems).toMatch(/no nvidia.com\/gpu limit/);
    expect(problems).toMatch(/startup probe allows 30 s/);
    expect(problems).toMatch(/readiness probe must GET \/health/);
    expect(problems).toMatch(/\/dev\/shm must be a memory emptyDir/);
  });

  it("a simulator with a variable it does not read, or listening on another port", async () => {
    const objects = await render("simulator-values.yaml");
    const broken = edit(objects, (c) => {
      const env = c.find((o) => o.kind === "Deployment").spec.template.spec.containers[0].env;
      env.push({ name: "SIM_VLLM_PROFIEL", value: "fast" });
      env.find((e: { name: string }) => e.name === "SIM_VLLM_PORT").value = "8001";
    });
    const problems = checkVllmPods(broken).join("\n");
    expect(problems).toMatch(/sets SIM_VLLM_PROFIEL, which the simulator does not read/);
    expect(problems).toMatch(/listens on 8001, the container port is 8000/);
  });

  it("a KEDA query on the wrong model, metricType in metadata, fixed replicas beside a ScaledObject", async () => {
    const objects = await render();
    const broken = edit(objects, (c) => {
      const so = c.find((o) => o.kind === "ScaledObject");
      so.spec.triggers[0].metadata.query = 'sum(vllm:num_requests_waiting{model_name="other"})';
      so.spec.triggers[0].metadata.metricType = "AverageValue";
      c.find((o) => o.kind === "Deployment").spec.replicas = 1;
    });
    const problems = checkVllmScaling(broken, NS).join("\n");
    expect(problems).toMatch(/first trigger must be prometheus sum\(vllm:num_requests_waiting\{model_name="llama-3.1-8b-abliterated",namespace="luna"\}\)/);
    expect(problems).toMatch(/metricType belongs at trigger level/);
    expect(problems).toMatch(/sets replicas although ScaledObject/);
  });

  it("scale to zero without the demand trigger, or with a cooldown shorter than the cold start", async () => {
    const objects = await render("scale-to-zero-values.yaml");
    const noWake = edit(objects, (c) => { c.find((o) => o.metadata.name === "vllm-mistral-small-24b" && o.kind === "ScaledObject").spec.triggers.pop(); });
    expect(checkVllmScaling(noWake, NS).join("\n")).toMatch(/needs an activation trigger on luna_chat_model_waiting_requests/);
    const short = edit(objects, (c) => {
      const so = c.find((o) => o.metadata.name === "vllm-mistral-small-24b" && o.kind === "ScaledObject");
      so.spec.cooldownPeriod = 60;
      so.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds = 120;
    });
    const problems = checkVllmScaling(short, NS).join("\n");
    expect(problems).toMatch(/cooldownPeriod 60 must exceed the cold start 300 s/);
    expect(problems).toMatch(/scale-down stabilization 120 s must exceed the cold start 300 s/);
  });

  it("a NetworkPolicy admitting another app, admitting everyone, or missing", async () => {
    const objects = await render();
    const extra = edit(objects, (c) => {
      c.find((o) => o.kind === "NetworkPolicy").spec.ingress[0].from.push({ podSelector: { matchLabels: { "app.kubernetes.io/name": "gateway", "app.kubernetes.io/part-of": "luna" } } });
    });
    expect(checkIngressOnlyFrom(extra, VLLM_PODS, CLIENTS).join("\n")).toMatch(/admits gateway \(only chat-router, model-registry may connect\)/);
    const open = edit(objects, (c) => { delete c.find((o) => o.kind === "NetworkPolicy").spec.ingress[0].from; });
    expect(checkIngressOnlyFrom(open, VLLM_PODS, CLIENTS).join("\n")).toMatch(/without "from" admits everyone/);
    const none = objects.filter((o) => o.kind !== "NetworkPolicy");
    expect(checkIngressOnlyFrom(none, VLLM_PODS, CLIENTS).join("\n")).toMatch(/no NetworkPolicy selects its pods/);
  });
});
