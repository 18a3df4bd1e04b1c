// `make dev-split`: the platform as separate processes, as in the cluster — Postgres, Redis and NATS under .luna/,
// the inference simulators (unless real endpoints are configured), every service in its own process on its own
// ports, and the dev gateway in front of them on LUNA_PORT (8080).
import { loadConfig, runtimeConfigSchema } from "@luna/kit";
import { devStackConfig, findRepoRoot, startDevStack } from "@luna/devstack";
import { platformConfigSchema } from "@luna/allinone";
import { discoverProcesses, splitDatabases } from "./services.js";
import { splitConfigSchema, startSplitPlatform } from "./platform.js";

const say = (line: string): void => void process.stdout.write(`${line}\n`);
const started = performance.now();
try {
  // Validate everything before starting anything.
  loadConfig(runtimeConfigSchema);
  const platformConfig = loadConfig(platformConfigSchema);
  const splitConfig = loadConfig(splitConfigSchema);
  const repoRoot = findRepoRoot();
  const stackConfig = devStackConfig(process.env, repoRoot);

  say("==> starting Postgres, Redis and NATS (data in " + stackConfig.dataDir + ")");
  const stack = await startDevStack({ dataDir: stackConfig.dataDir, ports: stackConfig.ports,
    log: { info: (m: string) => say(`  ${m}`), warn: (m: string) => say(`  warning: ${m}`) } });
  await stack.createDatabases(splitDatabases(discoverProcesses(repoRoot, splitConfig.LUNA_SPLIT_SERVICES)));
  const stopStack = async (): Promise<void> => {
    if (platformConfig.LUNA_STOP_STACK_ON_EXIT) await stack.stop();
  };

  say("==> starting Luna, one process per service");
  let shuttingDown = false;
  const platform = await startSplitPlatform({
    dataDir: stackConfig.dataDir,
    // Warnings and errors only unless LOG_LEVEL says otherwise (as `make dev`): six processes at "info" bury the
    // summary below.
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL || "warn" },
    repoRoot,
    stack: { databaseUrl: (db) => `${stack.urls.databaseUrlBase}/${db}`, redisUrl: stack.urls.redisUrl, natsUrl: stack.urls.natsUrl },
    progress: say,
    onUnexpectedExit: (message) => {
      if (shuttingDown) return;
      shuttingDown = true;
      process.stderr.write(`luna: ${message.split("\n")[0]}\n`);
      void stopStack().finally(() => process.exit(1));
    },
  });

  say("");
  say(`Luna is running, one process per service (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  say(`  API via the dev gateway (Connect, gRPC, gRPC-Web)  ${platform.url}`);
  say(`  readiness of every process                      http://127.0.0.1:${platform.adminPort}/readyz`);
  for (const p of platform.processes) {
    say(`  ${p.name.padEnd(15)} ${p.url ? p.url.padEnd(24) : "(no API port)".padEnd(24)} metrics http://127.0.0.1:${p.adminPort}/metrics  pid ${p.pid}`);
  }
  say(`  inference  vLLM ${platform.simulators.vllmUrl}  ComfyUI ${platform.simulators.comfyUrl}` +
    (platform.simulators.started ? "  (simulators)" : ""));
  say(`  Postgres ${stack.urls.databaseUrlBase}  Redis ${stack.urls.redisUrl}  NATS ${stack.urls.natsUrl}`);
  for (const note of platform.notes) say(note);
  say("");
  say("Try it:  curl -s " + platform.url + "/luna.models.v1.ModelService/ListModels -H 'content-type: application/json' -d '{}'");
  say("Stop with Ctrl-C; data stays in " + stackConfig.dataDir + " (make clean wipes it).");

  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown) {
      say(`${signal} again: stopping now`);
      process.exit(1);
    }
    shuttingDown = true;
    say(`==> ${signal}: stopping the services`);
    void platform.stop()
      .then(stopStack)
      .then(() => {
        say("Luna stopped.");
        process.exit(0);
      }, (err: unknown) => {
        process.stderr.write(`luna: stopping failed: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
} catch (err) {
  process.stderr.write(`luna: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
