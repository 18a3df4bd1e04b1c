// chat-router benchmark: what relaying through chat-router adds to a streamed reply, in two conditions:
// - "saturated": 1, 16 and 64 concurrent streams against a zero-time vLLM simulator (every millisecond measured is
//   ours, not the model's): the relay's throughput and CPU per token, with the machine at its limit — at 16 streams
//   on 2 cores, TTFT there is mostly queueing behind the other streams' relaying;
// - paced: 16 streams against a simulator decoding at a model's pace (BENCH_PACED_TPS per stream, no prefill
//   delay), the streams starting spread over one reply's duration as independent users do. This is the condition
//   of the latency aims: a real model never streams 100k tokens/s.
// Aims (issue 23), each printed with ✓/✗ and the floor's figure beside it, for the Connect path and /v1:
// - router CPU per 1k relayed tokens at 16 saturated streams ≤ 16 ms;
// - relayed tokens/s at 16 saturated streams ≥ 40% of direct;
// - added TTFT at 16 streams decoding 50 tok/s: p50 ≤ floor + 1 ms, p99 ≤ floor + 5 ms;
// - added ITL p50 there ≤ 0.2 ms (coalescing must not make a paced stream bursty).
//
//   node --conditions=luna-source --import tsx services/chat-router/bench/chat.bench.ts [--quick] [--topology all-in-one|split|both]
//     [--profile DIR] [--node PATH]... [--help]
//
// --node PATH (repeatable): the Node binaries the relays (chat-router's platform process and the floor) run on, one
// full measurement after the other, each with its own tables and aims. Default: this Node, plus BENCH_IMAGE_NODE
// when set — `make bench` sets it to the Node the container images run (tools/images pins it), so the figures of the
// runtime production uses stand beside those of the machine's own.
// --quick: one saturated level (16 streams), 2 rounds, a shorter paced level — for iterating, not for the record.
// --topology (or BENCH_TOPOLOGY): how chat-router is hosted, each topology a measurement of its own (tables and aims,
// labelled) on every runtime. Default: all-in-one with --quick, both for the full run.
// - all-in-one: chat-router with the real billing and model-registry modules in one process (`hostModules` +
//   `inProcessClients`, as `make dev` runs them); its CPU — "router CPU" — includes billing's handlers and billing's
//   Postgres and Redis clients, and no network client.
// - split: the cluster's shape (each service its own pod; `make dev-split`): billing and model-registry in a process
//   of their own, chat-router alone in the platform process calling them over gRPC with internal JWTs
//   (`networkClients`). "router CPU" (the aim) is then chat-router's process only, and billing's process CPU per 1k
//   tokens over the same rounds is printed beside it (a table column, and the two summed in the CPU aim's line).
//   With both, the split measurement runs only the 16-stream saturated level and the paced level (BENCH_SPLIT_LEVELS,
//   default "16"; the 1- and 64-stream levels are left out), so the full bench does not take twice as long.
// --profile DIR (or BENCH_PROFILE_DIR): CPU-profiles chat-router (the inspector's sampler inside the platform process;
// split: chat-router's process only) during the Connect rounds and the /v1 rounds of each level, writes the
// .cpuprofile files to DIR and prints where the CPU went per area (profile-summary.ts). Profiling itself costs CPU:
// take the aims from an unprofiled run.
//
// Starts its own Postgres, Redis and NATS (temporary), the two simulators in child processes and the platform
// (platform-child.ts: chat-router with the real billing and model-registry modules, hosted as in the all-in-one
// process; split: chat-router alone, and a second platform-child.ts process with billing and model-registry) in
// another; this process is the load generator. For each level it runs the same requests three ways: straight to the
// simulator (POST /v1/chat/completions, streamed), through chat-router (SendMessage over gRPC), and through the
// floor — a relay in its own process that does none of chat-router's work (floor-child.ts: gRPC in, the same upstream client
// out, no auth, database, billing or limits) — and reports:
// - TTFT: request sent → first token received; "added" = through chat-router minus direct (p50, p99); "floor" = the
//   floor minus direct, what one more process and gRPC hop cost on this machine before any of chat-router's work;
// - the same through chat-router's OpenAI-compatible door (POST /v1/chat/completions on the platform's port, HTTP/1.1
//   with a user's bearer, streamed; issue 22): "added via /v1" = that TTFT minus direct, beside the Connect path's;
// - ITL: per reply, (last token − first token) / (tokens − 1); "added" = p50 through chat-router minus direct;
// - tokens/s relayed (all streams together), and the platform process's CPU per 1k tokens relayed (split: and the
//   billing + model-registry process's, over the same rounds).
// - where the routed TTFT goes (means): chat-router's own phase histograms (prepare = conversation read, inserts,
//   limit checks and token count in parallel; reserve = the credit hold; upstream headers; upstream first token),
//   the server-side total, and the rest (gRPC transport, auth, the first delta's relay and the client's decoding).
// Closed loops (each stream sends its next request when the previous reply ends); every SendMessage goes to a
// fresh conversation so prompts stay the same size. Direct, routed and floor requests run in alternating rounds (the
// order rotates), so load from other processes on the shared machine hits all alike; the machine's
// load average is printed with the results. Both paths reuse their connections (keep-alive agent / one HTTP/2
// connection per user) and are warmed up first.
// Tunables (env): BENCH_REPLY_TOKENS (128), BENCH_REQUESTS (per saturated level, default 240), BENCH_LEVELS
// ("1,16,64"), BENCH_ROUNDS (alternating rounds per level, default 4), BENCH_PACED_STREAMS (16; 0 skips the paced
// level), BENCH_PACED_TPS (decode tokens/s per stream, default 50), BENCH_PACED_REQUESTS (160), BENCH_TOPOLOGY,
// BENCH_SPLIT_LEVELS (saturated levels of the split topology; default "16" with both, else BENCH_LEVELS).
import { fork, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { startNats, startPostgres, startRedis } from "@luna/kit/localstack";
import { loadAverage, markdownTable, mean, percentile as pct } from "@luna/kit/bench";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { interpretChunk, SseParser } from "../src/domain/sse.js";
import { summaryTable, type CpuProfile } from "./profile-summary.js";

const argv = process.argv.slice(2);
if (argv.includes("--help")) {
  // The header comment above is the manual.
  const lines = readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n");
  const head = lines.slice(0, lines.findIndex((l) => !l.startsWith("//")));
  console.log(head.map((l) => l.replace(/^\/\/ ?/, "")).join("\n"));
  process.exit(0);
}
const QUICK = argv.includes("--quick");
const profileArg = argv.indexOf("--profile");
const PROFILE_DIR = profileArg >= 0 ? argv[profileArg + 1] : process.env.BENCH_PROFILE_DIR;
if (QUICK) {
  process.env.BENCH_LEVELS ??= "16";
  process.env.BENCH_ROUNDS ??= "2";
  process.env.BENCH_REQUESTS ??= "320";
  process.env.BENCH_PACED_REQUESTS ??= "96";
}

const REPLY_TOKENS = Number(process.env.BENCH_REPLY_TOKENS ?? 128);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 240);
const LEVELS = (process.env.BENCH_LEVELS ?? "1,16,64").split(",").map(Number);
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 4));
const PACED_TPS = Number(process.env.BENCH_PACED_TPS ?? 50);
const PACED_STREAMS = Number(process.env.BENCH_PACED_STREAMS ?? 16);
const PACED_REQUESTS = Number(process.env.BENCH_PACED_REQUESTS ?? 160);
// Issue 23's aims.
const AIM_STREAMS = 16;
const AIM_CPU_MS = 16;
const AIM_TPS_SHARE = 0.4;
const AIM_TTFT_P50_OVER_FLOOR_MS = 1;
const AIM_TTFT_P99_OVER_FLOOR_MS = 5;
const AIM_ITL_MS = 0.2;
// --topology (or BENCH_TOPOLOGY): how chat-router is hosted, see the header comment.
type Topology = "all-in-one" | "split";
const topologyArg = argv.indexOf("--topology");
const TOPOLOGY_CHOICE = (topologyArg >= 0 ? argv[topologyArg + 1] : process.env.BENCH_TOPOLOGY) ?? (QUICK ? "all-in-one" : "both");
if (!["all-in-one", "split", "both"].includes(TOPOLOGY_CHOICE)) {
  console.error(`--topology must be all-in-one, split or both, not ${TOPOLOGY_CHOICE}`);
  process.exit(2);
}
const TOPOLOGIES: Topology[] = TOPOLOGY_CHOICE === "both" ? ["all-in-one", "split"] : [TOPOLOGY_CHOICE as Topology];
// With both topologies, the split one measures only the aims' saturated level (and the paced one), so the full bench
// does not take twice as long; BENCH_SPLIT_LEVELS overrides.
const SPLIT_LEVELS = (process.env.BENCH_SPLIT_LEVELS ?? (TOPOLOGY_CHOICE === "both" ? "16" : LEVELS.join(","))).split(",").map(Number);
const TOPOLOGY_LABEL: Record<Topology, string> = {
  "all-in-one": "all-in-one: chat-router with billing in process",
  split: "split: chat-router alone, billing over gRPC",
};
const PROMPT = "Tell me about the history of the printing press and how it changed the way people shared ideas.";
const TSX = ["--conditions=luna-source", "--import", "tsx"];

/** A Node binary the relays (the platform and the floor) run on, with the version it reports. */
interface Runtime {
  execPath: string;
  version: string;
}

function runtimeOf(execPath: string): Runtime {
  if (execPath === process.execPath) return { execPath, version: process.version };
  const r = spawnSync(execPath, ["--version"], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${execPath} --version failed: ${r.error?.message ?? r.stderr}`);
  return { execPath, version: r.stdout.trim() };
}

// --node PATH (repeatable) picks the relays' runtimes; without it, this Node and, when `make bench` provides it
// (BENCH_IMAGE_NODE: the Node the container images run), that one too — side by side, each with its own floor.
const nodeArgs = argv.flatMap((a, i) => (a === "--node" && argv[i + 1] ? [argv[i + 1]!] : []));
const RUNTIMES: Runtime[] = (nodeArgs.length > 0 ? nodeArgs : [process.execPath, ...(process.env.BENCH_IMAGE_NODE ? [process.env.BENCH_IMAGE_NODE] : [])])
  .map(runtimeOf)
  .filter((r, i, all) => all.findIndex((x) => x.version === r.version) === i);

interface Sample {
  ttftMs: number;
  itlMs: number;
  tokens: number;
}

function child(script: string, env: Record<string, string>, runtime?: Runtime): ChildProcess {
  return fork(fileURLToPath(new URL(script, import.meta.url)), [], { execPath: runtime?.execPath, execArgv: TSX, env: { ...process.env, ...env }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
}

function ask<T>(c: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: { type?: string }) => {
      if (m.type === type) {
        c.off("message", on);
        resolve(m as T);
      }
    };
    c.on("message", on);
    c.send({ type });
  });
}

/**
 * One streamed chat completion: straight to the simulator (model "sim-model", no token), or through chat-router's
 * OpenAI-compatible API (a catalog model id and a user's token). The first token is the first non-empty content.
 */
function direct(agent: http.Agent, url: string, via?: { model: string; token: string }): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ model: via?.model ?? "sim-model", messages: [{ role: "user", content: PROMPT }], stream: true,
      stream_options: { include_usage: true }, max_tokens: REPLY_TOKENS });
    const auth: Record<string, string> = via ? { authorization: `Bearer ${via.token}` } : {};
    const t0 = performance.now();
    let first = 0;
    let last = 0;
    let tokens = 0;
    let usageTokens = 0;
    const req = http.request(`${url}/v1/chat/completions`, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...auth } }, (res) => {
      res.setEncoding("utf8");
      const parser = new SseParser((data) => {
        const c = interpretChunk(data);
        if (c.kind === "chunk" && c.content !== undefined) {
          last = performance.now();
          if (tokens === 0) first = last;
          tokens++;
        }
        // chat-router may send several tokens in one chunk (a reader behind the model): its usage is the count.
        if (c.kind === "chunk" && c.usage) usageTokens = c.usage.completionTokens;
      });
      res.on("data", (d: string) => parser.push(d));
      res.on("end", () => {
        const n = via ? usageTokens : tokens;
        resolve({ ttftMs: first - t0, itlMs: n > 1 ? (last - first) / (n - 1) : 0, tokens: n });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** One SendMessage through chat-router (a fresh conversation, created beforehand). */
async function routed(chat: Client<typeof ChatService>, conversationId: string): Promise<Sample> {
  const t0 = performance.now();
  let first = 0;
  let last = 0;
  let tokens = 0;
  for await (const res of chat.sendMessage({ conversationId, text: PROMPT, clientMessageId: "m", maxOutputTokens: REPLY_TOKENS })) {
    const ev = res.event?.event;
    if (ev?.case === "delta") {
      last = performance.now();
      if (first === 0) first = last;
    } else if (ev?.case === "finished") {
      tokens = Number(ev.value.completionTokens);
    } else if (ev?.case === "error") {
      throw new Error(`reply failed: ${ev.value.code} ${ev.value.message}`);
    }
  }
  return { ttftMs: first - t0, itlMs: tokens > 1 ? (last - first) / (tokens - 1) : 0, tokens };
}

type Phases = Record<string, { sum: number; count: number }>;

/** Mean milliseconds of a phase between two readings of the platform's histograms. */
function phaseMs(a: Phases, b: Phases, name: string): number {
  const x = b[name];
  const y = a[name] ?? { sum: 0, count: 0 };
  if (!x || x.count === y.count) return NaN;
  return ((x.sum - y.sum) / (x.count - y.count)) * 1000;
}

const load = loadAverage;

/** `streams` closed loops of `total / streams` requests each; returns the samples and the wall time. */
async function run(streams: number, total: number, one: (stream: number, i: number) => Promise<Sample>, staggerMs = 0): Promise<{ samples: Sample[]; wallS: number }> {
  const samples: Sample[] = [];
  const each = Math.ceil(total / streams);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: streams }, async (_, s) => {
    if (staggerMs > 0) await new Promise((r) => setTimeout(r, s * staggerMs));
    for (let i = 0; i < each; i++) samples.push(await one(s, i));
  }));
  return { samples, wallS: (performance.now() - t0) / 1000 };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "luna-chat-bench-"));
  chmodSync(dir, 0o755); // when run as root, Postgres runs as another user that must reach its data dir
  const pg = await startPostgres({ dataDir: join(dir, "pg") });
  const redis = await startRedis({ dataDir: join(dir, "redis") });
  const nats = await startNats({ dataDir: join(dir, "nats") });
  const children: ChildProcess[] = [];
  try {
    const startSim = async (decodeTps: number) => {
      const sim = child("./sim-child.ts", { BENCH_REPLY_TOKENS: String(REPLY_TOKENS), BENCH_DECODE_TPS: String(decodeTps) });
      children.push(sim);
      return await new Promise<string>((resolve) => sim.once("message", (m: { url: string }) => resolve(m.url)));
    };
    const simUrl = await startSim(0);
    const pacedSimUrl = PACED_STREAMS > 0 ? await startSim(PACED_TPS) : simUrl;
    const simUrls = { simUrl, pacedSimUrl };
    let first = true;
    for (const runtime of RUNTIMES) {
      for (const topology of TOPOLOGIES) {
        if (!first) console.log("\n");
        first = false;
        await measure(runtime, topology, { pg, redis, nats }, simUrls);
      }
    }
  } finally {
    for (const c of children) await stopChild(c);
    await nats.stop();
    await redis.stop();
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Stops a child process (asked first, killed after 5 s). */
async function stopChild(c: ChildProcess): Promise<void> {
  c.send({ type: "stop" });
  await new Promise((r) => {
    const t = setTimeout(() => { c.kill("SIGKILL"); r(undefined); }, 5000);
    c.once("exit", () => { clearTimeout(t); r(undefined); });
  });
}

type Servers = { pg: Awaited<ReturnType<typeof startPostgres>>; redis: Awaited<ReturnType<typeof startRedis>>; nats: Awaited<ReturnType<typeof startNats>> };

type Ready = { type: string; port: number; tokens: string[]; keys: object };

/** Waits for a platform child's "ready" message. */
function ready(c: ChildProcess, what: string): Promise<Ready> {
  return new Promise<Ready>((resolve, reject) => {
    c.once("exit", (code) => reject(new Error(`${what} exited (${code})`)));
    c.on("message", (m: Ready) => m.type === "ready" && resolve(m));
  });
}

/**
 * Every level with the relays (the platform and the floor) running on `runtime`, chat-router hosted as `topology`
 * says, then its tables and aims.
 */
async function measure(runtime: Runtime, topology: Topology, { pg, redis, nats }: Servers, { simUrl, pacedSimUrl }: { simUrl: string; pacedSimUrl: string }): Promise<void> {
  const children: ChildProcess[] = [];
  const levels = topology === "split" ? SPLIT_LEVELS : LEVELS;
  try {
    const maxStreams = Math.max(4, PACED_STREAMS, ...levels);
    const platformEnv = {
      BENCH_PG_BASE: pg.url("x").replace(/\/x$/, ""), BENCH_REDIS_URL: redis.url, BENCH_NATS_URL: nats.url, BENCH_SIM_URL: simUrl, BENCH_PACED_SIM_URL: pacedSimUrl,
      BENCH_USERS: String(maxStreams), LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
    };
    // split: billing and model-registry in their own process (it opens the accounts and signs the users' tokens),
    // chat-router in the platform process calling it over gRPC with the same keys.
    let services: ChildProcess | undefined;
    let servicesReady: Ready | undefined;
    if (topology === "split") {
      services = child("./platform-child.ts", { ...platformEnv, BENCH_ROLE: "services" }, runtime);
      children.push(services);
      servicesReady = await ready(services, "the billing + model-registry process");
    }
    const platform = child("./platform-child.ts", servicesReady
      ? { ...platformEnv, BENCH_ROLE: "router", BENCH_SERVICES_URL: `http://127.0.0.1:${servicesReady.port}`, BENCH_KEYS: JSON.stringify(servicesReady.keys) }
      : platformEnv, runtime);
    children.push(platform);
    const floor = child("./floor-child.ts", {}, runtime);
    children.push(floor);
    const floorPort = await new Promise<number>((resolve) => floor.once("message", (m: { port: number }) => resolve(m.port)));
    const floorChats = Array.from({ length: maxStreams }, () => createClient(ChatService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${floorPort}` })));
    const platformReady = await ready(platform, "the platform");
    const port = platformReady.port;
    const tokens = (servicesReady ?? platformReady).tokens;
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` });
    const platformUrl = `http://127.0.0.1:${port}`;
    const chats = tokens.map((t) => createClient(ChatService, createGrpcTransport({
      baseUrl: `http://127.0.0.1:${port}`,
      interceptors: [(next) => (req) => { req.header.set("authorization", `Bearer ${t}`); return next(req); }],
    })));
    void transport;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

    const newConversations = async (n: number, streams: number, modelId: string): Promise<string[][]> => {
      const per: string[][] = Array.from({ length: streams }, () => []);
      await Promise.all(per.map(async (list, s) => {
        for (let i = 0; i < Math.ceil(n / streams); i++) list.push((await chats[s]!.createConversation({ modelId, title: "bench" })).conversation!.id);
      }));
      return per;
    };

    // Warm-up: JIT, connection pools, prepared statements, both paths.
    const warm = await newConversations(40, 4, "bench-model");
    await run(4, 40, () => direct(agent, simUrl));
    await run(4, 40, (s) => routed(chats[s]!, warm[s]!.pop()!));
    await run(4, 40, (s) => routed(floorChats[s]!, simUrl));
    await run(4, 40, (s) => direct(agent, platformUrl, { model: "bench-model", token: tokens[s]! }));

    if (PROFILE_DIR) mkdirSync(PROFILE_DIR, { recursive: true });
    const rows: string[][] = [];
    const breakdown: string[][] = [];
    const checks: string[] = [];
    const loadBefore = load();

    /** One measured level: `streams` closed loops, direct and routed in alternating rounds. */
    const level = async (streams: number, total: number, lv: { label: string; modelId: string; simUrl: string; staggerMs: number }) => {
      const per = Math.ceil(total / ROUNDS);
      // Each round gives every stream ceil(per / streams) requests, each to a fresh conversation.
      const convs = await newConversations(ROUNDS * Math.ceil(per / streams) * streams, streams, lv.modelId);
      const d = { samples: [] as Sample[], wallS: 0 };
      const r = { samples: [] as Sample[], wallS: 0 };
      const f = { samples: [] as Sample[], wallS: 0 };
      const o = { samples: [] as Sample[], wallS: 0 };
      let cpu = 0;
      let floorCpu = 0;
      let openaiCpu = 0;
      // split: the billing + model-registry process's CPU over the same rounds.
      const servicesCpu = { connect: 0, v1: 0 };
      const profiles: Record<"connect" | "v1", string[]> = { connect: [], v1: [] };
      /** Runs `body` with chat-router's CPU profiled into `${PROFILE_DIR}/<path>-<level>-<round>.cpuprofile` (with --profile). */
      const profiled = async <T>(path: "connect" | "v1", round: number, body: () => Promise<T>): Promise<T> => {
        if (!PROFILE_DIR) return await body();
        const file = join(PROFILE_DIR, `${path}-${lv.label.replace(/\W+/g, "")}-${streams}-${round}.cpuprofile`);
        await ask(platform, "profile-start");
        try {
          return await body();
        } finally {
          await new Promise((resolve) => {
            const on = (m: { type?: string }) => m.type === "profile-stop" && (platform.off("message", on), resolve(undefined));
            platform.on("message", on);
            platform.send({ type: "profile-stop", file });
          });
          profiles[path].push(file);
        }
      };
      const cpuOf = async (c: ChildProcess, body: () => Promise<void>, alsoOf?: { path: "connect" | "v1" }): Promise<number> => {
        const micros = (p: ChildProcess) => ask<{ micros: number }>(p, "cpu").then((m) => m.micros);
        const s0 = services && alsoOf ? await micros(services) : 0;
        const c0 = await micros(c);
        await body();
        const used = (await micros(c)) - c0;
        if (services && alsoOf) servicesCpu[alsoOf.path] += (await micros(services)) - s0;
        return used;
      };
      const ph0 = (await ask<{ phases: Phases }>(platform, "phases")).phases;
      for (let round = 0; round < ROUNDS; round++) {
        const directRound = async () => {
          const x = await run(streams, per, () => direct(agent, lv.simUrl), lv.staggerMs);
          d.samples.push(...x.samples);
          d.wallS += x.wallS;
        };
        const routedRound = () => profiled("connect", round, async () => {
          cpu += await cpuOf(platform, async () => {
            const x = await run(streams, per, (s) => routed(chats[s]!, convs[s]!.pop()!), lv.staggerMs);
            r.samples.push(...x.samples);
            r.wallS += x.wallS;
          }, { path: "connect" });
        });
        const floorRound = async () => {
          floorCpu += await cpuOf(floor, async () => {
            const x = await run(streams, per, (s) => routed(floorChats[s]!, lv.simUrl), lv.staggerMs);
            f.samples.push(...x.samples);
            f.wallS += x.wallS;
          });
        };
        const openaiRound = () => profiled("v1", round, async () => {
          openaiCpu += await cpuOf(platform, async () => {
            const x = await run(streams, per, (st) => direct(agent, platformUrl, { model: lv.modelId, token: tokens[st]! }), lv.staggerMs);
            o.samples.push(...x.samples);
            o.wallS += x.wallS;
          }, { path: "v1" });
        });
        const order = [directRound, routedRound, floorRound, openaiRound];
        for (let i = 0; i < order.length; i++) await order[(round + i) % order.length]!();
      }
      const ph1 = (await ask<{ phases: Phases }>(platform, "phases")).phases;
      if (r.samples.some((x) => x.tokens !== REPLY_TOKENS)) throw new Error("a reply through chat-router had the wrong length");
      if (f.samples.some((x) => x.tokens !== REPLY_TOKENS)) throw new Error("a reply through the floor relay had the wrong length");
      if (o.samples.some((x) => x.tokens !== REPLY_TOKENS)) throw new Error("a reply through /v1/chat/completions had the wrong length");
      const dT = d.samples.map((x) => x.ttftMs);
      const rT = r.samples.map((x) => x.ttftMs);
      const fT = f.samples.map((x) => x.ttftMs);
      const oT = o.samples.map((x) => x.ttftMs);
      const dI = d.samples.map((x) => x.itlMs);
      const rI = r.samples.map((x) => x.itlMs);
      const fI = f.samples.map((x) => x.itlMs);
      const oI = o.samples.map((x) => x.itlMs);
      const tokensOf = (x: { samples: Sample[] }) => x.samples.reduce((n, y) => n + y.tokens, 0);
      const rTokens = tokensOf(r);
      const dTokens = tokensOf(d);
      const tps = { direct: dTokens / d.wallS, connect: rTokens / r.wallS, floor: tokensOf(f) / f.wallS, v1: tokensOf(o) / o.wallS };
      const cpuPer1k = { connect: cpu / rTokens, floor: floorCpu / tokensOf(f), v1: openaiCpu / tokensOf(o) }; // µs per token = ms per 1k
      const servicesPer1k = { connect: servicesCpu.connect / rTokens, v1: servicesCpu.v1 / tokensOf(o) };
      const added = { p50: pct(rT, 50) - pct(dT, 50), p99: pct(rT, 99) - pct(dT, 99), itl: pct(rI, 50) - pct(dI, 50),
        floorP50: pct(fT, 50) - pct(dT, 50), floorP99: pct(fT, 99) - pct(dT, 99), floorItl: pct(fI, 50) - pct(dI, 50),
        openaiP50: pct(oT, 50) - pct(dT, 50), openaiP99: pct(oT, 99) - pct(dT, 99), openaiItl: pct(oI, 50) - pct(dI, 50), tps, cpuPer1k,
        servicesPer1k, profiles, tokens: { connect: rTokens, v1: tokensOf(o) } };
      rows.push([
        lv.label, String(streams), String(r.samples.length),
        `${pct(dT, 50).toFixed(2)} / ${pct(dT, 99).toFixed(2)}`,
        `${pct(rT, 50).toFixed(2)} / ${pct(rT, 99).toFixed(2)}`,
        `${added.p50.toFixed(2)} / ${added.p99.toFixed(2)}`,
        `${added.openaiP50.toFixed(2)} / ${added.openaiP99.toFixed(2)}`,
        `${added.floorP50.toFixed(2)} / ${added.floorP99.toFixed(2)}`,
        `${(pct(dI, 50) * 1000).toFixed(0)} / ${(pct(rI, 50) * 1000).toFixed(0)}`,
        `${(added.itl * 1000).toFixed(0)} / ${(added.openaiItl * 1000).toFixed(0)} / ${(added.floorItl * 1000).toFixed(0)}`,
        `${tps.direct.toFixed(0)} / ${tps.connect.toFixed(0)} / ${tps.v1.toFixed(0)} / ${tps.floor.toFixed(0)}`,
        `${cpuPer1k.connect.toFixed(2)} / ${cpuPer1k.v1.toFixed(2)} / ${cpuPer1k.floor.toFixed(2)}`,
        ...(services ? [`${servicesPer1k.connect.toFixed(2)} / ${servicesPer1k.v1.toFixed(2)}`] : []),
      ]);
      const serverMs = phaseMs(ph0, ph1, "server_ttft");
      const routedMean = mean(rT);
      breakdown.push([
        lv.label, String(streams),
        mean(dT).toFixed(2), routedMean.toFixed(2),
        ...["prepare", "reserve", "upstream_headers", "upstream_first_token"].map((n) => phaseMs(ph0, ph1, n).toFixed(2)),
        serverMs.toFixed(2), (routedMean - serverMs).toFixed(2), load(),
      ]);
      return added;
    };

    const mark = (ok: boolean) => (ok ? "✓" : "✗");
    const profileSections: string[] = [];
    const profile = (what: string, added: Awaited<ReturnType<typeof level>>) => {
      for (const path of ["connect", "v1"] as const) {
        if (added.profiles[path].length === 0) continue;
        const ps = added.profiles[path].map((f) => JSON.parse(readFileSync(f, "utf8")) as CpuProfile);
        profileSections.push(`chat-router CPU by area, ${path === "connect" ? "Connect SendMessage" : "/v1/chat/completions"}, ${what} (profiled, Node ${runtime.version};`
          + ` self = innermost known area on the stack; profiles in ${PROFILE_DIR}):\n\n${summaryTable(ps, added.tokens[path])}\n`);
      }
    };
    for (const streams of levels) {
      const added = await level(streams, Math.max(REQUESTS, streams * 4 * ROUNDS), { label: "saturated", modelId: "bench-model", simUrl, staggerMs: 0 });
      profile(`${streams} saturated streams`, added);
      if (streams !== AIM_STREAMS) continue;
      const { cpuPer1k: c, servicesPer1k: b, tps } = added;
      const share = (x: number) => `${((100 * x) / tps.direct).toFixed(0)}%`;
      // split: the aim is chat-router's own process; billing's process is printed beside it, and the sum.
      const beside = services ? `; billing + model-registry process beside it: Connect ${b.connect.toFixed(2)} ms, /v1 ${b.v1.toFixed(2)} ms`
        + ` (both processes: Connect ${(c.connect + b.connect).toFixed(2)} ms, /v1 ${(c.v1 + b.v1).toFixed(2)} ms)` : "";
      checks.push(`router CPU per 1k relayed tokens at ${streams} saturated streams (aim ≤ ${AIM_CPU_MS} ms): Connect ${c.connect.toFixed(2)} ms ${mark(c.connect <= AIM_CPU_MS)},`
        + ` /v1 ${c.v1.toFixed(2)} ms ${mark(c.v1 <= AIM_CPU_MS)} — floor ${c.floor.toFixed(2)} ms${beside}`);
      checks.push(`relayed tokens/s at ${streams} saturated streams (aim ≥ ${AIM_TPS_SHARE * 100}% of direct, ${tps.direct.toFixed(0)}): Connect ${tps.connect.toFixed(0)} = ${share(tps.connect)}`
        + ` ${mark(tps.connect >= AIM_TPS_SHARE * tps.direct)}, /v1 ${tps.v1.toFixed(0)} = ${share(tps.v1)} ${mark(tps.v1 >= AIM_TPS_SHARE * tps.direct)}`
        + ` — floor ${tps.floor.toFixed(0)} = ${share(tps.floor)}`);
    }
    if (!levels.includes(AIM_STREAMS)) {
      checks.push(`CPU and tokens/s aims: not measured (${topology === "split" ? "the split levels have" : "BENCH_LEVELS has"} no ${AIM_STREAMS}-stream level)`);
    }
    if (PACED_STREAMS === 0) checks.push("TTFT and ITL aims: not measured (BENCH_PACED_STREAMS=0)");
    if (PACED_STREAMS > 0) {
      // Streams start spread over one reply's duration, as independent users do; with equal replies at the same
      // pace, closed loops started together would stay in lockstep and every request would arrive in a burst.
      const replyMs = (REPLY_TOKENS / PACED_TPS) * 1000;
      const a = await level(PACED_STREAMS, PACED_REQUESTS, { label: `${PACED_TPS} tok/s`, modelId: "bench-model-paced", simUrl: pacedSimUrl, staggerMs: replyMs / PACED_STREAMS });
      profile(`${PACED_STREAMS} streams decoding ${PACED_TPS} tok/s`, a);
      const at = `at ${PACED_STREAMS} streams decoding ${PACED_TPS} tok/s`;
      const p50Max = a.floorP50 + AIM_TTFT_P50_OVER_FLOOR_MS;
      const p99Max = a.floorP99 + AIM_TTFT_P99_OVER_FLOOR_MS;
      checks.push(`added TTFT p50 ${at} (aim ≤ floor + ${AIM_TTFT_P50_OVER_FLOOR_MS} ms = ${p50Max.toFixed(2)} ms): Connect ${a.p50.toFixed(2)} ms ${mark(a.p50 <= p50Max)},`
        + ` /v1 ${a.openaiP50.toFixed(2)} ms ${mark(a.openaiP50 <= p50Max)} — floor ${a.floorP50.toFixed(2)} ms`);
      checks.push(`added TTFT p99 ${at} (aim ≤ floor + ${AIM_TTFT_P99_OVER_FLOOR_MS} ms = ${p99Max.toFixed(2)} ms): Connect ${a.p99.toFixed(2)} ms ${mark(a.p99 <= p99Max)},`
        + ` /v1 ${a.openaiP99.toFixed(2)} ms ${mark(a.openaiP99 <= p99Max)} — floor ${a.floorP99.toFixed(2)} ms`);
      checks.push(`added ITL p50 ${at} (aim ≤ ${AIM_ITL_MS * 1000} µs): Connect ${(a.itl * 1000).toFixed(0)} µs ${mark(a.itl <= AIM_ITL_MS)},`
        + ` /v1 ${(a.openaiItl * 1000).toFixed(0)} µs ${mark(a.openaiItl <= AIM_ITL_MS)} — floor ${(a.floorItl * 1000).toFixed(0)} µs`);
    }
    const inv = await ask<{ ok: boolean; violations: number }>(services ?? platform, "invariants");

    const table = (head: string[], body: string[][]) => console.log(`${markdownTable(head, body)}\n`);
    console.log(`chat-router relay overhead: ${REPLY_TOKENS}-token replies, closed loops, ${ROUNDS} alternating rounds; "saturated" = a zero-time vLLM simulator`
      + ` (the machine at its limit: throughput and CPU), "${PACED_TPS} tok/s" = the simulator decoding at a model's pace, streams starting spread out (the latency aims);`
      + ` "floor" = a relay that does none of chat-router's work (gRPC in, the same upstream client out), minus direct`);
    console.log(`load average (1/5/15 min) before: ${loadBefore}, after: ${load()} (shared cores: compare runs made together);`
      + ` relays (chat-router and the floor) on Node ${runtime.version}${runtime.execPath === process.execPath ? "" : ` (${runtime.execPath})`}, load generator and simulators on Node ${process.version}\n`);
    if (services) {
      console.log(`topology: split — chat-router alone in the platform process, calling billing and model-registry in their own process (on Node ${runtime.version})`
        + ` over gRPC with internal JWTs, as in the cluster; "router" CPU is chat-router's process only, "billing" CPU that other process over the same rounds\n`);
    }
    table(["model", "streams", "requests", "TTFT direct ms p50/p99", "TTFT via router ms p50/p99", "added TTFT ms p50/p99", "added via /v1 ms p50/p99", "floor added ms p50/p99",
      "ITL µs direct/router p50", "added ITL µs p50 router / v1 / floor", "tokens/s direct / router / v1 / floor", "CPU ms / 1k tok router / v1 / floor",
      ...(services ? ["billing CPU ms / 1k tok Connect / v1"] : [])], rows);
    console.log("where the routed TTFT goes (means, ms; phases measured inside chat-router):\n");
    table(["model", "streams", "direct", "routed", "prepare", "reserve", "upstream headers", "upstream 1st token", "server total",
      "transport+auth+relay", "load avg after"], breakdown);
    console.log(`aims (issue 23; relays on Node ${runtime.version}; ${TOPOLOGY_LABEL[topology]}; each beside the floor measured in the same run):`);
    for (const c of checks) console.log(`- ${c}`);
    if (profileSections.length > 0) console.log(`\n${profileSections.join("\n")}`);
    console.log("\nwhere the relay's CPU goes, per area, before and after issue 23's work: docs/RELAY-PROFILE.md");
    console.log(`ledger invariants after the run: ${inv.ok ? "hold" : `${inv.violations} violation(s)`}`);
    agent.destroy();
  } finally {
    // chat-router first, billing after it (as a rollout drains the caller before its dependency).
    for (const c of children.reverse()) await stopChild(c);
  }
}

await main();
process.exit(0);
