// A service the launcher started must not outlive the launcher: killed with SIGKILL (no chance to stop anything), the
// launcher's end of the service's stdin closes, and the service stops itself as on SIGTERM.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";

const repo = resolve(import.meta.dirname, "../../..");

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("service processes and a dying launcher", () => {
  it("stop on their own (as on SIGTERM) when the launcher is killed", async () => {
    const launcher = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", "tools/split/test/fixtures/launcher.ts",
      "tools/split/test/fixtures/idle-service.ts"], { cwd: repo, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    launcher.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!/up (\d+)/.test(out)) {
      if (Date.now() > deadline || launcher.exitCode !== null) throw new Error(`the service did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const pid = Number(/up (\d+)/.exec(out)![1]);
    expect(alive(pid)).toBe(true);
    launcher.kill("SIGKILL");
    const gone = Date.now() + 10_000;
    while (alive(pid) && Date.now() < gone) await new Promise((r) => setTimeout(r, 100));
    expect(alive(pid)).toBe(false);
  }, 60_000);
});
