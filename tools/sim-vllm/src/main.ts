/**
 * Standalone simulator: `npm run -w tools/sim-vllm start -- --port 8000 --model qwen3-8b:32k`.
 * Flags and SIM_VLLM_* variables are described by `--help` and the README.
 */
import { helpText, parseCli } from "./cli.js";
import { SimConfigError } from "./config.js";
import { startVllmSim } from "./index.js";

async function main(): Promise<void> {
  let cli;
  try {
    cli = parseCli(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof SimConfigError) {
      console.error(`sim-vllm: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  if (cli.help) {
    process.stdout.write(helpText());
    return;
  }

  let sim;
  try {
    sim = await startVllmSim({
      ...cli.sim,
      onRequest: cli.logRequests ? (r) => console.log(JSON.stringify(r)) : undefined,
    });
  } catch (err) {
    if (err instanceof SimConfigError) {
      console.error(`sim-vllm: ${err.message}`);
      process.exit(2);
    }
    console.error(`sim-vllm: cannot start: ${(err as Error).message}`);
    process.exit(1);
  }

  const models = sim.models.map((m) => `${m.name} (max_model_len ${m.maxModelLen})`).join(", ");
  console.log(`vLLM simulator listening on ${sim.url} (models: ${models})`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1); // a second signal means "now"
    stopping = true;
    console.log(`sim-vllm: ${signal}, shutting down`);
    sim.close().then(() => process.exit(0), () => process.exit(1));
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

await main();
