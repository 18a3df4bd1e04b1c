/**
 * The simulated inference engine of one served model: admission (at most `maxNumSeqs` sequences generate at once,
 * the rest wait in FIFO order), prefix-cache lookup, prefill delay, per-token decode timing, stop conditions,
 * injected faults, and aborts that free the slot at once.
 *
 * Timing is driven by due times rather than fixed sleeps: each token has a due time (first token at
 * start + prefill, then one inter-token interval apart), and a wake-up emits every token already due, so a late
 * timer never slows the simulated rate down and rates above 1000 tokens/s work despite millisecond timers.
 */
import { performance } from "node:perf_hooks";
import type { Faults, RequestRecord, ResolvedOptions } from "./config.js";
import { ModelMetrics } from "./metrics.js";
import { PrefixCache } from "./prefix-cache.js";
import { ReplyGenerator, mulberry32 } from "./textgen.js";
import { tokenId, tokenizePieces } from "./tokenizer.js";

/** Most tokens one sequence emits per wake-up before yielding, so zero-time streams interleave fairly. */
const MAX_TOKENS_PER_WAKE = 16;

export type FinishReason = "stop" | "length";

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens served from the prefix cache. */
  cachedTokens: number;
}

export interface FinishResult {
  finishReason: FinishReason;
  /** The stop string that ended the reply, or null. */
  stopReason: string | null;
  /** Output not yet passed to {@link SequenceSink.delta} (the end of the reply; may be ""). */
  text: string;
  usage: Usage;
}

/** Where a sequence's output goes: the HTTP response writer. */
export interface SequenceSink {
  /** One token's worth of output (may be "" while text is held back for stop-string matching). Returns false
   * when the consumer is full; the engine then pauses until {@link Sequence.resume}. */
  delta(text: string): boolean;
  finish(result: FinishResult): void;
  /** An injected failure during generation. */
  error(message: string): void;
  /** An injected connection drop. */
  disconnect(): void;
}

/** A fault decided for a request before it runs. */
export interface PlannedFault {
  kind: "mid-stream-error" | "hang" | "disconnect";
  afterTokens: number;
}

export interface SequenceInit {
  id: string;
  endpoint: "chat" | "completions";
  stream: boolean;
  promptIds: number[];
  /** Upper bound on output tokens (already clamped to the context window). */
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  stop: string[];
  includeStopStrInOutput: boolean;
  /** Seed of the reply text (see `replySeed`). */
  seed: number;
  /** A scripted reply (`/_sim/replies`): sent token by token as it is, then the reply ends. */
  script?: string;
  fault?: PlannedFault;
  sink: SequenceSink;
}

type State = "waiting" | "running" | "done";

/** A scripted reply's tokens, its last one ending the reply; then (ignore_eos) the usual words. */
class ScriptedReply {
  private readonly pieces: string[];
  private at = 0;

  constructor(text: string, private readonly after: ReplyGenerator) {
    this.pieces = tokenizePieces(text);
  }

  next(): { piece: string; endsSentence: boolean } {
    if (this.at >= this.pieces.length) return this.after.next();
    const piece = this.pieces[this.at++]!;
    return { piece, endsSentence: this.at === this.pieces.length };
  }
}

/** One request inside the engine. */
export class Sequence {
  state: State = "waiting";
  readonly arrival = performance.now();
  scheduledAt = 0;
  firstTokenAt = 0;
  private lastTokenAt = 0;
  generated = 0;
  cachedTokens = 0;
  prefillMs = 0;
  /** Set while a hang fault holds this sequence. */
  hung = false;
  private readonly outputIds: number[] = [];
  private readonly gen: Pick<ReplyGenerator, "next">;
  private readonly naturalLength: number;
  private readonly maxStopLen: number;
  private text = "";
  private sent = 0;
  private nextDue = 0;
  private paused = false;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly step = () => this.run();

  constructor(
    private readonly engine: ModelEngine,
    readonly init: SequenceInit,
  ) {
    const { min, max } = engine.options.outputTokens;
    if (init.script !== undefined) {
      this.gen = new ScriptedReply(init.script, new ReplyGenerator(init.seed));
      this.naturalLength = tokenizePieces(init.script).length;
    } else {
      this.gen = new ReplyGenerator(init.seed);
      this.naturalLength = min + Math.floor(mulberry32(init.seed ^ 0x2545f491)() * (max - min + 1));
    }
    this.maxStopLen = init.stop.reduce((n, s) => Math.max(n, s.length), 0);
  }

  get promptTokens(): number {
    return this.init.promptIds.length;
  }

  /** Blocks of KV cache this sequence holds now. */
  kvBlocks(blockSize: number): number {
    return Math.ceil((this.init.promptIds.length + this.generated) / blockSize);
  }

  /** Admitted by the scheduler: look up the prefix cache and wait out the prefill. */
  start(): void {
    const e = this.engine;
    this.state = "running";
    this.scheduledAt = performance.now();
    e.metrics.queueTime.observe((this.scheduledAt - this.arrival) / 1000);
    const promptLen = this.init.promptIds.length;
    if (e.cache) {
      this.cachedTokens = e.cache.lookup(e.cache.blockHashes(this.init.promptIds), promptLen);
      e.metrics.prefixCacheQueries += promptLen;
      e.metrics.prefixCacheHits += this.cachedTokens;
    }
    const t = e.options.timing;
    this.prefillMs = t.zeroTime ? 0 : t.ttftMs + ((promptLen - this.cachedTokens) / t.prefillTokensPerSec) * 1000;
    this.nextDue = this.scheduledAt + this.prefillMs + e.faults.slowTokenMs;
    this.schedule();
  }

  /** Continues after backpressure. */
  resume(): void {
    if (!this.paused || this.state !== "running") return;
    this.paused = false;
    this.schedule();
  }

  /** The client went away: stop generating and free the slot (or leave the queue). */
  abort(): void {
    if (this.state === "done") return;
    this.end("abort");
  }

  private schedule(): void {
    const delay = this.nextDue - performance.now();
    if (delay <= 0.5) this.immediate = setImmediate(this.step);
    else this.timer = setTimeout(this.step, delay);
  }

  private run(): void {
    this.timer = this.immediate = undefined;
    let emitted = 0;
    while (this.state === "running" && !this.paused) {
      const now = performance.now();
      if (now < this.nextDue - 0.5) break;
      const fault = this.init.fault;
      if (fault && this.generated === fault.afterTokens) {
        this.triggerFault(fault);
        return;
      }
      if (emitted++ >= MAX_TOKENS_PER_WAKE) {
        this.immediate = setImmediate(this.step);
        return;
      }
      this.produceToken(now);
    }
    if (this.state === "running" && !this.paused) this.schedule();
  }

  private produceToken(now: number): void {
    const e = this.engine;
    const { piece, endsSentence } = this.gen.next();
    this.generated++;
    this.outputIds.push(tokenId(piece));
    e.metrics.generationTokens++;
    if (this.generated === 1) {
      this.firstTokenAt = now;
      e.metrics.promptTokens += this.init.promptIds.length;
      e.metrics.ttft.observe((now - this.arrival) / 1000);
    } else {
      e.metrics.itl.observe((now - this.lastTokenAt) / 1000);
    }
    this.lastTokenAt = now;
    const t = e.options.timing;
    this.nextDue += (t.zeroTime ? 0 : 1000 / t.decodeTokensPerSec) + e.faults.slowTokenMs;

    const init = this.init;
    let reason: FinishReason | undefined;
    let stopReason: string | null = null;
    if (!init.ignoreEos && this.generated >= init.minTokens && this.generated >= this.naturalLength && endsSentence) {
      reason = "stop";
    }
    let delta = piece;
    if (this.maxStopLen > 0) {
      // Output is held back by (longest stop string - 1) characters so a stop string split across tokens is never
      // partly sent; streamed deltas therefore always concatenate to the non-streamed text.
      const from = Math.max(0, this.text.length - this.maxStopLen + 1);
      this.text += piece;
      let at = -1;
      if (this.generated >= init.minTokens) {
        for (const s of init.stop) {
          const i = this.text.indexOf(s, from);
          if (i >= 0 && (at < 0 || i < at)) {
            at = i;
            stopReason = s;
          }
        }
      }
      if (at >= 0) {
        const end = at + (init.includeStopStrInOutput ? stopReason!.length : 0);
        delta = this.text.slice(this.sent, end);
        this.sent = end;
        reason = "stop";
      } else if (reason || this.generated >= init.maxTokens) {
        delta = this.text.slice(this.sent);
        this.sent = this.text.length;
      } else {
        const safe = this.text.length - (this.maxStopLen - 1);
        delta = safe > this.sent ? this.text.slice(this.sent, safe) : "";
        if (safe > this.sent) this.sent = safe;
      }
    }
    if (!reason && this.generated >= init.maxTokens) reason = "length";

    if (reason) {
      this.end(reason);
      init.sink.finish({ finishReason: reason, stopReason, text: delta, usage: this.usage() });
    } else if (!init.sink.delta(delta)) {
      this.paused = true;
    }
  }

  private triggerFault(fault: PlannedFault): void {
    const e = this.engine;
    e.recordFault(fault.kind);
    if (fault.kind === "hang") {
      // Keep the slot and produce nothing more; the client's disconnect ends it (see abort()).
      this.hung = true;
      return;
    }
    if (fault.kind === "mid-stream-error") {
      this.end("error");
      this.init.sink.error("Simulated engine failure during generation (sim-vllm fault injection)");
    } else {
      this.end("abort");
      this.init.sink.disconnect();
    }
  }

  usage(): Usage {
    return { promptTokens: this.init.promptIds.length, completionTokens: this.generated, cachedTokens: this.cachedTokens };
  }

  private end(reason: FinishReason | "abort" | "error"): void {
    const wasWaiting = this.state === "waiting";
    this.state = "done";
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = this.immediate = undefined;
    this.engine.finished(this, reason, wasWaiting);
  }

  /** Prompt and output token ids, for the prefix cache (vLLM caches output blocks too, which is what makes the next
   * turn of a conversation hit the cache through the previous reply). */
  allTokenIds(): number[] {
    return this.outputIds.length === 0 ? this.init.promptIds : this.init.promptIds.concat(this.outputIds);
  }
}

/** Live, mutable engine settings shared with the simulator (faults change at run time). */
export interface EngineContext {
  readonly options: ResolvedOptions;
  readonly faults: Faults;
  onFault(kind: PlannedFault["kind"]): void;
  onDone(record: RequestRecord, client: "completed" | "aborted" | "failed" | "disconnected"): void;
}

/** The scheduler and state of one served model. */
export class ModelEngine {
  readonly metrics = new ModelMetrics();
  readonly cache: PrefixCache | undefined;
  readonly running = new Set<Sequence>();
  readonly waiting: Sequence[] = [];
  /** Most sequences seen running / waiting at once since the last reset. */
  maxRunning = 0;
  maxWaiting = 0;

  constructor(
    readonly model: string,
    readonly maxModelLen: number,
    private readonly ctx: EngineContext,
  ) {
    const o = ctx.options;
    this.cache = o.enablePrefixCaching ? new PrefixCache(o.blockSize, o.kvCacheBlocks) : undefined;
  }

  get options(): ResolvedOptions {
    return this.ctx.options;
  }

  get faults(): Faults {
    return this.ctx.faults;
  }

  /** Queues a request; it starts at once when a slot is free. */
  submit(init: SequenceInit): Sequence {
    const seq = new Sequence(this, init);
    if (this.running.size < this.ctx.options.maxNumSeqs && this.waiting.length === 0) {
      this.admit(seq);
    } else {
      this.waiting.push(seq);
      if (this.waiting.length > this.maxWaiting) this.maxWaiting = this.waiting.length;
    }
    return seq;
  }

  /** Fraction of KV-cache blocks held by running sequences (capped at 1). */
  kvCacheUsage(): number {
    const bs = this.ctx.options.blockSize;
    let blocks = 0;
    for (const s of this.running) blocks += s.kvBlocks(bs);
    return Math.min(1, blocks / this.ctx.options.kvCacheBlocks);
  }

  recordFault(kind: PlannedFault["kind"]): void {
    this.ctx.onFault(kind);
  }

  private admit(seq: Sequence): void {
    this.running.add(seq);
    if (this.running.size > this.maxRunning) this.maxRunning = this.running.size;
    seq.start();
  }

  /** Called by a sequence as it ends: frees its slot, records metrics, admits the next waiting request. */
  finished(seq: Sequence, reason: FinishReason | "abort" | "error", wasWaiting: boolean): void {
    if (wasWaiting) {
      const i = this.waiting.indexOf(seq);
      if (i >= 0) this.waiting.splice(i, 1);
    } else {
      this.running.delete(seq);
      if (this.cache && seq.generated + seq.promptTokens >= this.ctx.options.blockSize) {
        this.cache.insert(this.cache.blockHashes(seq.allTokenIds()));
      }
    }
    const now = performance.now();
    this.metrics.countFinished(reason);
    this.metrics.e2e.observe((now - seq.arrival) / 1000);
    const fault = seq.init.fault?.kind;
    const injected = (fault === "mid-stream-error" && reason === "error") || (fault === "disconnect" && reason === "abort");
    const record: RequestRecord = {
      id: seq.init.id,
      model: this.model,
      endpoint: seq.init.endpoint,
      stream: seq.init.stream,
      promptTokens: seq.promptTokens,
      cachedTokens: seq.cachedTokens,
      completionTokens: seq.generated,
      finishReason: reason,
      prefillMs: seq.prefillMs,
      queueMs: wasWaiting ? now - seq.arrival : seq.scheduledAt - seq.arrival,
      ttftMs: seq.generated > 0 ? seq.firstTokenAt - seq.arrival : null,
      e2eMs: now - seq.arrival,
    };
    if (injected || seq.hung) record.fault = fault;
    this.ctx.onDone(record,
      reason === "stop" || reason === "length" ? "completed"
        : reason === "error" ? "failed"
          : injected ? "disconnected" : "aborted");
    while (this.waiting.length > 0 && this.running.size < this.ctx.options.maxNumSeqs) {
      this.admit(this.waiting.shift()!);
    }
  }

  /** Forgets cached prefixes and metrics (running requests keep going). */
  reset(): void {
    this.cache?.clear();
    this.metrics.reset();
    this.maxRunning = this.running.size;
    this.maxWaiting = this.waiting.length;
  }
}
