/**
 * chat-router's calls to billing (CreditsService and LimitsService, role internal): the reserve that clamps the
 * reply to what the user can afford, commit/release with retries (money must not be dropped on a blip), and the
 * per-user rate limit and concurrent-stream lease (one Admit call; the lease is freed by the commit/release of the
 * reply's hold, or by ReleaseLease when there is no hold to settle).
 */
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { durationFromMs, timestampFromDate, type Duration } from "@bufbuild/protobuf/wkt";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { HoldStatus, type Hold } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { AdmitRefusal, ConcurrencyKind, LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { aborted, notEnoughCredits, resourceExhausted, unavailable, type Principal } from "@luna/kit";
import { affordableOutputTokens, availableFromReserveError, replyCost, type TokenPrices } from "../domain/pricing.js";

export interface BillingLogger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A hold placed for a reply. */
export interface ReplyHold {
  /** Empty when the reply costs nothing (free model): no hold was needed. */
  holdId: string;
  amount: bigint;
  /** Available credits right after the hold was placed. */
  available: bigint;
  /** The reply's output budget after clamping to the credits. */
  outputTokens: number;
}

export interface ReserveReplyInput {
  userId: string;
  /** The assistant message id: hold reference and idempotency key. */
  messageId: string;
  prices: TokenPrices;
  promptTokens: number;
  outputTokens: number;
  minOutputTokens: number;
  ttlMs: number;
  /** Default: the message id (a retry of the same message finds the same hold). */
  idempotencyKey?: string;
}

const RESERVE_ATTEMPTS = 3;
/** Backoff of commit/release retries (money calls must not be lost to a blip). */
const SETTLE_BACKOFF_MS = [100, 500, 2000];

function isRetryable(err: unknown): boolean {
  const code = err instanceof ConnectError ? err.code : Code.Unknown;
  return code === Code.Unavailable || code === Code.DeadlineExceeded || code === Code.Unknown || code === Code.Internal || code === Code.Aborted;
}

/** The limits' role of a caller (billing knows "user" and "admin"). */
const roleOf = (p: Principal) => (p.role === "admin" ? "admin" : "user");

/** The refusals of admission, worded alike whichever billing call refused. */
function rateLimited(limit: number, retryAfter: Duration | undefined): ConnectError {
  const s = retryAfter ? Math.max(1, Math.ceil(Number(retryAfter.seconds) + retryAfter.nanos / 1e9)) : 1;
  return resourceExhausted(`rate limit: at most ${limit} chat requests per minute; retry in ${s}s`);
}

function tooManyReplies(limit: number): ConnectError {
  return resourceExhausted(`too many replies in progress: at most ${limit} at a time`);
}

function billingDown(err: unknown): ConnectError {
  return unavailable(`billing is unavailable, try again (${err instanceof ConnectError ? err.rawMessage : String(err)})`);
}

/**
 * After a billing answered Admit (or ListHolds) with UNIMPLEMENTED, how long the older behaviour is used before the
 * call is tried again.
 */
const ADMIT_RECHECK_MS = 60_000;

export class BillingClient {
  private admitUnsupportedUntil = 0;
  /** After ListHolds answered UNIMPLEMENTED: until when it is not asked again, and whether that was logged. */
  private listHoldsUnsupportedUntil = 0;
  private listHoldsUnsupportedLogged = false;
  private readonly credits: Client<typeof CreditsService>;
  private readonly limits: Client<typeof LimitsService>;

  constructor(transport: Transport, private readonly log: BillingLogger) {
    this.credits = createClient(CreditsService, transport);
    this.limits = createClient(LimitsService, transport);
  }

  /**
   * Counts one chat request against the per-minute limit and takes a concurrent-stream slot, in one call: both or
   * neither (a refused request spends nothing). RESOURCE_EXHAUSTED when the user is over the rate limit (that wins
   * when both refuse) or has the most replies in progress. Returns the lease id (a placeholder that renews and frees
   * as a no-op when billing's Redis is down).
   */
  async admit(p: Principal, ttlMs: number): Promise<string> {
    if (Date.now() < this.admitUnsupportedUntil) return await this.admitInTwoCalls(p, ttlMs);
    let r;
    try {
      r = await this.limits.admit({
        userId: p.userId, role: roleOf(p), feature: "chat", kind: ConcurrencyKind.CHAT_STREAM, ttl: durationFromMs(ttlMs),
      });
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented) {
        // A billing of the version before Admit (services are released independently): the two calls it has.
        this.admitUnsupportedUntil = Date.now() + ADMIT_RECHECK_MS;
        this.log.warn({ err }, "billing has no LimitsService.Admit yet; using CheckRateLimit + AcquireLease");
        return await this.admitInTwoCalls(p, ttlMs);
      }
      throw billingDown(err);
    }
    if (r.refused === AdmitRefusal.RATE) throw rateLimited(r.rateLimit, r.retryAfter);
    if (!r.admitted) throw tooManyReplies(r.leaseLimit);
    return r.leaseId;
  }

  /** Admit as a billing without it does: the rate check and the lease at once (a refused lease still counts the rate there). */
  private async admitInTwoCalls(p: Principal, ttlMs: number): Promise<string> {
    const role = roleOf(p);
    const [rate, lease] = await Promise.allSettled([
      this.limits.checkRateLimit({ userId: p.userId, role, feature: "chat" }),
      this.limits.acquireLease({ userId: p.userId, role, kind: ConcurrencyKind.CHAT_STREAM, ttl: durationFromMs(ttlMs) }),
    ]);
    const leaseId = lease.status === "fulfilled" && lease.value.acquired ? lease.value.leaseId : "";
    try {
      if (rate.status === "rejected") throw billingDown(rate.reason);
      if (lease.status === "rejected") throw billingDown(lease.reason);
      if (!rate.value.allowed) throw rateLimited(rate.value.limit, rate.value.retryAfter);
      if (!lease.value.acquired) throw tooManyReplies(lease.value.limit);
      return leaseId;
    } catch (err) {
      this.releaseStreamLease(leaseId);
      throw err;
    }
  }

  async renewStreamLease(leaseId: string, ttlMs: number): Promise<void> {
    if (!leaseId) return;
    try {
      const r = await this.limits.renewLease({ leaseId, ttl: durationFromMs(ttlMs) });
      if (!r.renewed && !r.degraded) this.log.warn({ leaseId }, "stream lease had expired; the slot may have been taken");
    } catch (err) {
      this.log.warn({ err, leaseId }, "stream lease renewal failed");
    }
  }

  /** Frees the slot and waits for it (failures are logged: the lease expires by itself). */
  async releaseStreamLeaseNow(leaseId: string): Promise<void> {
    if (!leaseId) return;
    await this.limits.releaseLease({ leaseId }).catch((err: unknown) => this.log.warn({ err, leaseId }, "stream lease release failed (it expires by itself)"));
  }

  releaseStreamLease(leaseId: string): void {
    if (!leaseId) return;
    this.limits.releaseLease({ leaseId }).catch((err: unknown) => this.log.warn({ err, leaseId }, "stream lease release failed (it expires by itself)"));
  }

  /**
   * Holds the worst-case cost of a reply. When the credits fall short, lowers the output budget to what is available
   * and tries again; RESOURCE_EXHAUSTED (stating the available credits) when not even `minOutputTokens` fit.
   */
  async reserveReply(i: ReserveReplyInput): Promise<ReplyHold> {
    let outputTokens = i.outputTokens;
    for (let attempt = 0; attempt < RESERVE_ATTEMPTS; attempt++) {
      const amount = replyCost(i.prices, i.promptTokens, outputTokens);
      if (amount === 0n) return { holdId: "", amount: 0n, available: 0n, outputTokens };
      let replayed = false;
      try {
        const r = await this.credits.reserve(
          { accountId: i.userId, amount, reason: "chat", reference: i.messageId, idempotencyKey: i.idempotencyKey ?? i.messageId, ttl: durationFromMs(i.ttlMs) },
          { onHeader: (h) => { replayed = h.get("idempotent-replayed") === "true"; } },
        );
        if (replayed) await this.assertOpen(r.holdId);
        return { holdId: r.holdId, amount: r.amount, available: r.available, outputTokens };
      } catch (err) {
        if (!(err instanceof ConnectError) || err.code !== Code.ResourceExhausted) {
          if (err instanceof ConnectError && (err.code === Code.FailedPrecondition || err.code === Code.NotFound || err.code === Code.Aborted)) throw err;
          throw billingDown(err);
        }
        const available = availableFromReserveError(err.rawMessage) ?? 0n;
        const afford = affordableOutputTokens(i.prices, available, i.promptTokens, outputTokens);
        if (afford < i.minOutputTokens) {
          const need = replyCost(i.prices, i.promptTokens, i.minOutputTokens);
          throw notEnoughCredits(`a reply (${i.promptTokens} prompt tokens and at least ${i.minOutputTokens} reply tokens)`, need, available);
        }
        outputTokens = afford;
      }
    }
    throw resourceExhausted("not enough credits: the balance kept changing; try again");
  }

  /**
   * A replayed reserve is the hold of an earlier attempt of the same message; it is only usable while open (an
   * attempt that was rolled back released it).
   */
  private async assertOpen(holdId: string): Promise<void> {
    const h = await this.credits.getHold({ holdId });
    if (h.hold?.status !== HoldStatus.OPEN) {
      throw aborted("this message was already attempted and its credits released; send it again with a new client_message_id");
    }
  }

  /**
   * Charges `amount` of the hold (≤ it) and releases the rest; retried on transient failures. Billing frees
   * `releaseLeaseId` (a stream lease) with it; undefined when the commit failed (the lease is then still held).
   */
  async commit(holdId: string, amount: bigint, usage: { model: string; inputTokens: number; outputTokens: number }, releaseLeaseId = ""): Promise<Hold | undefined> {
    return await this.settle("commit", holdId, async () => {
      const r = await this.credits.commit({
        holdId, amount, releaseLeaseId,
        usage: { model: usage.model, feature: "chat", inputTokens: BigInt(usage.inputTokens), outputTokens: BigInt(usage.outputTokens), images: 0 },
      });
      // A billing that predates release_lease_id ignored it: free the slot before the client hears the end, as it did.
      if (!r.leaseReleased) await this.releaseStreamLeaseNow(releaseLeaseId);
      return r.hold;
    });
  }

  /** Releases the hold (and, in billing, frees `releaseLeaseId`); retried as commit. */
  async release(holdId: string, releaseLeaseId = ""): Promise<Hold | undefined> {
    return await this.settle("release", holdId, async () => {
      const r = await this.credits.release({ holdId, releaseLeaseId });
      // A billing that predates release_lease_id ignored it: free the slot before the client hears the end, as it did.
      if (!r.leaseReleased) await this.releaseStreamLeaseNow(releaseLeaseId);
      return r.hold;
    });
  }

  async getHold(holdId: string): Promise<Hold | undefined> {
    return (await this.credits.getHold({ holdId })).hold;
  }

  /**
   * The open chat holds (oldest first), optionally of one message; `createdBefore` leaves out holds of requests that
   * may still be starting. For the sweeper: a hold whose id never reached its message (a crash between the reserve
   * and the write) is found by its reference, the message id.
   */
  async openHolds(q: { reference?: string; createdBefore?: Date }): Promise<Hold[]> {
    const out: Hold[] = [];
    let pageToken = "";
    do {
      const r = await this.credits.listOpenHolds({
        reason: "chat", reference: q.reference ?? "", createdBefore: q.createdBefore ? timestampFromDate(q.createdBefore) : undefined, pageSize: 500, pageToken,
      });
      out.push(...r.holds);
      pageToken = r.nextPageToken;
    } while (pageToken !== "");
    return out;
  }

  /**
   * Every chat hold of one message, whatever its status, newest first; undefined from a billing that predates
   * ListHolds (UNIMPLEMENTED, logged once; services are released independently). For the sweeper: a reply whose
   * replica died after billing's Commit and before storing the final state has a committed hold its row never named.
   */
  async holdsOf(reference: string): Promise<Hold[] | undefined> {
    if (Date.now() < this.listHoldsUnsupportedUntil) return undefined;
    const out: Hold[] = [];
    let pageToken = "";
    try {
      do {
        const r = await this.credits.listHolds({ reason: "chat", reference, pageSize: 100, pageToken });
        out.push(...r.holds);
        pageToken = r.nextPageToken;
      } while (pageToken !== "");
    } catch (err) {
      if (!(err instanceof ConnectError) || err.code !== Code.Unimplemented) throw err;
      this.listHoldsUnsupportedUntil = Date.now() + ADMIT_RECHECK_MS;
      if (!this.listHoldsUnsupportedLogged) {
        this.listHoldsUnsupportedLogged = true;
        this.log.warn({ err }, "billing has no CreditsService.ListHolds yet; a reply whose hold was committed before its replica died is finished without its charge");
      }
      return undefined;
    }
    return out;
  }

  private async settle(op: string, holdId: string, fn: () => Promise<Hold | undefined>): Promise<Hold | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isRetryable(err) || attempt >= SETTLE_BACKOFF_MS.length) {
          // The hold stays open and expires (released) at its deadline: the user is never charged twice.
          this.log.error({ err, holdId, op }, `billing ${op} failed; the hold will expire`);
          return undefined;
        }
        await new Promise((r) => setTimeout(r, SETTLE_BACKOFF_MS[attempt]));
      }
    }
  }
}

export { replyCost };
