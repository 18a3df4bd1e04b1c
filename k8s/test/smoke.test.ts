// k8s/smoke.sh — the runbook's verify step and the deploy workflow's — run for real against a Luna on this machine
// (the all-in-one platform the CLI tests use; in the cluster the same script talks to the Envoy gateway).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_EMAIL, ADMIN_PASSWORD, startTestPlatform, type TestPlatform } from "../../tools/cli/test/platform.js";
import { repoRoot } from "./skaffold-lib.js";

let platform: TestPlatform;
beforeAll(async () => {
  platform = await startTestPlatform();
}, 120_000);
afterAll(async () => {
  await platform?.stop();
});

/** Runs the script without blocking this process (the platform under test runs in it). */
function smoke(env: Record<string, string>): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", [join(repoRoot, "k8s/smoke.sh")], {
      env: { ...process.env, LUNA_URL: platform.url, LUNA_ADMIN_EMAIL: ADMIN_EMAIL, LUNA_SMOKE_WAIT: "20", ...env },
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, out });
    });
  });
}

describe("k8s/smoke.sh", () => {
  it("signs up through an admin's invite, chats, is charged, and gets an image", async () => {
    const r = await smoke({ LUNA_ADMIN_PASSWORD: ADMIN_PASSWORD });
    expect(r.out).toMatch(/sign-up credits: \d+/);
    expect(r.out).toMatch(/charged \d+ credits for the reply/);
    expect(r.out).toMatch(/smoke test passed/);
    expect(r.status, r.out).toBe(0);
  }, 240_000);

  it("fails with a wrong admin password, and when nothing answers", async () => {
    const wrong = await smoke({ LUNA_ADMIN_PASSWORD: "not-the-password-at-all", LUNA_SMOKE_IMAGE: "0" });
    expect(wrong.status).not.toBe(0);
    expect(wrong.out).not.toMatch(/smoke test passed/);
    const nobody = await smoke({ LUNA_ADMIN_PASSWORD: ADMIN_PASSWORD, LUNA_URL: "http://127.0.0.1:9", LUNA_SMOKE_WAIT: "3" });
    expect(nobody.status).not.toBe(0);
    expect(nobody.out).toMatch(/no answer from http:\/\/127.0.0.1:9/);
  }, 240_000);
});
