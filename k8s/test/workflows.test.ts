// The GitHub Actions workflows, checked here although they cannot run here: GitHub's own parser and schema, the job
// graph, every make target and script they call; and for deploy.yml, that it installs Luna in the order the runbook
// gives, with the tool versions the offline checks use. Each check is shown failing on a broken copy.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { HELM_VERSION, TEMPLATE_FLAGS } from "@luna/kube-check";
import { actionsParserErrors, checkCommands, checkStructure, makeTargets, readWorkflow, scriptPaths, type Workflow } from "./workflow-lib.js";
import { PROFILES, Tree, loadGraph, repoRoot } from "./skaffold-lib.js";

const DIR = join(repoRoot, ".github/workflows");
const files = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f)).sort();
const read = (f: string): string => readFileSync(join(repoRoot, f), "utf8");
const makefile = read("Makefile");
const deployText = read(".github/workflows/deploy.yml");
const deploy = readWorkflow("deploy.yml", deployText);

function check(name: string, content: string): Promise<string[]> {
  return actionsParserErrors(name, content);
}

describe("every workflow", () => {
  it("finds the workflows", () => {
    expect(files).toEqual(expect.arrayContaining(["deploy.yml", "gateway.yml"]));
  });

  it.each(files)("%s parses with GitHub's workflow parser and schema", async (f) => {
    expect(await check(f, readFileSync(join(DIR, f), "utf8"))).toEqual([]);
  });

  it.each(files)("%s: jobs have steps, needs name jobs, actions are pinned, and every make target and script exists", (f) => {
    const w = readWorkflow(f, readFileSync(join(DIR, f), "utf8"));
    expect(checkStructure(w)).toEqual([]);
    expect(checkCommands(repoRoot, w, makefile)).toEqual([]);
  });
});

describe("the checks fail on broken workflows", () => {
  it("GitHub's parser: a misspelled key, a bad expression, a wrong type", async () => {
    expect((await check("x.yml", deployText.replace("runs-on: ubuntu-24.04\n    timeout-minutes: 45", "run-on: ubuntu-24.04\n    timeout-minutes: 45"))).join("\n"))
      .toMatch(/Unexpected value 'run-on'|Required property is missing: runs-on/);
    expect((await check("x.yml", deployText.replace("${{ env.HELM_VERSION }}", "${{ env.HELM_VERSION ) }}"))).join("\n")).toMatch(/Unexpected|expression/i);
    expect((await check("x.yml", deployText.replace("timeout-minutes: 45", "timeout-minutes: [45]"))).length).toBeGreaterThan(0);
  });

  it("structure: needs naming no job, a cycle, a step with neither run nor uses, an unpinned action", () => {
    const edit = (fn: (s: string) => string): Workflow => readWorkflow("x.yml", fn(deployText));
    expect(checkStructure(edit((s) => s.replace("needs: [test, helm-lint, kubeconform, chart-testing]", "needs: [test, helm-lnt]"))).join("\n"))
      .toMatch(/job kind needs 'helm-lnt', which is not a job/);
    expect(checkStructure(edit((s) => s.replace("  test:\n    name: make test\n", "  test:\n    name: make test\n    needs: kind\n"))).join("\n")).toMatch(/needs cycle/);
    expect(checkStructure(edit((s) => s.replace("      - run: k8s/ci/helm-lint.sh", "      - name: nothing"))).join("\n")).toMatch(/neither run nor uses/);
    expect(checkStructure(edit((s) => s.replace("helm/chart-testing-action@v2.7.0", "helm/chart-testing-action"))).join("\n")).toMatch(/without a version/);
  });

  it("commands: a make target that does not exist, a missing script, a script that is not executable", () => {
    const w = readWorkflow("x.yml", deployText.replace("run: make cluster-up", "run: make cluster-upp").replace("k8s/ci/wait-ready.sh luna", "k8s/ci/wait-ready2.sh luna"));
    const issues = checkCommands(repoRoot, w, makefile).join("\n");
    expect(issues).toMatch(/make cluster-upp: no such target/);
    expect(issues).toMatch(/k8s\/ci\/wait-ready2.sh does not exist/);
    const root = mkdtempSync(join(tmpdir(), "luna-wf-"));
    try {
      mkdirSync(join(root, "k8s"));
      writeFileSync(join(root, "k8s/run.sh"), "#!/bin/sh\n", { mode: 0o644 });
      const notExec = checkCommands(root, readWorkflow("x.yml", "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: k8s/run.sh\n"), makefile);
      expect(notExec).toEqual(["x.yml: a step 1: k8s/run.sh is not executable"]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    expect(makeTargets("make deps && make -j2 images PROFILE=kind; (make test)")).toEqual(["deps", "images", "test"]);
    expect(scriptPaths("LUNA_URL=x k8s/smoke.sh; node_modules/.bin/vitest run tools/e2e -t x; $TSX gateway/src/generate.ts")).toEqual(["k8s/smoke.sh", "tools/e2e", "gateway/src/generate.ts"]);
  });
});

describe("deploy.yml", () => {
  const kind = deploy.jobs.kind!;
  const runs = deploy.steps.filter((s) => s.job === "kind").map((s) => s.run ?? s.uses ?? "");
  const at = (re: RegExp): number => {
    const i = runs.findIndex((r) => re.test(r));
    expect(i, `${re} in the kind job`).toBeGreaterThanOrEqual(0);
    return i;
  };

  it("runs make test, the lint jobs with the real tools, and installs on kind only after all of them", () => {
    expect(deploy.doc.on).toMatchObject({ push: null });
    expect(deploy.steps.some((s) => s.job === "test" && s.run === "make test")).toBe(true);
    expect(kind.needs).toEqual(["test", "helm-lint", "kubeconform", "chart-testing"]);
    expect(deploy.steps.some((s) => s.job === "helm-lint" && /k8s\/ci\/helm-lint.sh/.test(s.run ?? ""))).toBe(true);
    expect(deploy.steps.some((s) => s.job === "kubeconform" && /k8s\/ci\/kubeconform.sh/.test(s.run ?? ""))).toBe(true);
    expect(read("k8s/ci/kubeconform.sh")).toMatch(/kubeconform -strict[\s\S]*CRDs-catalog/);
    expect(deploy.steps.some((s) => s.job === "chart-testing" && /^ct lint --config k8s\/ci\/ct.yaml --all$/.test(s.run ?? ""))).toBe(true);
    const ct = parse(read("k8s/ci/ct.yaml")) as { "chart-dirs": string[]; "lint-conf": string };
    for (const d of ct["chart-dirs"]) expect(readdirSync(join(repoRoot, d)).length, d).toBeGreaterThan(0);
    expect(() => parse(read(ct["lint-conf"]))).not.toThrow();
    // Envoy's validation is gateway.yml's (referenced, not duplicated).
    expect(read(".github/workflows/gateway.yml")).toMatch(/--mode validate/);
    expect(deployText).toMatch(/gateway\.yml/);
  });

  it("builds with Docker, creates the cluster, bootstraps, runs skaffold -p kind, waits, helm test, the gateway smoke, then the end-to-end suite", () => {
    const order = [/^make images$/, /^make cluster-up$/, /^k8s\/bootstrap.sh --profile kind$/, /^skaffold run -p kind\b/, /k8s\/ci\/wait-ready.sh/,
      /k8s\/ci\/helm-test.sh/, /k8s\/smoke.sh/, /^make cluster-test$/].map(at);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect(at(/port-forward svc\/gateway 8080:8080/)).toBe(at(/k8s\/smoke.sh/));
    // `make cluster-test` is k8s/ci/e2e.sh, the suite's remote topology (k8s/test/e2e-wiring.test.ts checks the script).
    expect(makefile).toMatch(/^cluster-test:.*\n\tk8s\/ci\/e2e\.sh /m);
    // skaffold -p kind names a profile every module defines.
    expect(PROFILES).toContain("kind");
    expect(loadGraph(new Tree()).issues).toEqual([]);
  });

  it("on failure dumps pod logs and events and uploads them", () => {
    const failing = deploy.steps.filter((s) => s.job === "kind" && s.if === "failure()");
    expect(failing.map((s) => s.run ?? s.uses)).toEqual([expect.stringMatching(/^k8s\/ci\/dump.sh luna/), "actions/upload-artifact@v4"]);
    expect(read("k8s/ci/dump.sh")).toMatch(/kubectl get events -A --sort-by=.lastTimestamp[\s\S]*logs .*--previous/);
  });

  it("pins Helm 3 at the version the offline checks run, and a skaffold that reads skaffold/v4beta14", () => {
    const env = deploy.doc.env as Record<string, string>;
    expect(env.HELM_VERSION).toBe(`v${HELM_VERSION}`);
    expect(env.SKAFFOLD_VERSION).toMatch(/^v2\.(19|[2-9]\d)\.\d+$/);
    expect(deploy.steps.filter((s) => s.uses?.startsWith("azure/setup-helm")).length).toBe(4);
    // render.sh (kubeconform's input) renders with the same flags as @luna/kube-check.
    expect(read("k8s/ci/render.sh")).toContain(`FLAGS=(${TEMPLATE_FLAGS.join(" ")})`);
  });
});
