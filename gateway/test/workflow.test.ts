// .github/workflows/gateway.yml cannot run here; this keeps it a valid workflow (GitHub's own parser) and consistent
// with the local checks: the same Envoy image as envoy-run.ts and the gateway chart, the same generator and file, the e2e topology name
// the suite really has, the live test it names. A broken copy shows each check failing.
import { readFileSync } from "node:fs";
import { NoOperationTraceWriter, parseWorkflow } from "@actions/workflow-parser";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ENVOY_IMAGE } from "../src/envoy-run.js";

const WORKFLOW = new URL("../../.github/workflows/gateway.yml", import.meta.url);
const E2E_TEST = new URL("../../tools/e2e/test/e2e.test.ts", import.meta.url);
const text = readFileSync(WORKFLOW, "utf8");

function problems(content: string): string[] {
  const out: string[] = [];
  const parsed = parseWorkflow({ name: "gateway.yml", content }, new NoOperationTraceWriter());
  for (const e of parsed.context.errors.getErrors()) out.push(`workflow: ${e.message}`);
  const wf = parse(content) as { env?: Record<string, string>; jobs?: Record<string, { steps?: Array<{ run?: string; env?: Record<string, string> }> }> };
  if (wf.env?.ENVOY_IMAGE !== ENVOY_IMAGE) out.push(`ENVOY_IMAGE is ${String(wf.env?.ENVOY_IMAGE)}, envoy-run.ts uses ${ENVOY_IMAGE}`);
  const runs = Object.values(wf.jobs ?? {}).flatMap((j) => j.steps ?? []);
  const all = runs.map((s) => s.run ?? "").join("\n");
  if (!/gateway\/src\/generate\.ts --check/.test(all)) out.push("no step checks the committed config is fresh");
  if (!/--mode validate -c \/etc\/envoy\/envoy\.yaml/.test(all) || !all.includes("charts/gateway/files")) out.push("no `envoy --mode validate` of charts/gateway/files/envoy.yaml");
  if (!all.includes("gateway/test/envoy-live.test.ts")) out.push("the live Envoy test is not run");
  const e2e = /vitest run tools\/e2e -t "([^"]+)"/.exec(all);
  const describeName = /describe\.each\(TOPOLOGIES\)\("([^"]+)%s"/.exec(readFileSync(E2E_TEST, "utf8"))?.[1];
  if (!e2e || !describeName || e2e[1] !== `${describeName}envoy`) out.push(`the e2e step filters "${e2e?.[1] ?? "-"}", the suite names "${describeName ?? "?"}envoy"`);
  if (!runs.some((s) => s.env?.LUNA_E2E_ENVOY === "1" && (s.run ?? "").includes("tools/e2e"))) out.push("the e2e step does not enable the envoy topology");
  return out;
}

const CHART_VALUES = new URL("../../charts/gateway/values.yaml", import.meta.url);

describe(".github/workflows/gateway.yml", () => {
  it("is a valid workflow, consistent with the local checks", () => {
    expect(problems(text)).toEqual([]);
  });

  it("tests the Envoy version the gateway chart deploys", () => {
    let values: { image?: { registry?: string; repository?: string; tag?: string } };
    try {
      values = parse(readFileSync(CHART_VALUES, "utf8")) as typeof values;
    } catch {
      return; // the chart is not there (yet): nothing to agree with
    }
    const { registry, repository, tag } = values.image ?? {};
    expect(ENVOY_IMAGE).toBe(`${registry ? `${registry}/` : ""}${repository}:${tag}`);
  });

  it.each([
    ["another Envoy image", (t: string) => t.replace(ENVOY_IMAGE, "docker.io/envoyproxy/envoy:v1.20-latest"), /ENVOY_IMAGE is/],
    ["an e2e filter that matches no topology", (t: string) => t.replace("Luna end to end: envoy", "Luna e2e: envoy"), /the e2e step filters/],
    ["no validate step", (t: string) => t.replace(/--mode validate -c \/etc\/envoy\/envoy\.yaml/g, "--version"), /envoy --mode validate/],
    ["a schema error", (t: string) => t.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"), /workflow: /],
  ])("catches %s", (_what, breakIt, problem) => {
    expect(problems(breakIt(text)).join("\n")).toMatch(problem);
  });
});
