// k8s/ci/e2e.sh (the deploy workflow's end-to-end step, `make cluster-test`) cannot run here: it needs a cluster.
// What can be checked is that it agrees with what `skaffold run -p kind` deploys, rendered with the real helm: the
// Services it port-forwards exist with those ports (the gateway; the vLLM simulator the seeded catalog's text models
// point at, so the faults it sets reach the replies; the object store the presigned image URLs name), its default
// admin is the one the auth release creates, and the LUNA_E2E_* variables it sets are those the suite reads.
// Each check is shown failing on a broken copy.
import { accessSync, constants, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { ensureHelm, renderChart, type K8sObject } from "@luna/kube-check";
import { Tree, loadGraph, releasesOf, renderRelease, repoRoot } from "./skaffold-lib.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const SCRIPT = "k8s/ci/e2e.sh";
const script = readFileSync(join(repoRoot, SCRIPT), "utf8");
const remoteSource = readFileSync(join(repoRoot, "tools/e2e/src/remote.ts"), "utf8");
const makefile = readFileSync(join(repoRoot, "Makefile"), "utf8");

/** What the kind install renders that the script depends on. */
interface KindInstall {
  /** Service name → its ports, per release (`luna-infra` for the bootstrap's chart). */
  services: Map<string, number[]>;
  /** Deployment name → replicas (undefined: autoscaled), of the vllm release. */
  vllmReplicas: Map<string, number | undefined>;
  /** model-registry's REGISTRY_SEED_VLLM_URL. */
  seedVllmUrl: string;
  /** image-job's IMAGE_S3_ENDPOINT: the origin presigned image URLs name. */
  s3Endpoint: string;
  /** auth's AUTH_ADMIN_EMAIL. */
  adminEmail: string;
}

/** The LUNA_E2E_* variables the remote topology reads. */
function variablesRead(source: string): Set<string> {
  return new Set([...source.matchAll(/(?:env\.|need\(")(LUNA_E2E_[A-Z_]+)/g)].map((m) => m[1]!));
}

/** Problems with the script against the kind install (empty = fine). */
function scriptProblems(text: string, kind: KindInstall, read: Set<string>): string[] {
  const problems: string[] = [];
  const service = (what: string, name: string | undefined, port: string | undefined): void => {
    if (!name || !port) return void problems.push(`${what}: no port-forward of a Service with a default name and a port`);
    const ports = kind.services.get(name);
    if (!ports) problems.push(`${what}: no Service ${name} in the kind install`);
    else if (!ports.includes(Number(port))) problems.push(`${what}: Service ${name} has no port ${port} (it has ${ports.join(", ")})`);
  };
  const gateway = /forward gateway "svc\/\$\{LUNA_E2E_GATEWAY_SERVICE:-([\w-]+)\}" (\d+)/.exec(text);
  service("gateway", gateway?.[1], gateway?.[2]);
  const vllm = /forward vllm "svc\/\$\{LUNA_E2E_VLLM_SERVICE:-([\w-]+)\}" (\d+)/.exec(text);
  service("vllm", vllm?.[1], vllm?.[2]);
  const seed = new URL(kind.seedVllmUrl);
  if (vllm && (vllm[1] !== seed.hostname || vllm[2] !== seed.port)) {
    problems.push(`vllm: the script controls ${vllm[1]}:${vllm[2]}, the seeded catalog's text models are served at ${seed.host}`);
  }
  // A port-forward reaches one pod: the faults the scenario sets must be those of every replica serving the model.
  if (vllm && kind.vllmReplicas.get(vllm[1]!) !== 1) {
    problems.push(`vllm: Deployment ${vllm[1]} runs ${kind.vllmReplicas.get(vllm[1]!) ?? "autoscaled"} replicas, the faults set through one port-forward would miss the others`);
  }
  const store = /STORE="\$\{LUNA_E2E_OBJECT_STORE_SERVICE-([\w-]+)\}"/.exec(text)?.[1];
  const storePort = /forward store "svc\/\$STORE" (\d+)/.exec(text)?.[1];
  service("object store", store, storePort);
  const mapped = /ORIGIN_MAP="http:\/\/\$STORE:(\d+)=http:\/\/127\.0\.0\.1:\$PORT_store"/.exec(text)?.[1];
  if (store && `http://${store}:${mapped}` !== new URL(kind.s3Endpoint).origin) {
    problems.push(`object store: the script maps http://${store}:${mapped ?? "?"}, image URLs name ${new URL(kind.s3Endpoint).origin}`);
  }
  const admin = /LUNA_ADMIN_EMAIL:-([^}]+)\}/.exec(text)?.[1];
  if (admin !== kind.adminEmail) problems.push(`admin: the script signs in as ${admin ?? "?"}, the auth release creates ${kind.adminEmail}`);
  for (const m of text.matchAll(/^(LUNA_E2E_[A-Z_]+)=/gm)) if (!read.has(m[1]!)) problems.push(`${m[1]} is set but tools/e2e does not read it`);
  for (const v of ["LUNA_E2E_REMOTE_URL", "LUNA_E2E_ADMIN_EMAIL", "LUNA_E2E_ADMIN_PASSWORD", "LUNA_E2E_VLLM_URL", "LUNA_E2E_ORIGIN_MAP"]) {
    if (!new RegExp(`^${v}=`, "m").test(text)) problems.push(`${v} is not set`);
  }
  if (!/vitest run tools\/e2e\b/.test(text)) problems.push("the suite (vitest run tools/e2e) is not run");
  return problems;
}

const graph = loadGraph(new Tree());
const kindRelease = (module: string) => renderRelease(releasesOf(graph.modules.get(module)!, "kind")[0]!);
const configValue = (objects: K8sObject[], key: string): string => {
  const cm = objects.find((o) => o.kind === "ConfigMap" && (o as Any).data?.[key] !== undefined) as Any;
  if (!cm) throw new Error(`no ConfigMap with ${key}`);
  return String(cm.data[key]);
};

let kind: KindInstall;
beforeAll(async () => {
  await ensureHelm();
  const [gateway, vllm, registry, imageJob, auth, infra] = await Promise.all([
    kindRelease("gateway"), kindRelease("vllm"), kindRelease("model-registry"), kindRelease("image-job"), kindRelease("auth"),
    renderChart("k8s/charts/luna-infra", { release: "luna-infra", namespace: "luna", valuesFiles: ["k8s/values/infra-kind.yaml"] }).then((r) => r.objects),
  ]);
  const services = new Map<string, number[]>();
  for (const o of [...gateway, ...vllm, ...infra]) {
    if (o.kind === "Service") services.set(o.metadata!.name!, ((o as Any).spec.ports as Array<{ port: number }>).map((p) => p.port));
  }
  const vllmReplicas = new Map(vllm.filter((o) => o.kind === "Deployment").map((d) => [d.metadata!.name!, (d as Any).spec.replicas as number | undefined]));
  kind = { services, vllmReplicas, seedVllmUrl: configValue(registry, "REGISTRY_SEED_VLLM_URL"), s3Endpoint: configValue(imageJob, "IMAGE_S3_ENDPOINT"),
    adminEmail: configValue(auth, "AUTH_ADMIN_EMAIL") };
}, 240_000);

describe(`${SCRIPT} against the kind install`, () => {
  it("port-forwards Services the kind install has, controls the simulator the catalog uses, signs in as its admin", () => {
    expect(scriptProblems(script, kind, variablesRead(remoteSource))).toEqual([]);
    expect(kind.services.get("gateway")).toContain(8080);
  });

  it("fails when the simulator it controls runs more than one replica", () => {
    const two = { ...kind, vllmReplicas: new Map([...kind.vllmReplicas, ["vllm-llama-3-1-8b", 2]]) };
    expect(scriptProblems(script, two, variablesRead(remoteSource))).toEqual(
      ["vllm: Deployment vllm-llama-3-1-8b runs 2 replicas, the faults set through one port-forward would miss the others"]);
  });

  it("is what `make cluster-test` runs, and is executable", () => {
    expect(makefile).toMatch(/^cluster-test:.*## .*\n\tk8s\/ci\/e2e\.sh /m);
    expect(() => accessSync(join(repoRoot, SCRIPT), constants.X_OK)).not.toThrow();
    expect(script.startsWith("#!/usr/bin/env bash\n")).toBe(true);
  });

  it.each([
    ["a Service the install lacks", (s: string) => s.replace("LUNA_E2E_VLLM_SERVICE:-vllm-llama-3-1-8b", "LUNA_E2E_VLLM_SERVICE:-vllm-llama"),
      /vllm: no Service vllm-llama in the kind install/],
    ["another model's simulator", (s: string) => s.replace("LUNA_E2E_VLLM_SERVICE:-vllm-llama-3-1-8b", "LUNA_E2E_VLLM_SERVICE:-vllm-qwen2-5-7b"),
      /vllm: the script controls vllm-qwen2-5-7b:8000, the seeded catalog's text models are served at vllm-llama-3-1-8b:8000/],
    ["a port the gateway Service lacks", (s: string) => s.replace(/(forward gateway "[^"]+") 8080/, "$1 9901"), /gateway: Service gateway has no port 9901/],
    ["an origin map naming another port", (s: string) => s.replace("http://$STORE:9000=", "http://$STORE:9001="),
      /object store: the script maps http:\/\/minio:9001, image URLs name http:\/\/minio:9000/],
    ["another admin", (s: string) => s.replace("LUNA_ADMIN_EMAIL:-admin@luna.local", "LUNA_ADMIN_EMAIL:-root@luna.local"), /admin: the script signs in as root@luna.local/],
    ["a variable the suite does not read", (s: string) => s.replace("LUNA_E2E_VLLM_URL=", "LUNA_E2E_VLM_URL="),
      /LUNA_E2E_VLM_URL is set but tools\/e2e does not read it[\s\S]*LUNA_E2E_VLLM_URL is not set/],
  ])("fails on %s", (_what, breakIt, problem) => {
    const broken = breakIt(script);
    expect(broken).not.toBe(script);
    expect(scriptProblems(broken, kind, variablesRead(remoteSource)).join("\n")).toMatch(problem);
  });
});
