/**
 * Token counts of message texts: the upstream's `/tokenize` when it has one, otherwise (or when it fails) the
 * conservative estimate. A replica found without a usable `/tokenize` is not asked again for a while.
 */
import { estimateTokens } from "../domain/tokens.js";
import { tokenizeText } from "../upstream/client.js";
import type { ReplicaPool } from "../upstream/pool.js";

export interface TokenCounterOptions {
  pool: Pick<ReplicaPool, "peek">;
  timeoutMs: number;
  bytesPerToken: number;
  /** How long a replica without /tokenize is not asked again. */
  unsupportedTtlMs?: number;
  log: { debug(obj: object, msg?: string): void };
}

export class TokenCounter {
  private readonly unsupported = new Map<string, number>();
  private readonly ttl: number;

  constructor(private readonly opts: TokenCounterOptions) {
    this.ttl = opts.unsupportedTtlMs ?? 10 * 60_000;
  }

  estimate(text: string): number {
    return estimateTokens(text, this.opts.bytesPerToken);
  }

  /** Content tokens of `text` for `modelId`; `key` picks the replica the request itself will likely use. */
  async count(modelId: string, key: string, text: string): Promise<number> {
    if (text.length === 0) return 0;
    const target = await this.opts.pool.peek(modelId, key).catch(() => undefined);
    if (!target) return this.estimate(text);
    const base = target.endpoint.baseUrl;
    const until = this.unsupported.get(base);
    if (until !== undefined) {
      if (Date.now() < until) return this.estimate(text);
      this.unsupported.delete(base);
    }
    try {
      const n = await tokenizeText(target.endpoint, target.model, text, this.opts.timeoutMs);
      if (n !== undefined) return n;
      this.unsupported.set(base, Date.now() + this.ttl);
    } catch (err) {
      this.opts.log.debug({ err, replica: base }, "tokenize failed; estimating");
    }
    return this.estimate(text);
  }
}
