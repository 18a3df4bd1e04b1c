// gather.mjs (the build stages' last step) ships a workspace's data files kept beside its sources (auth's
// common-passwords.txt.gz) under dist/, so the Dockerfile needs no per-service copy step; code in src/ never ships.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const gather = resolve(import.meta.dirname, "../gather.mjs");
const dir = mkdtempSync(join(tmpdir(), "luna-gather-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function put(path: string, text: string): void {
  mkdirSync(join(dir, path, ".."), { recursive: true });
  writeFileSync(join(dir, path), text);
}

describe("gather.mjs", () => {
  it("ships dist/, package.json and the non-code files of src/ at the same place under dist/", () => {
    put("package.json", JSON.stringify({ name: "root", workspaces: ["services/*"] }));
    put("services/svc/package.json", JSON.stringify({ name: "@luna/svc", type: "module" }));
    put("services/svc/src/main.ts", "export {};\n");
    put("services/svc/src/tool.mjs", "export {};\n");
    put("services/svc/src/domain/policy.ts", "export {};\n");
    put("services/svc/src/domain/words.txt.gz", "data");
    put("services/svc/dist/main.js", "export {};\n");
    put("services/svc/dist/domain/policy.js", "export {};\n");
    const r = spawnSync(process.execPath, [gather, join(dir, "out"), "services/svc"], { cwd: dir, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    const out = (p: string): boolean => existsSync(join(dir, "out", "services/svc", p));
    expect(out("package.json") && out("dist/main.js") && out("dist/domain/policy.js")).toBe(true);
    expect(out("dist/domain/words.txt.gz")).toBe(true);
    for (const code of ["dist/main.ts", "dist/tool.mjs", "dist/domain/policy.ts", "src"]) expect(out(code), code).toBe(false);
  });
});
