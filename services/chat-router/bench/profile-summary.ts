// Summarises V8 CPU profiles (.cpuprofile, from the chat bench's BENCH_PROFILE_DIR or `node --cpu-prof`) by area of
// the relay path: each sample goes to the innermost frame of its stack that belongs to a known area ("self"), and
// counts for every area anywhere on its stack ("total"). Socket and stream internals only count when nothing more
// specific is on the stack, so a `writev` under HTTP/2 is HTTP/2's.
//
//   node --conditions=luna-source --import tsx services/chat-router/bench/profile-summary.ts <file.cpuprofile>... [--tokens N]
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

interface Frame { functionName: string; url: string }
interface ProfileNode { id: number; callFrame: Frame; children?: number[] }
export interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }

/** Areas, most specific first; `weak` ones only when no other area is on the stack. */
const AREAS: Array<{ area: string; test: (f: Frame) => boolean; weak?: boolean }> = [
  { area: "GC", test: (f) => f.functionName === "(garbage collector)" },
  { area: "kit malformed-body wrapper", test: (f) => f.url.includes("kit/src/malformed-body") },
  { area: "logging (pino)", test: (f) => f.url.includes("/pino") || f.url.includes("kit/src/log.") },
  { area: "metrics (prom-client)", test: (f) => f.url.includes("/prom-client/") },
  { area: "async hooks / ALS / OTel", test: (f) => f.url.includes("async_hooks") || f.url.includes("async_local_storage") || f.url.includes("@opentelemetry") || f.url.includes("kit/src/tracing.") },
  { area: "protobuf create/serialise", test: (f) => f.url.includes("@bufbuild/protobuf") },
  { area: "SSE parsing + chunk JSON", test: (f) => f.url.includes("domain/sse.") },
  { area: "NATS (live fan-out, stop)", test: (f) => f.url.includes("@nats-io") || f.url.includes("/live/hub.") },
  { area: "Postgres (store, checkpoints)", test: (f) => f.url.includes("/pg/") || f.url.includes("/pg-protocol/") || f.url.includes("/pg-pool/") || f.url.includes("data/store.") },
  { area: "Redis", test: (f) => f.url.includes("ioredis") },
  { area: "billing + registry (in process)", test: (f) => f.url.includes("services/billing/") || f.url.includes("services/model-registry/") || f.url.includes("chat/billing.") },
  { area: "live reply (readers, coalescing)", test: (f) => f.url.includes("/live/reply.") },
  { area: "upstream client", test: (f) => f.url.includes("upstream/") },
  { area: "chat engine / reply run", test: (f) => f.url.includes("chat/engine.") || f.url.includes("chat/reply-run.") || f.url.includes("server/routes.") || f.url.includes("server/convert.") },
  { area: "OpenAI /v1 path", test: (f) => f.url.includes("/openai/") || f.url.includes("kit/src/openai-http.") },
  { area: "Connect pipeline", test: (f) => f.url.includes("@connectrpc/") },
  { area: "kit (auth, errors, server)", test: (f) => f.url.includes("packages/kit/") },
  { area: "node:http (upstream client, /v1 server)", test: (f) => /^node:_http_/.test(f.url) },
  { area: "node:http2 (gRPC transport)", test: (f) => f.url.includes("internal/http2") },
  { area: "sockets, streams, timers (unattributed)", weak: true, test: (f) => /^node:(net|internal\/(stream_base_commons|streams|timers|net))/.test(f.url) || f.url === "node:timers" },
  { area: "event loop, microtasks", weak: true, test: (f) => f.functionName === "runMicrotasks" || f.functionName === "processTicksAndRejections" || f.url.includes("task_queues") },
];

export interface AreaRow { area: string; selfMs: number; totalMs: number }

/** Self and total CPU ms per area over the given profiles (idle excluded), and the non-idle total. */
export function summarise(profiles: CpuProfile[]): { rows: AreaRow[]; totalMs: number } {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let all = 0;
  for (const p of profiles) {
    const parent = new Map<number, ProfileNode>();
    const byId = new Map<number, ProfileNode>();
    for (const n of p.nodes) byId.set(n.id, n);
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n);
    const time = new Map<number, number>();
    for (let i = 0; i < p.samples.length; i++) time.set(p.samples[i]!, (time.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
    for (const [id, us] of time) {
      const leaf = byId.get(id)!;
      if (leaf.callFrame.functionName === "(idle)") continue;
      let strong: string | undefined;
      let weak: string | undefined;
      const seen = new Set<string>();
      let profiler = false;
      for (let n: ProfileNode | undefined = leaf; n; n = parent.get(n.id)) {
        // The profiler's own work (the inspector session answering Profiler.stop) is not chat-router's.
        if (n.callFrame.url === "node:inspector") profiler = true;
        for (const a of AREAS) {
          if (!a.test(n.callFrame)) continue;
          seen.add(a.area);
          if (a.weak) weak ??= a.area;
          else strong ??= a.area;
          break;
        }
      }
      if (profiler) continue;
      all += us;
      const area = strong ?? weak ?? (leaf.callFrame.functionName === "(program)" ? "V8 / native (program)" : "other");
      self.set(area, (self.get(area) ?? 0) + us);
      for (const a of seen) total.set(a, (total.get(a) ?? 0) + us);
    }
  }
  const rows = [...new Set([...self.keys(), ...total.keys()])]
    .map((area) => ({ area, selfMs: (self.get(area) ?? 0) / 1000, totalMs: (total.get(area) ?? self.get(area) ?? 0) / 1000 }))
    .sort((a, b) => b.selfMs - a.selfMs);
  return { rows, totalMs: all / 1000 };
}

/** The summary as a markdown table; with `tokens`, each area's self time per 1k tokens relayed. */
export function summaryTable(profiles: CpuProfile[], tokens?: number): string {
  const { rows, totalMs } = summarise(profiles);
  const per = (ms: number) => (tokens ? (ms / (tokens / 1000)).toFixed(2) : "");
  const lines = [
    `| area | self ms | self % | ${tokens ? "self ms / 1k tok | " : ""}total ms (on stack) |`,
    `|---|---|---|${tokens ? "---|" : ""}---|`,
    ...rows.map((r) => `| ${r.area} | ${r.selfMs.toFixed(0)} | ${((100 * r.selfMs) / totalMs).toFixed(1)} | ${tokens ? `${per(r.selfMs)} | ` : ""}${r.totalMs.toFixed(0)} |`),
    `| **all (non-idle)** | ${totalMs.toFixed(0)} | 100 | ${tokens ? `${per(totalMs)} | ` : ""} |`,
  ];
  return lines.join("\n");
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const t = args.indexOf("--tokens");
  const tokens = t >= 0 ? Number(args[t + 1]) : undefined;
  const files = args.filter((a, i) => !(i === t || i === t + 1));
  console.log(summaryTable(files.map((f) => JSON.parse(readFileSync(f, "utf8")) as CpuProfile), tokens));
}
