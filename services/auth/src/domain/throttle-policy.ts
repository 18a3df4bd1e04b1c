/**
 * Brute-force limits for sign-in (pure arithmetic; the Redis store keeps the counts).
 *
 * - Per account: at most `maxFailuresPerHour` failed sign-ins in any sliding hour (the hard cap ASVS asks for), and
 *   a progressive delay once `freeFailures` consecutive failures have happened: the next attempt waits
 *   `baseDelayMs × 2^(n − freeFailures)`, capped at `maxDelayMs`. A successful sign-in resets the delay, never the
 *   hourly cap. Both keys are the normalised email, whether or not an account exists, so throttling reveals nothing.
 * - Per IP: at most `ipMaxFailures` failed sign-ins per `ipWindowMs`.
 * Neither locks an account for longer than the sliding hour: the real user is back as soon as the attacker's
 * failures age out, without an admin.
 */
export type SignInThrottlePolicy = {
  maxFailuresPerHour: number;
  freeFailures: number;
  baseDelayMs: number;
  maxDelayMs: number;
  ipMaxFailures: number;
  ipWindowMs: number;
};

/** Delay required after `consecutiveFailures` failures, before the next attempt. */
export function progressiveDelayMs(consecutiveFailures: number, p: SignInThrottlePolicy): number {
  if (consecutiveFailures < p.freeFailures) return 0;
  const exponent = Math.min(consecutiveFailures - p.freeFailures, 30);
  return Math.min(p.baseDelayMs * 2 ** exponent, p.maxDelayMs);
}
