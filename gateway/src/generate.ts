// `make gateway`: writes charts/gateway/files/envoy.yaml from the route table, the contracts and the services' access
// rules. Options make variants for other places Envoy runs (the workflow runs the services on the runner):
//   --out FILE                 write here instead (`-` = stdout)
//   --check                    exit 1 when the file differs from what would be generated (writes nothing)
//   --upstream NAME=HOST:PORT  a cluster's address instead of <service>-headless:8080 (repeatable; also otel-collector)
//   --port N, --admin-port N   listener and admin ports
//   --tls CERT,KEY[,PORT]      add a TLS listener (default port 8443) with this certificate and key (files in the pod)
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { buildEnvoyConfig, toYaml, type EdgeSettings } from "./envoy.js";
import { loadRpcs } from "./sources.js";

/** Where the chart loads the configuration from (`.Files.Get "files/envoy.yaml"`). */
export const ENVOY_YAML = fileURLToPath(new URL("../../charts/gateway/files/envoy.yaml", import.meta.url));

/** The configuration text for the given settings (the committed file uses the defaults). */
export async function generateEnvoyYaml(overrides: Partial<EdgeSettings> = {}): Promise<string> {
  return toYaml(buildEnvoyConfig(await loadRpcs(), overrides));
}

/** Settings from the command-line options above. */
export function settingsFromArgs(args: string[]): { settings: Partial<EdgeSettings>; out: string; check: boolean } {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string" },
      check: { type: "boolean", default: false },
      upstream: { type: "string", multiple: true, default: [] },
      port: { type: "string" },
      "admin-port": { type: "string" },
      tls: { type: "string" },
    },
    strict: true,
  });
  const port = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`--${name}: expected a port, got ${JSON.stringify(v)}`);
    return n;
  };
  const settings: Partial<EdgeSettings> = {};
  const upstreams: Record<string, string> = {};
  for (const u of values.upstream ?? []) {
    const [name, addr] = u.split("=");
    if (!name || !addr || !/^[^:]+:\d+$/.test(addr)) throw new Error(`--upstream: expected NAME=HOST:PORT, got ${JSON.stringify(u)}`);
    upstreams[name] = addr;
  }
  if (Object.keys(upstreams).length > 0) settings.upstreamOverrides = upstreams;
  const p = port(values.port, "port");
  if (p !== undefined) settings.port = p;
  const a = port(values["admin-port"], "admin-port");
  if (a !== undefined) settings.adminPort = a;
  if (values.tls) {
    const [certificateFile, privateKeyFile, tlsPort] = values.tls.split(",");
    if (!certificateFile || !privateKeyFile) throw new Error("--tls: expected CERT,KEY[,PORT]");
    settings.tls = { certificateFile, privateKeyFile, port: port(tlsPort, "tls") ?? 8443 };
  }
  return { settings, out: values.out ?? ENVOY_YAML, check: values.check ?? false };
}

async function main(): Promise<void> {
  const { settings, out, check } = settingsFromArgs(process.argv.slice(2));
  const text = await generateEnvoyYaml(settings);
  if (check) {
    let current = "";
    try {
      current = readFileSync(out, "utf8");
    } catch {
      // missing: stale
    }
    if (current !== text) {
      process.stderr.write(`${out} is stale: run 'make gateway' and commit it\n`);
      process.exit(1);
    }
    return;
  }
  if (out === "-") process.stdout.write(text);
  else {
    writeFileSync(out, text);
    process.stdout.write(`wrote ${join(out)}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`gateway: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
