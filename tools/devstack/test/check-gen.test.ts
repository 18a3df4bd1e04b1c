// `make check-gen` is what keeps the committed contracts honest: it must pass on the repository as committed and
// fail as soon as a proto changes without regenerating. Run against a scratch copy so the real tree is untouched.
import { spawnSync } from "node:child_process";
import { appendFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const repo = resolve(import.meta.dirname, "../../..");
const scratch = mkdtempSync(join(tmpdir(), "luna-checkgen-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function checkGen(): { status: number | null; output: string } {
  const r = spawnSync("make", ["-s", "check-gen"], { cwd: scratch, encoding: "utf8", env: { ...process.env, MAKEFLAGS: "" } });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

describe("make check-gen", () => {
  cpSync(join(repo, "Makefile"), join(scratch, "Makefile"));
  cpSync(join(repo, "buf.yaml"), join(scratch, "buf.yaml"));
  cpSync(join(repo, "buf.gen.yaml"), join(scratch, "buf.gen.yaml"));
  cpSync(join(repo, "proto"), join(scratch, "proto"), { recursive: true });
  cpSync(join(repo, "packages/contracts/src/gen"), join(scratch, "packages/contracts/src/gen"), { recursive: true });
  cpSync(join(repo, "package.json"), join(scratch, "package.json"));
  cpSync(join(repo, "package-lock.json"), join(scratch, "package-lock.json"));
  // Only the tools: a scratch node_modules whose .bin points at the real one, and an install stamp newer than the
  // package files, so make never runs `npm ci` here (which would empty a shared node_modules).
  mkdirSync(join(scratch, "node_modules"));
  symlinkSync(join(repo, "node_modules/.bin"), join(scratch, "node_modules/.bin"));
  writeFileSync(join(scratch, "node_modules/.package-lock.json"), "{}");

  it("passes when the generated code matches proto/", () => {
    const r = checkGen();
    expect(r.output).not.toContain("stale");
    expect(r.status).toBe(0);
  });

  it("fails, naming the fix, when a proto changed without regenerating", () => {
    appendFileSync(join(scratch, "proto/luna/common/v1/common.proto"), "\nmessage AddedWithoutRegenerating { string x = 1; }\n");
    const r = checkGen();
    expect(r.status).not.toBe(0);
    expect(r.output).toContain("run 'make gen'");
  });
});
