// Each skaffold Helm release rendered as skaffold would deploy it (its chart, values files, setValues, and the
// setValueTemplates filled in with made-up image names), with the real helm; the objects validated with
// @luna/kube-check; and every image a release sets actually lands in a container — so a template key the chart
// does not read (e.g. `migration.image.tag`) fails here instead of deploying the chart's default image.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ensureHelm, validateObjects, formatIssues, type K8sObject } from "@luna/kube-check";
import { PROFILES, Tree, loadGraph, releasesOf, renderRelease, templateArtifactRefs, type Release } from "./skaffold-lib.js";

const tree = new Tree();
const graph = loadGraph(tree);

/** Every container image in the rendered pod templates (Deployments, StatefulSets, Jobs, Pods). */
function imagesOf(objects: K8sObject[]): string[] {
  const out: string[] = [];
  const fromPod = (spec: Record<string, unknown> | undefined): void => {
    for (const key of ["containers", "initContainers"]) {
      for (const c of (spec?.[key] as Array<{ image?: string }> | undefined) ?? []) if (c.image) out.push(c.image);
    }
  };
  for (const o of objects) {
    const spec = o.spec as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
    if (o.kind === "Pod") fromPod(spec);
    else fromPod(spec?.template?.spec ?? spec?.jobTemplate?.spec?.template?.spec);
  }
  return out;
}

const render = renderRelease;

const renderable = (p: string): Release[] => [...graph.modules.values()].flatMap((m) => releasesOf(m, p))
  .filter((r) => r.chartPath && existsSync(join(r.chartPath, "Chart.yaml")) && r.valuesFiles.every((f) => existsSync(f)));

beforeAll(async () => {
  await ensureHelm();
}, 180_000);

describe.each(PROFILES)("skaffold releases rendered (-p %s)", (profile) => {
  it("the five services, at least, can be rendered here", () => {
    const names = renderable(profile).map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(["auth", "billing", "model-registry", "chat-router", "image-job"]));
  });

  it.each(renderable(profile).map((r) => [r.name, r] as const))("%s: valid objects, and the images skaffold builds are the ones deployed", async (_name, rel) => {
    const objects = await render(rel);
    expect(formatIssues(await validateObjects(objects))).toBe("");
    const images = imagesOf(objects);
    for (const tpl of Object.values(rel.setValueTemplates)) {
      for (const a of new Set(templateArtifactRefs(tpl))) {
        expect(images, `${rel.name}: the image built as ${a}`).toContain(`registry.test/${a}:t-${a}`);
      }
    }
  }, 120_000);
});

describe("wiring between releases (-p kind)", () => {
  it("the seeded catalog's vLLM URL is a Service and port the vllm release renders", async () => {
    const registry = releasesOf(graph.modules.get("model-registry")!, "kind")[0]!;
    const cm = (await render(registry)).find((o) => o.kind === "ConfigMap" && (o as any).data?.REGISTRY_SEED_VLLM_URL) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(cm, "REGISTRY_SEED_VLLM_URL in model-registry's ConfigMap").toBeDefined();
    const url = new URL(cm.data.REGISTRY_SEED_VLLM_URL as string);
    const vllm = await render(releasesOf(graph.modules.get("vllm")!, "kind")[0]!);
    const svc = vllm.find((o) => o.kind === "Service" && o.metadata?.name === url.hostname) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(svc, `Service ${url.hostname} in the vllm release`).toBeDefined();
    expect(svc.spec.ports.map((p: { port: number }) => p.port)).toContain(Number(url.port));
  }, 120_000);
});

/**
 * Problems with REGISTRY_SEED_IMAGE_WORKERS ("model=http://service:port,...") against the comfyui release: each entry
 * must name a headless Service with that port selecting the pods whose worker serves that model, every pool must be
 * listed, and the pools' NetworkPolicy must let model-registry's pods reach the admin port.
 */
function imageWorkerWiring(value: string, comfy: K8sObject[]): string[] {
  const problems: string[] = [];
  const any = (o: K8sObject) => o as any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const pools = comfy.filter((o) => o.kind === "Deployment").map((d) => {
    const env = any(d).spec.template.spec.containers.flatMap((c: { env?: Array<{ name: string; value?: string }> }) => c.env ?? []);
    return { labels: any(d).spec.template.metadata.labels as Record<string, string>, ids: String(env.find((e: { name: string }) => e.name === "IMAGE_WORKER_POOLS")?.value ?? "").split(",") };
  });
  const listed = new Set<string>();
  for (const entry of value.split(",").filter(Boolean)) {
    const [id, raw] = [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)];
    listed.add(id);
    const url = new URL(raw);
    const svc = comfy.find((o) => o.kind === "Service" && o.metadata?.name === url.hostname);
    if (!svc) { problems.push(`${id}: no Service ${url.hostname} in the comfyui release`); continue; }
    if (!any(svc).spec.ports.some((p: { port: number }) => p.port === Number(url.port))) problems.push(`${id}: Service ${url.hostname} has no port ${url.port}`);
    if (any(svc).spec.clusterIP !== "None") problems.push(`${id}: Service ${url.hostname} is not headless (one replica per pod needs pod addresses)`);
    const selected = pools.filter((p) => Object.entries(any(svc).spec.selector as Record<string, string>).every(([k, v]) => p.labels[k] === v));
    if (!selected.some((p) => p.ids.includes(id))) problems.push(`${id}: Service ${url.hostname} selects no worker of pool ${id}`);
  }
  for (const id of pools.flatMap((p) => p.ids)) if (!listed.has(id)) problems.push(`pool ${id} is not probed through its workers`);
  const open = comfy.filter((o) => o.kind === "NetworkPolicy").some((np) => any(np).spec.ingress.some((rule: { from?: Array<{ podSelector?: { matchLabels?: Record<string, string> } }> }) =>
    rule.from?.some((peer) => peer.podSelector?.matchLabels?.["app.kubernetes.io/name"] === "model-registry")));
  if (!open) problems.push("the comfyui NetworkPolicy does not admit model-registry's probes");
  return problems;
}

describe("wiring between releases: image pools (-p kind)", () => {
  it("the seeded image models are probed at their pools' workers' Services, which the NetworkPolicy lets the registry reach", async () => {
    const registry = releasesOf(graph.modules.get("model-registry")!, "kind")[0]!;
    const cm = (await render(registry)).find((o) => o.kind === "ConfigMap" && (o as any).data?.REGISTRY_SEED_IMAGE_WORKERS) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(cm, "REGISTRY_SEED_IMAGE_WORKERS in model-registry's ConfigMap").toBeDefined();
    const value = cm.data.REGISTRY_SEED_IMAGE_WORKERS as string;
    const comfy = await render(releasesOf(graph.modules.get("comfyui")!, "kind")[0]!);
    expect(imageWorkerWiring(value, comfy)).toEqual([]);
    // The check sees each way it can go wrong.
    expect(imageWorkerWiring(value.replace("comfyui-sdxl-base-workers", "comfyui-sdxl-workers"), comfy)).toEqual(
      ["sdxl-base-1.0: no Service comfyui-sdxl-workers in the comfyui release"]);
    expect(imageWorkerWiring(value.replace(":9090", ":8188"), comfy)).toEqual(["flux1-schnell: Service comfyui-flux1-schnell-workers has no port 8188"]);
    expect(imageWorkerWiring(value.split(",")[0]!, comfy)).toEqual(["pool sdxl-base-1.0 is not probed through its workers"]);
    expect(imageWorkerWiring(value.replace("flux1-schnell=http://comfyui-flux1-schnell", "flux1-schnell=http://comfyui-sdxl-base"), comfy)).toEqual(
      ["flux1-schnell: Service comfyui-sdxl-base-workers selects no worker of pool flux1-schnell"]);
    expect(imageWorkerWiring(value, comfy.filter((o) => o.kind !== "NetworkPolicy"))).toEqual(["the comfyui NetworkPolicy does not admit model-registry's probes"]);
  }, 120_000);
});

describe("a template key that misses the chart's image", () => {
  it("is refused by the chart's schema when the key does not exist (migration.image.tag)", async () => {
    const auth = releasesOf(graph.modules.get("auth")!, "kind")[0]!;
    const { "migrations.image.tag": tag, ...rest } = auth.setValueTemplates;
    await expect(render({ ...auth, setValueTemplates: { ...rest, "migration.image.tag": tag! } })).rejects.toThrow(/migration/);
  }, 120_000);

  it("deploys the wrong image when the key exists but is not the image's (image.registry), and the check sees it", async () => {
    const auth = releasesOf(graph.modules.get("auth")!, "kind")[0]!;
    const { "image.repository": repo, ...rest } = auth.setValueTemplates;
    const images = imagesOf(await render({ ...auth, setValueTemplates: { ...rest, "image.registry": repo! } }));
    expect(images).not.toContain("registry.test/luna_auth:t-luna_auth");
    expect(images).toContain("registry.test/luna_auth/luna/auth:t-luna_auth");
  }, 120_000);

  it("a release rendered with a values key the chart's schema lacks is refused by helm", async () => {
    const billing = releasesOf(graph.modules.get("billing")!, "kind")[0]!;
    await expect(render({ ...billing, setValues: { replicaCont: "1" } })).rejects.toThrow(/replicaCont|additional/i);
  }, 120_000);
});
