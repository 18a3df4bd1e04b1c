import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { discoverProcesses, splitDatabases } from "./services.js";

const root = mkdtempSync(join(tmpdir(), "luna-split-services-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function touch(rel: string): void {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), "");
}

describe("split processes", () => {
  it("starts only the services whose src/main.ts exists, in start waves", () => {
    touch("services/auth/src/main.ts");
    touch("services/billing/src/main.ts");
    touch("services/image-job/src/index.ts"); // no main.ts yet: not started
    const found = discoverProcesses(root);
    expect(found.map((p) => [p.name, p.wave])).toEqual([["auth", 0], ["billing", 0]]);
    touch("services/image-job/src/main.ts");
    touch("services/image-job/src/worker/main.ts");
    expect(discoverProcesses(root).map((p) => p.name)).toEqual(["auth", "billing", "image-job", "image-worker"]);
  });

  it("uses the all-in-one's database names, and none for the worker", () => {
    const all = discoverProcesses(root);
    expect(splitDatabases(all)).toEqual(["luna_auth", "luna_billing", "luna_images"]);
    const worker = all.find((p) => p.name === "image-worker")!;
    expect(worker.api).toBe(false);
    expect(worker.database).toBeUndefined();
  });

  it("limits to the names asked for, and rejects unknown names", () => {
    expect(discoverProcesses(root, ["billing"]).map((p) => p.name)).toEqual(["billing"]);
    expect(() => discoverProcesses(root, ["billing", "biling"])).toThrow(/unknown service "biling": known are auth, billing/);
  });
});
