/**
 * Automatic prefix caching as vLLM does it: the prompt is cut into fixed-size blocks of token ids, each full block is
 * keyed by a hash chained over all blocks before it, and a new request reuses the longest run of leading blocks
 * already in the cache. Cached blocks are evicted least-recently-used when the cache is full.
 */
export class PrefixCache {
  /** Block hash → present. A Map keeps insertion order, which we use as recency (re-insert on hit). */
  private readonly blocks = new Map<number, true>();

  constructor(
    readonly blockSize: number,
    readonly capacityBlocks: number,
  ) {}

  /** Chained hashes of the full blocks of `tokens`. */
  blockHashes(tokens: readonly number[]): number[] {
    const full = Math.floor(tokens.length / this.blockSize);
    const out = new Array<number>(full);
    let h = 0x811c9dc5;
    for (let b = 0; b < full; b++) {
      const end = (b + 1) * this.blockSize;
      for (let i = b * this.blockSize; i < end; i++) {
        h ^= tokens[i]!;
        h = Math.imul(h, 0x01000193) >>> 0;
        h ^= h >>> 13;
      }
      out[b] = h;
    }
    return out;
  }

  /**
   * Number of leading prompt tokens found in the cache (whole blocks). When the entire prompt is cached the last
   * block is recomputed anyway, as in vLLM, which must run at least one prompt token to sample the first output.
   */
  lookup(hashes: readonly number[], promptTokens: number): number {
    let hit = 0;
    for (const h of hashes) {
      if (!this.blocks.has(h)) break;
      this.blocks.delete(h);
      this.blocks.set(h, true);
      hit++;
    }
    let cached = hit * this.blockSize;
    if (cached >= promptTokens) cached = Math.max(0, (hit - 1) * this.blockSize);
    return cached;
  }

  /** Records blocks as computed (cached), evicting the least recently used beyond capacity. */
  insert(hashes: readonly number[]): void {
    for (const h of hashes) {
      if (this.blocks.has(h)) this.blocks.delete(h);
      this.blocks.set(h, true);
    }
    while (this.blocks.size > this.capacityBlocks) {
      const oldest = this.blocks.keys().next().value as number;
      this.blocks.delete(oldest);
    }
  }

  get size(): number {
    return this.blocks.size;
  }

  clear(): void {
    this.blocks.clear();
  }
}
