// The benchmark's vLLM simulator, in its own process so its CPU is not counted as chat-router's.
import { startVllmSim } from "@luna/sim-vllm";

const tokens = Number(process.env.BENCH_REPLY_TOKENS ?? 128);
const sim = await startVllmSim({ profile: "zero", models: ["sim-model:32768"], outputTokens: { min: tokens, max: tokens }, maxNumSeqs: 1024 });
process.send!({ url: sim.url });
process.on("message", (m: { type: string }) => {
  if (m.type === "stop") void sim.close().then(() => process.exit(0));
});
