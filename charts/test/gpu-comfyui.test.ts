// charts/comfyui beyond the generic loop of charts.test.ts (which lints, renders and validates every ci variant, runs
// the cross-object and GPU_CHART_CHECKS on each, and refuses ci/invalid and ci/invalid-render): what the ComfyUI pool
// renders (ComfyUI on 127.0.0.1 and behind no Service, the worker sidecar's env, the nats-jetstream trigger on
// image-job's own consumer name), and each ComfyUI check shown failing on a broken copy of a good render.
import { spawn, spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { dependencyBuild, formatIssues, repoRoot, validateObjects } from "@luna/kube-check";
import { freePorts } from "@luna/kit/localstack";
import { poolDurable } from "../../services/image-job/src/domain/job.js";
import { chartRenderer, edit } from "./chart-renders.js";
import { crossCheck } from "./cross-checks.js";
import { checkComfyPods, checkComfyScaling, checkIngressOnlyFrom, GPU_POOL_CLIENTS } from "./gpu-checks.js";

const CHART = "charts/comfyui";
const dir = join(repoRoot, CHART);
const NS = "luna";
const POOL_PODS = GPU_POOL_CLIENTS.comfyui.pods;
/** The Luna apps allowed on the workers' admin port: the registry's health probes (GET /readyz). */
const PROBERS = GPU_POOL_CLIENTS.comfyui.apps;
/** A free port standing in for the worker's admin port in the preStop commands' test. */
let WORKER_ADMIN_PORT: number;

const render = chartRenderer("comfyui", { release: "comfyui", namespace: NS });
/* eslint-disable @typescript-eslint/no-explicit-any */
const deployment = (c: any[], name = "comfyui-flux1-schnell") => c.find((o) => o.kind === "Deployment" && o.metadata.name === name);
const container = (d: any, name: string) => d.spec.template.spec.containers.find((x: { name: string }) => x.name === name);

beforeAll(async () => {
  [WORKER_ADMIN_PORT] = (await freePorts(1)) as [number];
  await dependencyBuild(CHART);
}, 300_000);

describe("comfyui chart", () => {
  const ci = readdirSync(join(dir, "ci")).filter((f) => f.endsWith("-values.yaml")).sort();

  it("ships defaults, simulator, production-like and scale-to-zero variants", () => {
    expect(ci).toEqual(expect.arrayContaining(["default-values.yaml", "simulator-values.yaml", "production-values.yaml", "scale-to-zero-values.yaml"]));
  });

  it("scales each pool on the lag of image-job's durable consumer for it", async () => {
    const objects = await render("scale-to-zero-values.yaml");
    const sos = objects.filter((o) => o.kind === "ScaledObject") as any[];
    expect(sos.map((s) => [s.metadata.name, s.spec.minReplicaCount, s.spec.triggers[0].metadata])).toEqual([
      ["comfyui-flux1-schnell", 1, { natsServerMonitoringEndpoint: "nats:8222", account: "$G", stream: "LUNA_IMAGE_JOBS",
        consumer: poolDurable("flux1-schnell"), lagThreshold: "2", activationLagThreshold: "0" }],
      ["comfyui-sdxl-base", 0, { natsServerMonitoringEndpoint: "nats:8222", account: "$G", stream: "LUNA_IMAGE_JOBS",
        consumer: poolDurable("sdxl-base-1.0"), lagThreshold: "2", activationLagThreshold: "0" }],
    ]);
    expect(poolDurable("sdxl-base-1.0")).toBe("image-worker-sdxl-base-1-0");
    for (const s of sos) expect(s.spec.triggers[0].metricType).toBe("AverageValue");
  });

  it("runs the simulator on 127.0.0.1 beside the real worker, without GPUs or model storage", async () => {
    const objects = await render("simulator-values.yaml");
    expect(objects.filter((o) => o.kind === "PersistentVolumeClaim")).toEqual([]);
    const d = deployment(objects as any[]);
    expect(container(d, "comfyui").image).toBe("luna/sim-comfyui:0.1.0");
    expect(container(d, "comfyui").env).toContainEqual({ name: "SIM_COMFYUI_HOST", value: "127.0.0.1" });
    expect(container(d, "worker").image).toBe("luna/image-worker:0.1.0");
    expect(JSON.stringify(d.spec.template.spec.containers.map((c: { resources: unknown }) => c.resources))).not.toContain("gpu");
  });

  it("the validator rejects a misspelled field and metricType inside KEDA metadata", async () => {
    const broken = edit(await render(), (c) => {
      const so = c.find((o) => o.kind === "ScaledObject");
      so.spec.maxReplicas = 3;
      so.spec.triggers[0].metadata.metricType = "AverageValue";
    });
    const issues = formatIssues(await validateObjects(broken));
    expect(issues).toMatch(/unknown field "maxReplicas"/);
    expect(issues).toMatch(/metricType/);
  });
});

describe("comfyui drain on scale-down", () => {
  // The rendered preStop commands, run here as kubelet would run them: they wait while the worker's admin port
  // answers and return once it is closed (the worker has drained and exited), so ComfyUI outlives the drain.
  async function waitsForPortToClose(command: string[]): Promise<void> {
    const server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(WORKER_ADMIN_PORT, "127.0.0.1", r));
    const child = spawn(command[0]!, command.slice(1), { stdio: "ignore" });
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    try {
      const early = await Promise.race([exited, new Promise((r) => setTimeout(() => r("waiting"), 2500))]);
      expect(early).toBe("waiting"); // the worker still runs: ComfyUI must not stop yet
    } finally {
      await new Promise((r) => server.close(r));
    }
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r("still waiting"), 5000))])).toBe(0);
  }

  it("the worker gets IMAGE_WORKER_DRAIN_TIMEOUT, the grace covers it, and ComfyUI's preStop waits for the worker", async () => {
    for (const values of ["default-values.yaml", "simulator-values.yaml"]) {
      const d = deployment(await render(values, ["--set", `worker.adminPort=${WORKER_ADMIN_PORT}`]) as any[]);
      expect(container(d, "worker").env).toContainEqual({ name: "IMAGE_WORKER_DRAIN_TIMEOUT", value: "60s" });
      expect(d.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(105);
      const command = container(d, "comfyui").lifecycle.preStop.exec.command as string[];
      if (command[0] === "python3" && spawnSync("python3", ["--version"]).status !== 0) continue; // no python here
      await waitsForPortToClose(command);
    }
  }, 30_000);

  it("drainSeconds 0 hands jobs back at once: no preStop wait", async () => {
    const d = deployment(await render("default-values.yaml", ["--set", "defaults.drainSeconds=0"]) as any[]);
    expect(container(d, "worker").env).toContainEqual({ name: "IMAGE_WORKER_DRAIN_TIMEOUT", value: "0s" });
    expect(container(d, "comfyui").lifecycle).toBeUndefined();
  });

  it("the check refuses a draining worker whose ComfyUI does not wait for it, or a grace shorter than the drain", async () => {
    const broken = edit(await render(), (c) => {
      const d = deployment(c);
      delete container(d, "comfyui").lifecycle;
      d.spec.template.spec.terminationGracePeriodSeconds = 60;
    });
    const problems = checkComfyPods(broken).join("\n");
    expect(problems).toMatch(/comfyui: no preStop waiting for the worker \(admin port 9090\) to exit/);
    expect(problems).toMatch(/terminationGracePeriodSeconds 60 does not cover the worker's drain \(60 s\) and shutdown steps/);
  });
});

describe("comfyui checks fail on broken renders", () => {
  it("ComfyUI listening on every interface, declaring a port, or behind a Service", async () => {
    const objects = await render();
    const broken = edit(objects, (c) => {
      const comfy = container(deployment(c), "comfyui");
      comfy.args[comfy.args.indexOf("--listen") + 1] = "0.0.0.0";
      comfy.ports = [{ name: "http", containerPort: 8188 }];
      c.find((o) => o.kind === "Service").spec.ports.push({ name: "comfy", port: 8188, targetPort: 8188 });
    });
    const problems = checkComfyPods(broken).join("\n");
    expect(problems).toMatch(/ComfyUI must run with --listen 127.0.0.1/);
    expect(problems).toMatch(/the ComfyUI container declares ports/);
    expect(problems).toMatch(/Service\/comfyui-flux1-schnell-workers exposes ComfyUI's port 8188/);
    const sim = edit(await render("simulator-values.yaml"), (c) => {
      container(deployment(c), "comfyui").env = container(deployment(c), "comfyui").env.filter((e: { name: string }) => e.name !== "SIM_COMFYUI_HOST");
    });
    // The simulator image defaults to 0.0.0.0 (root Dockerfile): without the chart's variable it would be reachable.
    expect(checkComfyPods(sim).join("\n")).toMatch(/the ComfyUI simulator listens on 0.0.0.0, not 127.0.0.1 only/);
  });

  it("a worker with a variable it does not read, the wrong ComfyUI URL, or no pool", async () => {
    const broken = edit(await render(), (c) => {
      const w = container(deployment(c), "worker");
      w.env.push({ name: "IMAGE_WORKER_POOL", value: "x" });
      w.env.find((e: { name: string }) => e.name === "COMFYUI_URL").value = "http://comfyui:8188";
      w.env = w.env.filter((e: { name: string }) => e.name !== "IMAGE_WORKER_POOLS");
    });
    const problems = checkComfyPods(broken).join("\n");
    expect(problems).toMatch(/sets IMAGE_WORKER_POOL, which image-worker does not read/);
    expect(problems).toMatch(/COMFYUI_URL http:\/\/comfyui:8188 is not http:\/\/127.0.0.1:8188/);
    expect(problems).toMatch(/IMAGE_WORKER_POOLS is not set/);
  });

  it("a KEDA trigger on another consumer, with a scheme in the endpoint, or without its Deployment", async () => {
    const objects = await render();
    const broken = edit(objects, (c) => {
      const so = c.find((o) => o.kind === "ScaledObject" && o.metadata.name === "comfyui-sdxl-base");
      so.spec.triggers[0].metadata.consumer = "image-worker-sdxl-base-1.0";
      const flux = c.find((o) => o.kind === "ScaledObject" && o.metadata.name === "comfyui-flux1-schnell");
      flux.spec.triggers[0].metadata.natsServerMonitoringEndpoint = "http://nats:8222";
    });
    const problems = checkComfyScaling(broken).join("\n");
    expect(problems).toMatch(/no nats-jetstream trigger on consumer image-worker-sdxl-base-1-0 \(pool sdxl-base-1.0\)/);
    expect(problems).toMatch(/must be host:port without a scheme/);
    const orphan = edit(objects, (c) => { c.find((o) => o.kind === "ScaledObject").spec.scaleTargetRef.name = "comfyui-gone"; });
    expect(checkComfyScaling(orphan).join("\n")).toMatch(/targets Deployment\/comfyui-gone, which is not rendered/);
    expect(crossCheck(orphan).join("\n")).toMatch(/targets Deployment\/comfyui-gone/);
  });

  it("a NetworkPolicy letting another Luna app in, or not the registry's probes (nothing but Prometheus, the registry and helm tests may connect)", async () => {
    const broken = edit(await render(), (c) => {
      c.find((o) => o.kind === "NetworkPolicy").spec.ingress.push({ from: [{ podSelector: { matchLabels: { "app.kubernetes.io/name": "image-job", "app.kubernetes.io/part-of": "luna" } } }] });
    });
    expect(checkIngressOnlyFrom(broken, POOL_PODS, PROBERS).join("\n")).toMatch(/admits image-job \(only model-registry may connect\)/);
    const unprobed = edit(await render(), (c) => {
      for (const rule of c.find((o) => o.kind === "NetworkPolicy").spec.ingress) {
        rule.from = rule.from.filter((p: any) => p.podSelector?.matchLabels?.["app.kubernetes.io/name"] !== "model-registry");
      }
    });
    expect(checkIngressOnlyFrom(unprobed, POOL_PODS, PROBERS).join("\n")).toMatch(/does not admit model-registry/);
  });

  it("the admin-only Service selecting no pod", async () => {
    const broken = edit(await render(), (c) => { c.find((o) => o.kind === "Service").spec.selector["luna.dev/pool"] = "gone"; });
    expect(crossCheck(broken).join("\n")).toMatch(/Service\/comfyui-flux1-schnell-workers selects no pod/);
  });
});
