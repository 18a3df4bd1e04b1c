/**
 * Coalesces concurrent calls of one ledger statement into multi-row statements ("natural batching").
 *
 * A call runs at once while fewer than `maxInFlight` statements of its kind are in flight, so an idle replica adds no
 * latency: a lone call is a batch of one and runs the single-row statement. Calls that arrive while all slots are
 * busy queue up, and the next free slot takes up to `maxSize` of them as one statement: one round trip, one plan, one
 * commit (one WAL flush) instead of many. Under load this is what lets the ledger keep up with the database's
 * commit rate instead of spending it one tiny transaction per call.
 *
 * A batch never holds two calls with the same key (the same account for reserves, the same hold for commits): those
 * must see each other's effect, so the later one waits for a later batch, in arrival order. When a batch statement
 * fails as a whole (a unique violation from a concurrent retry, a deadlock, a lost connection), or leaves a call
 * without a result (a replay, insufficient credits), those calls run again one by one through the single-row path,
 * which explains them exactly as it always has. A failed batch is rolled back entirely, so a re-run never applies
 * anything twice.
 */
export interface BatcherOptions<I, O> {
  /** Statements of this kind in flight at once (each on its own pooled connection). */
  maxInFlight: number;
  /** Calls per statement at most. */
  maxSize: number;
  /** Calls with the same key never share a batch. */
  key(input: I): string;
  /** The single-row path: runs one call (a batch of one, and every fallback). */
  runOne(input: I): Promise<O>;
  /** Runs several calls in one statement; `undefined` for a call it did not settle (it then runs alone). */
  runMany(inputs: I[]): Promise<(O | undefined)[]>;
  /** Called with each batch's size as it starts (metrics). */
  onBatch?(size: number): void;
}

interface Pending<I, O> {
  input: I;
  resolve(out: O): void;
  reject(err: unknown): void;
}

export class Batcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private inFlight = 0;

  constructor(private readonly opts: BatcherOptions<I, O>) {
    if (!(opts.maxInFlight >= 1 && opts.maxSize >= 1)) throw new Error("batcher: maxInFlight and maxSize must be ≥ 1");
  }

  run(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ input, resolve, reject });
      this.pump();
    });
  }

  /** Calls waiting for a slot (for tests and metrics). */
  get waiting(): number {
    return this.queue.length;
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      const batch = this.take();
      this.inFlight++;
      void this.settle(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  /** The oldest calls with distinct keys, up to maxSize; the rest keep their order in the queue. */
  private take(): Pending<I, O>[] {
    if (this.queue.length === 1 || this.opts.maxSize === 1) return this.queue.splice(0, 1);
    const keys = new Set<string>();
    const batch: Pending<I, O>[] = [];
    const rest: Pending<I, O>[] = [];
    for (const p of this.queue) {
      const k = this.opts.key(p.input);
      if (batch.length < this.opts.maxSize && !keys.has(k)) {
        keys.add(k);
        batch.push(p);
      } else {
        rest.push(p);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async settle(batch: Pending<I, O>[]): Promise<void> {
    let results: (O | undefined)[] | undefined;
    this.opts.onBatch?.(batch.length);
    if (batch.length > 1) {
      try {
        results = await this.opts.runMany(batch.map((p) => p.input));
      } catch {
        // Rolled back as a whole: every call runs alone below and meets its own outcome (or error).
        results = undefined;
      }
    }
    await Promise.all(
      batch.map(async (p, i) => {
        const settled = results?.[i];
        if (settled !== undefined) return p.resolve(settled);
        try {
          p.resolve(await this.opts.runOne(p.input));
        } catch (err) {
          p.reject(err);
        }
      }),
    );
  }
}

