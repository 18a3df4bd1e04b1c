/**
 * Simulator state shared by all routes: one engine per served model, the live fault settings and their dice, and
 * the counters behind `GET /_sim/stats`.
 */
import { type Faults, type RequestRecord, type ResolvedOptions, SimConfigError, validateFaults } from "./config.js";
import { type EngineContext, type PlannedFault, ModelEngine } from "./engine.js";
import { renderMetrics } from "./metrics.js";
import { mulberry32 } from "./textgen.js";

/** A snapshot of the simulator's counters (since start or the last reset). */
export interface SimStats {
  requests: {
    /** Generation requests received (chat and completions), including rejected ones. */
    total: number;
    /** Finished with finish_reason stop or length. */
    completed: number;
    /** The client disconnected before the end (including while waiting, and after an injected hang). */
    aborted: number;
    /** Injected errors: HTTP errors before output and mid-stream errors. */
    failed: number;
    /** Connections dropped by the disconnect fault. */
    disconnected: number;
    /** Answered with a 4xx error (validation, unknown model, context length, auth). */
    rejected: number;
    /** In progress now, over all models. */
    running: number;
    waiting: number;
    /** Most requests running / waiting at once, per model, maximised over models. */
    maxRunning: number;
    maxWaiting: number;
  };
  tokens: { prompt: number; generation: number };
  /** In tokens, as vLLM's `prefix_cache_queries` / `prefix_cache_hits` counters. */
  prefixCache: { queries: number; hits: number };
  /** How many times each fault was injected. */
  faults: { error: number; midStreamError: number; hang: number; disconnect: number };
  models: Array<{ name: string; maxModelLen: number; running: number; waiting: number; hung: number;
    kvCacheUsage: number; cachedBlocks: number }>;
  /** The most recent finished requests, oldest first. */
  recent: RequestRecord[];
}

/** A chosen reply for prompts containing `match`. */
export interface ReplyScript {
  match: string;
  text: string;
}

/** An HTTP error before any output, or a fault that fires during generation. */
export type FaultPlan = { kind: "error"; status: number } | PlannedFault;

export class Simulator implements EngineContext {
  faults: Faults;
  readonly engines = new Map<string, ModelEngine>();
  private readonly initialFaults: Faults;
  private rand: () => number;
  private counters = Simulator.zeroCounters();
  private recent: RequestRecord[] = [];
  /** Epoch ms at which the simulated model load ends (cold-start mode); <= now when ready. */
  readyAt: number;
  /**
   * Reply scripts (`POST /_sim/replies`): a prompt whose last user message contains `match` gets exactly `text` as
   * its reply, so a client test can check how a chosen reply (markdown, code) is shown. The first match wins.
   */
  replies: ReplyScript[] = [];

  constructor(readonly options: ResolvedOptions) {
    this.readyAt = Date.now() + options.coldStartMs;
    this.faults = { ...options.faults };
    this.initialFaults = { ...options.faults };
    this.rand = mulberry32(options.faultSeed);
    for (const m of options.models) this.engines.set(m.name, new ModelEngine(m.name, m.maxModelLen, this));
  }

  private static zeroCounters() {
    return { total: 0, completed: 0, aborted: 0, failed: 0, disconnected: 0, rejected: 0, error: 0,
      midStreamError: 0, hang: 0, disconnect: 0 };
  }

  /** Merges validated fault settings; returns the full set now in force. */
  setFaults(partial: Partial<Faults>): Faults {
    this.faults = { ...this.faults, ...validateFaults(partial) };
    return { ...this.faults };
  }

  /** Rolls the fault dice for one generation request; each fault has its own roll, checked in this order. */
  planFault(): FaultPlan | undefined {
    const f = this.faults;
    if (f.errorRate > 0 && this.rand() < f.errorRate) {
      this.counters.error++;
      return { kind: "error", status: f.errorStatus };
    }
    if (f.hangRate > 0 && this.rand() < f.hangRate) return { kind: "hang", afterTokens: f.hangAfterTokens };
    if (f.disconnectRate > 0 && this.rand() < f.disconnectRate) {
      return { kind: "disconnect", afterTokens: f.disconnectAfterTokens };
    }
    if (f.midStreamErrorRate > 0 && this.rand() < f.midStreamErrorRate) {
      return { kind: "mid-stream-error", afterTokens: f.midStreamErrorAfterTokens };
    }
    return undefined;
  }

  countRequest(): void {
    this.counters.total++;
  }

  countRejected(): void {
    this.counters.rejected++;
  }

  /** An HTTP error injected before the request reached an engine. */
  countInjectedHttpError(): void {
    this.counters.failed++;
  }

  /** Engine callback: a planned fault fired. */
  onFault(kind: PlannedFault["kind"]): void {
    if (kind === "hang") this.counters.hang++;
    else if (kind === "disconnect") this.counters.disconnect++;
    else this.counters.midStreamError++;
  }

  /** Engine callback: a request ended. */
  onDone(record: RequestRecord, outcome: "completed" | "aborted" | "failed" | "disconnected"): void {
    this.counters[outcome]++;
    if (this.options.recentRequests > 0) {
      this.recent.push(record);
      if (this.recent.length > this.options.recentRequests) this.recent.shift();
    }
    try {
      this.options.onRequest?.(record);
    } catch (err) {
      // A throwing logger must not take down the engine loop that called us.
      console.error("sim-vllm: onRequest callback failed:", err);
    }
  }

  stats(): SimStats {
    const c = this.counters;
    const s: SimStats = {
      requests: { total: c.total, completed: c.completed, aborted: c.aborted, failed: c.failed,
        disconnected: c.disconnected, rejected: c.rejected, running: 0, waiting: 0, maxRunning: 0, maxWaiting: 0 },
      tokens: { prompt: 0, generation: 0 },
      prefixCache: { queries: 0, hits: 0 },
      faults: { error: c.error, midStreamError: c.midStreamError, hang: c.hang, disconnect: c.disconnect },
      models: [],
      recent: this.recent.slice(),
    };
    for (const e of this.engines.values()) {
      let hung = 0;
      for (const seq of e.running) if (seq.hung) hung++;
      s.requests.running += e.running.size;
      s.requests.waiting += e.waiting.length;
      s.requests.maxRunning = Math.max(s.requests.maxRunning, e.maxRunning);
      s.requests.maxWaiting = Math.max(s.requests.maxWaiting, e.maxWaiting);
      s.tokens.prompt += e.metrics.promptTokens;
      s.tokens.generation += e.metrics.generationTokens;
      s.prefixCache.queries += e.metrics.prefixCacheQueries;
      s.prefixCache.hits += e.metrics.prefixCacheHits;
      s.models.push({ name: e.model, maxModelLen: e.maxModelLen, running: e.running.size, waiting: e.waiting.length,
        hung, kvCacheUsage: e.kvCacheUsage(), cachedBlocks: e.cache?.size ?? 0 });
    }
    return s;
  }

  /** Whether the simulated model is still loading (cold-start mode). */
  get loading(): boolean {
    return Date.now() < this.readyAt;
  }

  /** Starts a cold start of `ms` (default: the configured `coldStartMs`) now; returns when it ends (epoch ms). */
  coldStart(ms = this.options.coldStartMs): number {
    if (!Number.isSafeInteger(ms) || ms < 0) throw new SimConfigError("cold start ms must be a non-negative integer");
    this.readyAt = Date.now() + ms;
    return this.readyAt;
  }

  /** Replaces the reply scripts (validated: a list of {match, text} with non-empty strings). */
  setReplies(list: unknown): ReplyScript[] {
    if (!Array.isArray(list)) throw new SimConfigError("replies must be a list of {match, text}");
    this.replies = list.map((r: unknown, i) => {
      const o = r as Partial<ReplyScript> | null;
      if (typeof o?.match !== "string" || o.match === "" || typeof o.text !== "string" || o.text === "") {
        throw new SimConfigError(`replies[${i}] must be {"match": "non-empty text", "text": "non-empty reply"}`);
      }
      return { match: o.match, text: o.text };
    });
    return this.replies;
  }

  /** The scripted reply for a prompt (its last user message, or the whole prompt of a completion), if any. */
  scriptedReply(prompt: string): string | undefined {
    return this.replies.find((r) => prompt.includes(r.match))?.text;
  }

  /** Zeroes counters and metrics, empties prefix caches, restores the initial faults and fault dice, drops the reply scripts, and starts the
   * configured cold start again (a fresh pod). */
  reset(): void {
    this.coldStart();
    this.counters = Simulator.zeroCounters();
    this.recent = [];
    this.faults = { ...this.initialFaults };
    this.replies = [];
    this.rand = mulberry32(this.options.faultSeed);
    for (const e of this.engines.values()) e.reset();
  }

  /** `GET /metrics` body. */
  metricsText(): string {
    return renderMetrics([...this.engines.values()].map((e) => ({
      model: e.model, running: e.running.size, waiting: e.waiting.length, kvCacheUsage: e.kvCacheUsage(),
      metrics: e.metrics,
    })));
  }

  /** Aborts everything in flight (server shutdown). */
  abortAll(): void {
    for (const e of this.engines.values()) {
      for (const seq of [...e.waiting, ...e.running]) seq.abort();
    }
  }
}
