// envoy-run.ts without a container engine: a stand-in engine (a shell script) records the command and the config it
// was given, then exits. The command is the one the workflow relies on (host network, the config mounted read-only,
// the image), the config parses with Envoy's protos and points every cluster at the local services, and an Envoy
// that exits is reported with its output instead of hanging.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, it } from "vitest";
import { parse } from "yaml";
import { startEnvoyContainer } from "../src/envoy-run.js";
import { clusters } from "../src/model.js";
import { parseBootstrap } from "../src/protos.js";

const dir = mkdtempSync(join(tmpdir(), "luna-envoy-run-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("runs Envoy with the generated config on the host network and reports an Envoy that exits", async () => {
  const engine = join(dir, "engine.sh");
  // Records its arguments and the mounted config (the -v source), prints like Envoy, exits 1.
  writeFileSync(engine, `#!/bin/sh
printf '%s\\n' "$@" > "${dir}/args"
for a in "$@"; do case "$a" in *:/etc/envoy:ro) cp "\${a%%:/etc/envoy:ro}/envoy.yaml" "${dir}/envoy.yaml";; esac; done
echo "[critical] something Envoy said"
exit 1
`);
  chmodSync(engine, 0o755);
  const upstreams = { auth: "http://127.0.0.1:41001", billing: "http://127.0.0.1:41002" };
  await expect(startEnvoyContainer({ upstreams, engine, image: "example/envoy:test", readyTimeoutMs: 10_000 }))
    .rejects.toThrow(/envoy exited:[\s\S]*something Envoy said/);

  const args = readFileSync(join(dir, "args"), "utf8").trim().split("\n");
  expect(args.slice(0, 2)).toEqual(["run", "--rm"]);
  expect(args.join(" ")).toMatch(/--network host -v \S+:\/etc\/envoy:ro example\/envoy:test -c \/etc\/envoy\/envoy\.yaml/);
  const yaml = readFileSync(join(dir, "envoy.yaml"), "utf8");
  expect(() => parseBootstrap(yaml)).not.toThrow();
  const byName = new Map(clusters(parse(yaml) as Record<string, unknown>).map((c) => [c.name, JSON.stringify(c.load_assignment)]));
  expect(byName.get("auth")).toContain('"address":"127.0.0.1","port_value":41001');
  expect(byName.get("billing")).toContain('"address":"127.0.0.1","port_value":41002');
  expect(byName.get("otel-collector")).toContain('"address":"127.0.0.1"');
});
