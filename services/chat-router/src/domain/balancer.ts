// Replica choice for one request: prefer the conversation's own replica (rendezvous hashing, so a conversation keeps
// hitting the replica whose prefix cache holds its history, and only 1/n of conversations move when a replica comes
// or goes), unless it is busier than the least loaded replica by more than `slack` requests in flight.

/** 32-bit FNV-1a of a string. */
export function hash32(s: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Mixes two 32-bit hashes into a well-spread score (murmur3's finalizer). */
export function rendezvousScore(keyHash: number, nodeHash: number): number {
  let h = (keyHash ^ Math.imul(nodeHash, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface Candidate {
  /** Stable hash of the replica's URL (hash32). */
  urlHash: number;
  inflight: number;
}

/**
 * Index of the chosen candidate, or -1 when there is none. Candidates are the replicas that may take a request now
 * (healthy, breaker not open).
 */
export function chooseReplica(candidates: readonly Candidate[], key: string, slack: number): number {
  const n = candidates.length;
  if (n === 0) return -1;
  if (n === 1) return 0;
  let minInflight = Infinity;
  for (let i = 0; i < n; i++) minInflight = Math.min(minInflight, candidates[i]!.inflight);
  const keyHash = hash32(key);
  // The highest-scoring candidate within the load bound; ties in load never matter, only the bound does.
  let best = -1;
  let bestScore = -1;
  for (let i = 0; i < n; i++) {
    const c = candidates[i]!;
    if (c.inflight > minInflight + slack) continue;
    const score = rendezvousScore(keyHash, c.urlHash);
    if (score > bestScore) {
      bestScore = score;
      best = i;
    }
  }
  return best;
}
