// The skaffold modules, checked offline: the v4beta14 JSON Schema, the module graph (`requires`), artifacts referenced
// by setValueTemplates, chart and values paths, one image per service module, and the kind/gpu profiles. Every check
// is also run on a deliberately broken copy (files replaced in memory) to show it fails.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  PROFILES, Tree, artifactsOf, checkArtifactsUsed, checkPaths, checkProfiles, checkSchema, checkServiceModule,
  checkTemplateRefs, closure, dockerfilePrograms, effectiveConfig, loadGraph, readSkaffoldFile, releasesOf, repoRoot,
  templateArtifactRefs, templateName,
} from "./skaffold-lib.js";

const tree = new Tree();
const SERVICES = readdirSync(join(repoRoot, "services"), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
const profilesAndBase = [undefined, ...PROFILES];

/** Every skaffold file in the repository, whether or not the root requires it (an orphan is checked too). */
function allSkaffoldFiles(): string[] {
  const files = [join(repoRoot, "skaffold.yaml"), ...SERVICES.map((s) => join(repoRoot, "services", s, "skaffold.yaml"))];
  for (const f of readdirSync(join(repoRoot, "k8s/skaffold"))) if (f.endsWith(".yaml")) files.push(join(repoRoot, "k8s/skaffold", f));
  return files;
}

function edit(file: string, fn: (s: string) => string): Tree {
  const before = tree.read(join(repoRoot, file));
  const after = fn(before);
  expect(after, `the edit of ${file} must change it`).not.toBe(before);
  return tree.with({ [file]: after });
}

describe("skaffold: JSON Schema v4beta14", () => {
  it("every document of every skaffold file validates", () => {
    const files = allSkaffoldFiles();
    expect(files.length).toBeGreaterThanOrEqual(1 + SERVICES.length + 6);
    const issues: string[] = [];
    for (const f of files) {
      const { docs, issues: parse } = readSkaffoldFile(tree, f);
      issues.push(...parse);
      expect(docs.length, tree.rel(f)).toBeGreaterThan(0);
      for (const d of docs) issues.push(...checkSchema(tree, d));
    }
    expect(issues).toEqual([]);
  });

  it("rejects a misspelled field, a field in the wrong place, a wrong type and another apiVersion", () => {
    const check = (t: Tree, file: string): string[] => readSkaffoldFile(t, join(repoRoot, file)).docs.flatMap((d) => checkSchema(t, d));
    expect(check(edit("services/billing/skaffold.yaml", (s) => s.replace("chartPath:", "chartpath:")), "services/billing/skaffold.yaml").join("\n"))
      .toMatch(/must NOT have additional properties 'chartpath'/);
    expect(check(edit("services/billing/skaffold.yaml", (s) => s.replace("  tagPolicy:", "  tagpolicy:")), "services/billing/skaffold.yaml").join("\n"))
      .toMatch(/tagpolicy/);
    expect(check(edit("k8s/skaffold/infra.yaml", (s) => s.replace("os: [linux, darwin]", "os: linux")), "k8s/skaffold/infra.yaml").join("\n"))
      .toMatch(/must be array/);
    expect(check(edit("skaffold.yaml", (s) => s.replace("skaffold/v4beta14", "skaffold/v2beta29")), "skaffold.yaml").join("\n"))
      .toMatch(/apiVersion must be skaffold\/v4beta14/);
    expect(check(edit("k8s/skaffold/vllm.yaml", (s) => s.replace("      - name: vllm\n", "      - nam: vllm\n")), "k8s/skaffold/vllm.yaml").join("\n"))
      .toMatch(/required property 'name'|additional properties 'nam'/);
  });
});

describe("skaffold: modules", () => {
  const graph = loadGraph(tree);

  it("the root requires a module per service, the gateway, both GPU pools and the infrastructure; every path exists", () => {
    expect(graph.issues).toEqual([]);
    expect([...graph.modules.keys()].sort()).toEqual(["comfyui", "gateway", "infra", "luna", "migrate", "observability", "vllm", ...SERVICES].sort());
    expect(graph.root.name).toBe("luna");
    // Every module is reachable from the root (skaffold run deploys everything).
    expect(closure(graph.root).map((m) => m.name).sort()).toEqual([...graph.modules.keys()].sort());
    // and every skaffold file in the tree is part of it (no orphan a team edits in vain).
    expect([...graph.files].sort()).toEqual(allSkaffoldFiles().sort());
  });

  it("fails on a missing required file, a duplicate module name and a requires cycle", () => {
    expect(loadGraph(tree.with({ "services/billing/skaffold.yaml": null })).issues.join("\n")).toMatch(/requires services\/billing, but services\/billing\/skaffold.yaml does not exist/);
    expect(loadGraph(edit("services/auth/skaffold.yaml", (s) => s.replace("  name: auth", "  name: billing"))).issues.join("\n")).toMatch(/module name 'billing' is used by/);
    expect(loadGraph(edit("k8s/skaffold/migrate.yaml", (s) => s.replace("build:", "requires:\n  - path: ../../services/auth\nbuild:"))).issues.join("\n")).toMatch(/requires cycle/);
  });

  it("`-m <service>` activates that service and the migrations image only", () => {
    for (const s of SERVICES) {
      const mod = graph.modules.get(s)!;
      expect(closure(mod).map((m) => m.name).sort(), s).toEqual(["migrate", s].sort());
    }
  });

  it.each(SERVICES)("services/%s/skaffold.yaml builds only its own image (PROGRAM = the service) and deploys its own chart", (svc) => {
    expect(checkServiceModule(tree, graph, svc)).toEqual([]);
  });

  it("fails when a service module builds another program, a second image, or sets another service's image", () => {
    const g1 = loadGraph(edit("services/billing/skaffold.yaml", (s) => s.replace("PROGRAM: billing", "PROGRAM: auth")));
    expect(checkServiceModule(tree, g1, "billing").join("\n")).toMatch(/PROGRAM=auth, expected billing/);
    const g2 = loadGraph(edit("services/billing/skaffold.yaml", (s) => s.replace(
      "  artifacts:\n", "  artifacts:\n    - image: luna/auth\n      docker:\n        buildArgs:\n          PROGRAM: auth\n")));
    expect(checkServiceModule(tree, g2, "billing").join("\n")).toMatch(/builds 2 images/);
    const g3 = loadGraph(edit("services/billing/skaffold.yaml", (s) => s.replace('image.repository: "{{.IMAGE_REPO_luna_billing}}"', 'image.repository: "{{.IMAGE_REPO_luna_auth}}"')));
    expect(checkServiceModule(tree, g3, "billing").join("\n")).toMatch(/image.repository must be \{\{.IMAGE_REPO_luna_billing\}\}/);
  });

  it.each(profilesAndBase)("every artifact in setValueTemplates is built by the module or one it requires (profile %s)", (profile) => {
    expect(checkTemplateRefs(graph, profile)).toEqual([]);
    expect(checkArtifactsUsed(graph, profile)).toEqual([]);
  });

  it("artifact names become template variables with / - . : as _", () => {
    expect(templateName("luna/chat-router")).toBe("luna_chat_router");
    expect(templateName("registry.example:5000/luna/sim.vllm")).toBe("registry_example_5000_luna_sim_vllm");
    expect(templateArtifactRefs("{{.IMAGE_REPO_luna_image_worker}}:{{ .IMAGE_TAG_luna_image_worker }}")).toEqual(["luna_image_worker", "luna_image_worker"]);
  });

  it("fails on a template naming an artifact nobody builds, with the dash kept, or built only without the profile", () => {
    const typo = loadGraph(edit("services/chat-router/skaffold.yaml", (s) => s.replace('image.tag: "{{.IMAGE_TAG_luna_chat_router}}"\n', 'image.tag: "{{.IMAGE_TAG_luna_chat-router}}"\n')));
    expect(checkTemplateRefs(typo).join("\n")).toMatch(/names no artifact|IMAGE_TAG_luna_chat/);
    const other = loadGraph(edit("services/chat-router/skaffold.yaml", (s) => s.replace('"{{.IMAGE_TAG_luna_migrate}}"', '"{{.IMAGE_TAG_luna_sim_vllm}}"')));
    expect(checkTemplateRefs(other).join("\n")).toMatch(/from artifact 'luna_sim_vllm', which neither chat-router nor a module it requires builds/);
    // The simulator is built in the kind profile only; a gpu release that refers to it has nothing to deploy.
    const gpuSim = loadGraph(edit("k8s/skaffold/vllm.yaml", (s) => s.replace("          - ../values/luna/vllm.yaml\nprofiles:",
      "          - ../values/luna/vllm.yaml\n        setValueTemplates:\n          simulator.image.repository: \"{{.IMAGE_REPO_luna_sim_vllm}}\"\nprofiles:")));
    expect(checkTemplateRefs(gpuSim, "gpu").join("\n")).toMatch(/vllm \(-p gpu\).*luna_sim_vllm/);
    expect(checkTemplateRefs(gpuSim, "kind")).toEqual([]);
    const unused = loadGraph(edit("k8s/skaffold/comfyui.yaml", (s) => s.replace(/\n {14}simulator\.image\.repository.*\n.*simulator\.image\.tag.*/, "")));
    expect(checkArtifactsUsed(unused, "kind").join("\n")).toMatch(/builds luna\/sim-comfyui, but no release sets it/);
  });

  it.each(profilesAndBase)("chart paths, values files, contexts, the Dockerfile and its PROGRAM stages exist (profile %s)", (profile) => {
    expect(checkPaths(tree, graph, profile)).toEqual([]);
  });

  it("every file in k8s/values/luna is used by a module", () => {
    const used = new Set([...graph.modules.values()].flatMap((m) => profilesAndBase.flatMap((p) => releasesOf(m, p))).flatMap((r) => r.valuesFiles));
    for (const f of readdirSync(join(repoRoot, "k8s/values/luna"))) expect(used.has(join(repoRoot, "k8s/values/luna", f)), `k8s/values/luna/${f}`).toBe(true);
  });

  it("the PROGRAM values are the root Dockerfile's programs", () => {
    const programs = dockerfilePrograms(tree.read(join(repoRoot, "Dockerfile")));
    expect(programs).toEqual(expect.arrayContaining([...SERVICES, "migrate", "image-worker", "sim-vllm", "sim-comfyui"]));
  });

  it("fails on a missing chart, a missing values file, an unknown PROGRAM and a missing context", () => {
    const noChart = edit("services/billing/skaffold.yaml", (s) => s.replaceAll("../../charts/billing", "../../charts/biling"));
    expect(checkPaths(noChart, loadGraph(noChart)).join("\n")).toMatch(/chart charts\/biling\/Chart.yaml does not exist/);
    const noValues = edit("k8s/skaffold/vllm.yaml", (s) => s.replace("../../charts/vllm/ci/simulator-values.yaml", "../../charts/vllm/ci/simulatr-values.yaml"));
    expect(checkPaths(noValues, loadGraph(noValues), "kind").join("\n")).toMatch(/values file charts\/vllm\/ci\/simulatr-values.yaml does not exist/);
    const badProgram = edit("k8s/skaffold/comfyui.yaml", (s) => s.replace("PROGRAM: sim-comfyui", "PROGRAM: comfyui-sim"));
    expect(checkPaths(badProgram, loadGraph(badProgram), "kind").join("\n")).toMatch(/PROGRAM=comfyui-sim is not a program of Dockerfile/);
    const badContext = edit("k8s/skaffold/migrate.yaml", (s) => s.replace("context: ../..", "context: ../../nowhere"));
    expect(checkPaths(badContext, loadGraph(badContext)).join("\n")).toMatch(/context nowhere is not a directory/);
  });

  it("profiles: every module defines kind and gpu; kind loads local images and runs the simulators, gpu runs none", () => {
    expect(checkProfiles(graph)).toEqual([]);
    const kindImages = [...graph.modules.values()].flatMap((m) => artifactsOf(m, "kind")).map((a) => a.image).sort();
    expect(kindImages).toEqual([...SERVICES.map((s) => `luna/${s}`), "luna/image-worker", "luna/migrate", "luna/sim-comfyui", "luna/sim-vllm"].sort());
    const gpuImages = [...graph.modules.values()].flatMap((m) => artifactsOf(m, "gpu")).map((a) => a.image).sort();
    expect(gpuImages).toEqual([...SERVICES.map((s) => `luna/${s}`), "luna/image-worker", "luna/migrate"].sort());
    // The same Helm releases exist in both profiles (only their values differ).
    const releases = (p: string): string[] => [...graph.modules.values()].flatMap((m) => releasesOf(m, p)).map((r) => `${r.module}/${r.name}@${r.namespace}`).sort();
    expect(releases("kind")).toEqual(releases("gpu"));
    expect(releases("kind")).toEqual(expect.arrayContaining(["gateway/gateway@luna", "vllm/vllm@luna", "comfyui/comfyui@luna",
      "observability/luna-observability@luna", ...SERVICES.map((s) => `${s}/${s}@luna`)]));
  });

  it("profiles: fails on a missing profile, a pushed kind build, a simulator in gpu and a patch by index", () => {
    const noGpu = loadGraph(edit("k8s/skaffold/gateway.yaml", (s) => s.replace(/\n {2}- name: gpu\n?$/, "\n")));
    expect(checkProfiles(noGpu).join("\n")).toMatch(/gateway: no 'gpu' profile/);
    const pushed = loadGraph(edit("services/auth/skaffold.yaml", (s) => s.replace("push: false", "push: true")));
    expect(checkProfiles(pushed).join("\n")).toMatch(/auth \(-p kind\): build.local.push must be false/);
    const sim = loadGraph(edit("k8s/skaffold/vllm.yaml", (s) => s.replace(/ {2}- name: gpu\n?$/, "  - name: gpu\n    deploy:\n      helm:\n        releases:\n          - name: vllm\n            chartPath: ../../charts/vllm\n            setValues:\n              simulator.enabled: true\n")));
    expect(checkProfiles(sim).join("\n")).toMatch(/vllm \(-p gpu\): release vllm sets simulator.enabled=true/);
    const patched = loadGraph(edit("k8s/skaffold/gateway.yaml", (s) => s.replace(/ {2}- name: gpu\n?$/, "  - name: gpu\n    patches:\n      - op: replace\n        path: /deploy/helm/releases/0/name\n        value: edge\n")));
    expect(checkProfiles(patched).join("\n")).toMatch(/uses JSON patches/);
  });

  it("profile overlay follows skaffold: lists replaced whole, the build type (local) replaced, other fields kept", () => {
    const cfg = { build: { artifacts: [{ image: "a" }], tagPolicy: { gitCommit: {} }, local: { useBuildkit: true } },
      profiles: [{ name: "kind", build: { local: { push: false } } }, { name: "x", build: { artifacts: [{ image: "b" }] } }] };
    expect(effectiveConfig(cfg, "kind").build).toEqual({ artifacts: [{ image: "a" }], tagPolicy: { gitCommit: {} }, local: { push: false } });
    expect(effectiveConfig(cfg, "x").build).toEqual({ artifacts: [{ image: "b" }], tagPolicy: { gitCommit: {} }, local: { useBuildkit: true } });
    expect(effectiveConfig(cfg).profiles).toBeUndefined();
  });
});
