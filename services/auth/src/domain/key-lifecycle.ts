/**
 * When signing keys are created, used and dropped. Pure: the key store feeds it rows and the clock.
 *
 * A key is *pending* before `activatesAt` (already in the JWKS, so verifiers that cache the JWKS know it before the
 * first token it signs arrives), *active* while it is the newest key whose `activatesAt` has passed (it signs every
 * new token), and *retired* once a newer key is active: it stays in the JWKS until every token it signed has expired
 * (`retainAfterSupersededMs` = access-token TTL + clock-skew margin), and may be deleted after that.
 */
export type KeyTimes = { kid: string; activatesAt: Date };

export type LifecycleOptions = {
  /** How long a key signs before its successor takes over. */
  rotationIntervalMs: number;
  /** How long before activation a new key is published (≥ the longest JWKS cache of any verifier). */
  prepublishMs: number;
  /** How long a retired key stays published (≥ access-token TTL + allowed clock skew). */
  retainAfterSupersededMs: number;
};

function byActivation<K extends KeyTimes>(keys: readonly K[]): K[] {
  return [...keys].sort((a, b) => a.activatesAt.getTime() - b.activatesAt.getTime() || a.kid.localeCompare(b.kid));
}

/** The key that signs at `now`: the newest one already activated. */
export function activeKey<K extends KeyTimes>(keys: readonly K[], now: Date): K | undefined {
  return byActivation(keys).filter((k) => k.activatesAt <= now).pop();
}

/** The keys a verifier must know at `now`: pending, active, and retired ones whose tokens may still be valid. */
export function publishedKeys<K extends KeyTimes>(keys: readonly K[], now: Date, opts: LifecycleOptions): K[] {
  const sorted = byActivation(keys);
  return sorted.filter((k, i) => {
    const successor = sorted[i + 1];
    if (!successor || successor.activatesAt > now) return true; // active or pending
    return successor.activatesAt.getTime() + opts.retainAfterSupersededMs > now.getTime();
  });
}

/** Keys that are no longer published and can be deleted. */
export function expiredKeys<K extends KeyTimes>(keys: readonly K[], now: Date, opts: LifecycleOptions): K[] {
  const published = new Set(publishedKeys(keys, now, opts).map((k) => k.kid));
  return keys.filter((k) => !published.has(k.kid));
}

/**
 * When the next key should activate, if one should be created now; undefined when no key is due. With no key at
 * all, the first one activates at once (there is nothing to sign with meanwhile).
 */
export function nextKeyActivation(keys: readonly KeyTimes[], now: Date, opts: LifecycleOptions): Date | undefined {
  const newest = byActivation(keys).pop();
  if (!newest) return now;
  if (newest.activatesAt > now) return undefined; // a successor is already published and waiting
  const due = newest.activatesAt.getTime() + opts.rotationIntervalMs;
  if (due - opts.prepublishMs > now.getTime()) return undefined;
  return new Date(Math.max(due, now.getTime() + opts.prepublishMs));
}
