/**
 * The ledger as the rest of billing uses it: the store's single-statement operations plus metrics, hold deadlines
 * and the background jobs (sweeper, periodic trial balance). Handlers validate input and call this; so do the
 * user-event consumer and the benchmark.
 */
import type pg from "pg";
import type { OutboxEvent } from "@luna/kit";
import { INVARIANT_NAMES, checkInvariants } from "./data/invariants.js";
import type { LedgerStore, Outcome } from "./data/ledger-store.js";
import { InsufficientCreditsError } from "./domain/errors.js";
import type {
  CommitInput,
  CommitResult,
  GrantInput,
  GrantResult,
  Hold,
  InvariantReport,
  ReserveInput,
  ReserveResult,
} from "./domain/ledger.js";
import type { BillingMetrics } from "./metrics.js";

export interface LedgerOptions {
  holdDefaultTtlMs: number;
  holdMaxTtlMs: number;
  signupCredits: number;
}

export interface MinimalLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Idempotency key of the sign-up grant: one per account, whatever event delivered it. */
export const SIGNUP_GRANT_KEY = "signup";

export class Ledger {
  constructor(
    readonly store: LedgerStore,
    private readonly pool: pg.Pool,
    private readonly metrics: BillingMetrics,
    readonly options: LedgerOptions,
  ) {}

  /** The hold's lifetime: the requested ttl clamped to the configured maximum; unset (0) = the default. */
  holdTtl(requestedMs: number): number {
    if (requestedMs <= 0) return this.options.holdDefaultTtlMs;
    return Math.min(requestedMs, this.options.holdMaxTtlMs);
  }

  async reserve(input: ReserveInput): Promise<Outcome<ReserveResult>> {
    const end = this.metrics.reserveDuration.startTimer();
    try {
      const out = await this.store.reserve(input);
      if (out.replayed) this.metrics.idempotentReplays.inc({ operation: "reserve" });
      else this.metrics.reserved.inc(Number(out.result.amount));
      return out;
    } catch (err) {
      if (err instanceof InsufficientCreditsError) this.metrics.insufficientCredits.inc();
      throw err;
    } finally {
      end();
    }
  }

  async commit(input: CommitInput): Promise<Outcome<CommitResult>> {
    const out = await this.store.commit(input);
    if (out.replayed) {
      this.metrics.idempotentReplays.inc({ operation: "commit" });
    } else {
      this.metrics.charged.inc(Number(out.result.hold.charged));
      this.metrics.released.inc({ how: "commit" }, Number(out.result.hold.released));
    }
    return out;
  }

  async release(holdId: string): Promise<Outcome<Hold>> {
    const out = await this.store.release(holdId);
    if (out.replayed) this.metrics.idempotentReplays.inc({ operation: "release" });
    else this.metrics.released.inc({ how: "release" }, Number(out.result.released));
    return out;
  }

  /** `audit`: the admin grant's audit event, written with the grant (see LedgerStore.grant). */
  async grant(input: GrantInput, store: LedgerStore = this.store, audit?: (transferId: string) => OutboxEvent): Promise<Outcome<GrantResult>> {
    const out = await store.grant(input, audit);
    if (out.replayed) this.metrics.idempotentReplays.inc({ operation: "grant" });
    else this.metrics.granted.inc(Number(out.result.amount));
    return out;
  }

  /**
   * Opens the account of a new user and grants the sign-up credits, once per user. `store` may be bound to an open
   * transaction (the inbox's).
   */
  async openAccountWithSignupGrant(userId: string, store: LedgerStore = this.store): Promise<void> {
    await store.openAccount(userId);
    if (this.options.signupCredits > 0) {
      await this.grant({
        accountId: userId,
        amount: BigInt(this.options.signupCredits),
        reason: "Sign-up credits",
        idempotencyKey: SIGNUP_GRANT_KEY,
      }, store).catch((err: unknown) => {
        // A user deleted before their sign-up event was processed: nothing to grant.
        if ((err as { kind?: string }).kind === "failed_precondition") return;
        throw err;
      });
    }
  }

  async closeAccount(userId: string): Promise<Hold[]> {
    const released = await this.store.closeAccount(userId);
    for (const h of released) this.metrics.released.inc({ how: "close" }, Number(h.released));
    return released;
  }

  /** One sweeper pass: expires due holds (batch after batch while batches come back full). */
  async sweepExpiredHolds(batch: number): Promise<number> {
    let total = 0;
    for (;;) {
      const expired = await this.store.releaseExpiredHolds(batch);
      for (const h of expired) this.metrics.released.inc({ how: "expire" }, Number(h.released));
      total += expired.length;
      if (expired.length < batch) break;
    }
    const orphans = await this.store.releaseHoldsOfClosedAccounts(batch);
    for (const h of orphans) this.metrics.released.inc({ how: "close" }, Number(h.released));
    this.metrics.openHolds.set(await this.store.countOpenHolds());
    return total + orphans.length;
  }

  /** The trial balance; also updates the invariant metrics. */
  async checkInvariants(): Promise<InvariantReport> {
    let report: InvariantReport;
    try {
      report = await checkInvariants(this.pool);
    } catch (err) {
      this.metrics.invariantChecks.inc({ result: "error" });
      throw err;
    }
    this.metrics.invariantViolations.reset();
    const counts = new Map<string, number>();
    for (const v of report.violations) counts.set(v.invariant, (counts.get(v.invariant) ?? 0) + 1);
    for (const name of INVARIANT_NAMES) {
      this.metrics.invariantViolations.set({ invariant: name }, counts.get(name) ?? 0);
    }
    this.metrics.invariantChecks.inc({ result: report.ok ? "ok" : "violated" });
    return report;
  }
}

/** A background loop that runs `fn` every `intervalMs` until stopped; errors are logged, never fatal. */
export function startLoop(name: string, intervalMs: number, fn: () => Promise<unknown>, log: MinimalLog): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = (async () => {
      try {
        await fn();
      } catch (err) {
        log.error({ err, loop: name }, `${name} failed; retrying next round`);
      }
      if (!stopped) {
        timer = setTimeout(tick, intervalMs);
        timer.unref?.();
      }
    })();
  };
  timer = setTimeout(tick, intervalMs);
  timer.unref?.();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
