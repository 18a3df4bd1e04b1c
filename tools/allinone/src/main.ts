// `make dev`: the whole platform on this machine — Postgres, Redis and NATS under .luna/, the inference simulators
// (unless real endpoints are configured) and every service in this one process on one port.
import { createLogger, loadConfig, runtimeConfigSchema, runUntilSignal } from "@luna/kit";
import { devStackConfig, findRepoRoot, startDevStack } from "@luna/devstack";
import { MODULES } from "./modules.js";
import { platformConfigSchema, startPlatform } from "./platform.js";

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const started = performance.now();
try {
  const runtime = loadConfig(runtimeConfigSchema);
  const platformConfig = loadConfig(platformConfigSchema);
  const log = createLogger({ service: "luna", level: runtime.LOG_LEVEL === "info" ? "warn" : runtime.LOG_LEVEL });
  const stackConfig = devStackConfig(process.env, findRepoRoot());

  say("==> starting Postgres, Redis and NATS (data in " + stackConfig.dataDir + ")");
  const stack = await startDevStack({ dataDir: stackConfig.dataDir, ports: stackConfig.ports,
    log: { info: (m: string) => say(`  ${m}`), warn: (m: string) => say(`  warning: ${m}`) } });
  const databases = MODULES.map((m) => m.database);
  await stack.createDatabases(databases);

  say("==> starting Luna");
  const platform = await startPlatform({
    dataDir: stackConfig.dataDir,
    env: process.env,
    stack: { databaseUrl: (db) => `${stack.urls.databaseUrlBase}/${db}`, redisUrl: stack.urls.redisUrl, natsUrl: stack.urls.natsUrl },
    log,
    progress: (line) => say(`  ${line}`),
  });

  const base = `http://localhost:${platform.port}`;
  say("");
  say(`Luna is running (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  say(`  API (Connect, gRPC, gRPC-Web)  ${base}`);
  say(`  admin: metrics and readiness   http://localhost:${platform.adminPort}/metrics  /readyz`);
  say(`  services                       ${platform.modules.map((m) => m.name).join(", ") || "(none registered yet)"}`);
  say(`  inference                      vLLM ${platform.simulators.vllmUrl}  ComfyUI ${platform.simulators.comfyUrl}` +
    (platform.simulators.started ? "  (simulators)" : ""));
  say(`  Postgres ${stack.urls.databaseUrlBase}  Redis ${stack.urls.redisUrl}  NATS ${stack.urls.natsUrl}`);
  for (const note of platform.notes) say(note);
  say("");
  say("Try it:  curl -s " + base + "/luna.models.v1.ModelService/ListModels -H 'content-type: application/json' -d '{}'");
  say("Stop with Ctrl-C; data stays in " + stackConfig.dataDir + " (make clean wipes it).");

  runUntilSignal({
    log,
    shutdown: [
      { name: "platform", run: () => platform.stop() },
      { name: "local servers", run: async () => {
        if (platformConfig.LUNA_STOP_STACK_ON_EXIT) await stack.stop();
      } },
      { name: "goodbye", run: () => say("Luna stopped.") },
    ],
  });
} catch (err) {
  process.stderr.write(`luna: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
