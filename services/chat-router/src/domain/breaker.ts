// A circuit breaker per upstream replica. Closed: requests flow; `failureThreshold` consecutive failures open it.
// Open: no requests for `cooldownMs`; then half-open: exactly one probe request is let through — its success closes
// the breaker, its failure opens it for another cooldown.

export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerOptions {
  failureThreshold: number;
  cooldownMs: number;
}

export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private opened = false;
  private probing = false;

  constructor(private readonly opts: BreakerOptions) {}

  /** The state at `now` (open turns half-open once the cooldown has passed). */
  state(now: number): BreakerState {
    if (!this.opened) return "closed";
    return now - this.openedAt >= this.opts.cooldownMs ? "half-open" : "open";
  }

  /** Whether a request may go to the replica now (without taking the half-open probe slot). */
  available(now: number): boolean {
    const s = this.state(now);
    return s === "closed" || (s === "half-open" && !this.probing);
  }

  /** Takes the right to send one request; false when the breaker is open or its half-open probe is out. */
  tryAcquire(now: number): boolean {
    const s = this.state(now);
    if (s === "closed") return true;
    if (s === "open" || this.probing) return false;
    this.probing = true;
    return true;
  }

  onSuccess(): void {
    this.failures = 0;
    this.opened = false;
    this.probing = false;
  }

  onFailure(now: number): void {
    this.failures++;
    if (this.probing || this.failures >= this.opts.failureThreshold) {
      this.opened = true;
      this.openedAt = now;
      this.failures = 0;
    }
    this.probing = false;
  }

  /** A request that ended without telling anything about the replica's health (e.g. the user stopped it). */
  onNeutral(): void {
    this.probing = false;
  }
}
