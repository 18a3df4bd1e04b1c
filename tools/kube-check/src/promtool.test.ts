import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensurePromtool, promtool } from "./promtool.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "promtool-test-"));
  await ensurePromtool();
}, 600_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const rules = (expr: string) => `groups:
  - name: t
    rules:
      - alert: Up
        expr: ${expr}
        for: 1m
        labels: { severity: page }
`;

describe("promtool", () => {
  it("is the real Prometheus promtool", async () => {
    const r = await promtool(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).toMatch(/promtool, version 2\./);
  });

  it("check rules accepts a valid rule file and rejects a broken expression", async () => {
    await writeFile(join(dir, "good.yaml"), rules("up == 0"));
    await writeFile(join(dir, "bad.yaml"), rules("sum(rate(up[5m])"));
    expect((await promtool(["check", "rules", join(dir, "good.yaml")])).code).toBe(0);
    const bad = await promtool(["check", "rules", join(dir, "bad.yaml")]);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/unclosed left parenthesis|parse error/);
  });

  it("test rules passes a correct expectation and fails a wrong one", async () => {
    await writeFile(join(dir, "r.yaml"), rules("up == 0"));
    const test = (severity: string) => `rule_files: [r.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="a"}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 3m
        alertname: Up
        exp_alerts:
          - exp_labels: { job: a, severity: ${severity} }
`;
    await writeFile(join(dir, "ok.test.yaml"), test("page"));
    await writeFile(join(dir, "wrong.test.yaml"), test("ticket"));
    expect((await promtool(["test", "rules", "ok.test.yaml"], { cwd: dir })).code).toBe(0);
    const wrong = await promtool(["test", "rules", "wrong.test.yaml"], { cwd: dir });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stdout + wrong.stderr).toMatch(/FAILED/);
  });
});
