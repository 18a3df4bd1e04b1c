// The benchmark's vLLM simulator, in its own process so its CPU is not counted as chat-router's.
import { startVllmSim } from "@luna/sim-vllm";

const tokens = Number(process.env.BENCH_REPLY_TOKENS ?? 128);
const decodeTps = Number(process.env.BENCH_DECODE_TPS ?? 0);
// Zero-time by default (every millisecond measured is the router's); with BENCH_DECODE_TPS, tokens are paced like a
// real model's (no prefill or first-token delay, so TTFT differences stay the router's).
const sim = await startVllmSim({
  profile: "zero", models: ["sim-model:32768"], outputTokens: { min: tokens, max: tokens }, maxNumSeqs: 1024,
  ...(decodeTps > 0 ? { timing: { zeroTime: false, ttftMs: 0, prefillTokensPerSec: 1e9, decodeTokensPerSec: decodeTps } } : {}),
});
process.send!({ url: sim.url });
process.on("message", (m: { type: string }) => {
  if (m.type === "stop") void sim.close().then(() => process.exit(0));
});
