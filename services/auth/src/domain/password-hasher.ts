import { hash, parseOptions, verify, type Algorithm } from "@node-rs/argon2";
import { canonicalPassword } from "./password-policy.js";

/**
 * argon2id via @node-rs/argon2: the work runs on libuv's thread pool, off the event loop. Floors from OWASP's
 * password storage cheat sheet (m = 19 MiB, t = 2, p = 1); configuration may only go upward.
 */
export type Argon2Params = { memoryKiB: number; iterations: number; parallelism: number };

export const ARGON2_FLOOR: Argon2Params = { memoryKiB: 19 * 1024, iterations: 2, parallelism: 1 };
const ARGON2ID = 2 as Algorithm; // Algorithm is a `const enum`, which isolatedModules cannot import as a value

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /** Constant work whether or not `encoded` is a real hash: pass `undefined` for an unknown account. */
  verify(encoded: string | undefined, password: string): Promise<boolean>;
  /** True when `encoded` was made with weaker parameters than the current ones (rehash after a good sign-in). */
  needsRehash(encoded: string): boolean;
}

/** Limits concurrent argon2 runs: each takes `memoryKiB` and a libuv pool thread that fs and dns also need. */
class Semaphore {
  private waiting: Array<() => void> = [];
  private active = 0;
  constructor(private readonly max: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

export function createArgon2Hasher(params: Argon2Params, opts: { maxConcurrency: number }): PasswordHasher {
  if (params.memoryKiB < ARGON2_FLOOR.memoryKiB || params.iterations < ARGON2_FLOOR.iterations || params.parallelism < 1) {
    throw new Error(`argon2 parameters below the floor (m=${ARGON2_FLOOR.memoryKiB} KiB, t=${ARGON2_FLOOR.iterations}, p=1)`);
  }
  const options = { algorithm: ARGON2ID, memoryCost: params.memoryKiB, timeCost: params.iterations, parallelism: params.parallelism };
  const gate = new Semaphore(opts.maxConcurrency);
  // Verified against when the account does not exist, so an unknown email costs the same time as a wrong password.
  let dummy: Promise<string> | undefined;
  const dummyHash = () => (dummy ??= hash("luna-dummy-password-for-timing", options));

  return {
    hash: (password) => gate.run(() => hash(canonicalPassword(password), options)),
    async verify(encoded, password) {
      const target = encoded ?? (await dummyHash());
      const ok = await gate.run(() => verify(target, canonicalPassword(password)).catch(() => false));
      return encoded !== undefined && ok;
    },
    needsRehash(encoded) {
      try {
        const p = parseOptions(encoded);
        return p.algorithm !== ARGON2ID || p.memoryCost < params.memoryKiB || p.timeCost < params.iterations || p.parallelism !== params.parallelism;
      } catch {
        return true;
      }
    },
  };
}
