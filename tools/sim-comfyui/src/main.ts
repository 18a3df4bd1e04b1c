/** Runs the simulator as a process: `npm run -w tools/sim-comfyui start -- --port 8188`. */
import { ConfigError, parseConfig, usage } from "./config.js";
import { startComfySim } from "./index.js";

async function main(): Promise<void> {
  let config;
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`sim-comfyui: ${err.message}\n\n${usage()}`);
    process.exit(2);
  }
  if (config.help) {
    console.log(usage());
    return;
  }
  const log = config.quiet ? undefined : (line: string) => console.log(`[sim-comfyui] ${line}`);
  let sim;
  try {
    sim = await startComfySim({ ...config.options, log });
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    console.error(`sim-comfyui: ${err.message}`);
    process.exit(2);
  }
  console.log(`sim-comfyui listening on ${sim.url} (websocket ${sim.wsUrl}?clientId=…)`);
  const faults = sim.faults();
  if (Object.keys(faults).length > 0) console.log(`sim-comfyui faults: ${JSON.stringify(faults)}`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`sim-comfyui: ${signal}, shutting down`);
    void sim.close().then(() => process.exit(0));
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
