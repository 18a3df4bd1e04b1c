/**
 * One reply being generated: waits for a replica when its model scaled to zero (see upstream/wake.ts; the readers
 * get a `waiting` event every CHAT_WAITING_EVENT_INTERVAL meanwhile), calls the model (retrying once on another
 * replica if it fails before the first token),
 * relays every delta to the reply's readers as it arrives, checkpoints long replies, keeps the stream lease alive,
 * and at the end charges what was produced, stores the final message with its usage event, and tells the readers.
 */
import type { ReplyError, ReplyFinished } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { FinishReason } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import type { ChatMessage } from "../domain/prompt.js";
import { replyCost, type TokenPrices } from "../domain/pricing.js";
import { previewOf } from "../domain/validate.js";
import type { ChatStore, HoldInfo, MessageStatus } from "../data/store.js";
import { usageOutboxRow, type OutboxRow } from "../events/usage.js";
import type { LiveHub } from "../live/hub.js";
import { LiveReply, type ReplyEvent } from "../live/reply.js";
import type { ChatMetrics } from "../metrics.js";
import { chatRequestBody, isContextOverflow, isReplicaFault, UpstreamStream, type StreamOutcome, type UpstreamFailure } from "../upstream/client.js";
import type { Lease, ReplicaPool } from "../upstream/pool.js";
import type { WakeGate } from "../upstream/wake.js";
import type { BillingClient, ReplyHold } from "./billing.js";

/** ReplyError code of a reply whose model did not wake within CHAT_COLD_START_WAIT (the RPC ends UNAVAILABLE). */
export const WARM_UP_TIMEOUT = "warm_up_timeout";

/** Why a reply was stopped before the model ended it. */
export type StopReason = "cancelled" | "client_gone" | "shutdown" | "deadline";

export interface RunTimings {
  connectTimeoutMs: number;
  firstTokenTimeoutMs: number;
  idleTimeoutMs: number;
  maxReplyMs: number;
  checkpointIntervalMs: number;
  leaseTtlMs: number;
  leaseRenewIntervalMs: number;
  disconnectGraceMs: number;
  /** Longest wait for a replica of a model that scaled to zero (CHAT_COLD_START_WAIT). */
  coldStartWaitMs: number;
  /** How often a waiting reply repeats its `waiting` event (CHAT_WAITING_EVENT_INTERVAL). */
  waitingIntervalMs: number;
}

export interface RunDeps {
  store: ChatStore;
  pool: ReplicaPool;
  wake: WakeGate;
  billing: BillingClient;
  hub: LiveHub;
  metrics: ChatMetrics;
  timings: RunTimings;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
  /** Called once the reply is final and stored (titles, bookkeeping). */
  onFinal(run: ReplyRun, status: MessageStatus): void;
}

export interface RunPlan {
  userId: string;
  conversationId: string;
  modelId: string;
  userMessageId: string;
  assistantMessageId: string;
  messages: ChatMessage[];
  /** Our prompt token count (billed when the upstream reports none). */
  promptTokens: number;
  prices: TokenPrices;
  hold: ReplyHold;
  /** The concurrent-stream lease ("" when none). */
  leaseId: string;
  /** When the request arrived (performance.now()), for time to first token. */
  startedAt: number;
  /** When the credits were held (performance.now()), for the time-to-first-token phases. */
  heldAt: number;
  /** Sampling fields passed to the model as they are (OpenAI API: temperature, top_p, stop, seed). */
  sampling?: Record<string, unknown>;
  /**
   * A stateless reply (the OpenAI-compatible API): there is no message row, so no checkpoints; its end records only
   * the usage event (through this, instead of ChatStore.finishReply). Billed exactly like a stored reply.
   */
  stateless?: { recordUsage(event: OutboxRow | undefined): Promise<boolean> };
  /**
   * A stored reply's hold facts: its run's first write (checkpoint, heartbeat or final state) records them, so no
   * statement of their own is needed. Until then the row has no hold id; a crash in between leaves the hold to the
   * sweeper, which finds it by its reference (the message id).
   */
  holdFacts?: HoldInfo;
}

/** The settled result, as stored. */
export interface RunResult {
  status: Exclude<MessageStatus, "streaming">;
  content: string;
  creditsCharged: bigint;
  completionTokens: number;
  /** Whether the final message was stored (else the sweeper finishes it). */
  stored: boolean;
}

function finishReasonOf(upstream: string): FinishReason {
  return upstream === "length" ? FinishReason.LENGTH : FinishReason.STOP;
}

const FINISH_REASON_NAMES: Record<FinishReason, string> = {
  [FinishReason.UNSPECIFIED]: "",
  [FinishReason.STOP]: "stop",
  [FinishReason.LENGTH]: "length",
  [FinishReason.CANCELLED]: "cancelled",
  [FinishReason.ERROR]: "error",
};

export class ReplyRun {
  readonly reply: LiveReply;
  private stopReason: StopReason | undefined;
  private current: UpstreamStream | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private checkpointing = false;
  private leaseReleased = false;
  /** The placeholder row starts empty: a write before any text is a heartbeat. */
  private checkpointedLength = 0;
  /** The hold facts not yet on the row (plan.holdFacts until a write carrying them succeeded). */
  private holdToRecord: HoldInfo | undefined;
  private firstTokenSeen = false;
  /** Aborts a wait for a replica (stop, client gone, shutdown). */
  private readonly waitAbort = new AbortController();
  /** The wait for a replica ran out (CHAT_COLD_START_WAIT). */
  private warmUpTimedOut = false;
  /** Counted as `waited` in the demand metric (so not also as `started`). */
  private countedWaited = false;
  /** Someone follows the reply from another replica: it is not stopped when local readers go away. */
  private followedRemotely = false;
  result: RunResult | undefined;
  /** Resolves once the reply is final and stored. */
  readonly done: Promise<void>;

  constructor(private readonly deps: RunDeps, readonly plan: RunPlan) {
    this.reply = new LiveReply(plan.assistantMessageId);
    this.reply.onReadersGone = () => this.onReadersGone();
    this.reply.onReaderAdded = () => this.clearGrace();
    this.reply.onFollowed = () => {
      this.followedRemotely = true;
      this.clearGrace();
    };
    this.holdToRecord = plan.holdFacts;
    let resolve!: () => void;
    this.done = new Promise((r) => (resolve = r));
    queueMicrotask(() => void this.run().finally(resolve));
  }

  /** Stops the reply (the partial text is kept and billed). */
  stop(reason: StopReason): void {
    if (this.stopReason || this.reply.final) return;
    this.stopReason = reason;
    this.waitAbort.abort();
    this.current?.abort();
  }

  private onReadersGone(): void {
    if (this.reply.final || this.followedRemotely) return;
    const grace = this.deps.timings.disconnectGraceMs;
    if (grace <= 0) {
      this.stop("client_gone");
      return;
    }
    this.clearGrace();
    this.graceTimer = setTimeout(() => {
      if (this.reply.readerCount === 0 && !this.followedRemotely) this.stop("client_gone");
    }, grace);
    this.graceTimer.unref();
  }

  private clearGrace(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
  }

  private async run(): Promise<void> {
    const { deps, plan } = this;
    const t = deps.timings;
    deps.metrics.activeReplies.inc();
    deps.hub.register(this.reply, () => this.stop("cancelled"));
    this.checkpointTimer = setInterval(() => this.checkpoint(), t.checkpointIntervalMs);
    this.checkpointTimer.unref();
    if (plan.leaseId) {
      this.leaseTimer = setInterval(() => void deps.billing.renewStreamLease(plan.leaseId, t.leaseTtlMs), t.leaseRenewIntervalMs);
      this.leaseTimer.unref();
    }
    try {
      const outcome = await this.generate();
      await this.finish(outcome);
    } catch (err) {
      deps.log.error({ err, messageId: plan.assistantMessageId }, "reply failed unexpectedly");
      await this.finish({ outcome: { kind: "failed", failure: { kind: "protocol", message: "internal error" } }, unavailable: false }).catch((e: unknown) =>
        deps.log.error({ err: e, messageId: plan.assistantMessageId }, "could not store the failed reply"));
    } finally {
      clearInterval(this.checkpointTimer);
      clearInterval(this.leaseTimer);
      clearTimeout(this.deadlineTimer);
      this.clearGrace();
      deps.hub.unregister(plan.assistantMessageId);
      if (!this.leaseReleased) deps.billing.releaseStreamLease(plan.leaseId);
      deps.metrics.activeReplies.dec();
    }
  }

  /** Whether the model may be at zero replicas on purpose (then a missing replica is waited for, not an error). */
  private scalesToZero(): boolean {
    const m = this.deps.pool.model(this.plan.modelId);
    return m !== undefined && (m.scaleToZero || m.status === ModelStatus.STANDBY);
  }

  /**
   * Waits for a ready replica of a model that scaled to zero, telling the readers every `waitingIntervalMs`;
   * "ready" at once when one is ready (or the model never scales to zero).
   */
  private async waitForReplica(): Promise<"ready" | "stopped" | "timeout"> {
    const { deps, plan } = this;
    if (!this.scalesToZero() || (await deps.pool.hasReady(plan.modelId))) return "ready";
    const model = deps.pool.model(plan.modelId);
    const since = Date.now();
    const state = { reason: "warming_up", modelId: plan.modelId, since, expectedMs: (model?.coldStartSeconds ?? 0) * 1000 };
    let ticker: NodeJS.Timeout | undefined;
    if (!this.countedWaited) deps.metrics.modelRequests.inc({ model: plan.modelId, outcome: "waited" });
    this.countedWaited = true;
    const result = await deps.wake.wait(plan.modelId, {
      signal: this.waitAbort.signal,
      timeoutMs: deps.timings.coldStartWaitMs,
      onWaiting: () => {
        this.reply.setWaiting(state);
        ticker = setInterval(() => this.reply.setWaiting(state), deps.timings.waitingIntervalMs);
        ticker.unref();
      },
    });
    clearInterval(ticker);
    this.reply.setWaiting(undefined);
    deps.metrics.wakeWaitSeconds.observe({ model: plan.modelId, outcome: result }, (Date.now() - since) / 1000);
    if (result === "ready") return "ready";
    if (result === "timeout") {
      deps.metrics.modelRequests.inc({ model: plan.modelId, outcome: "refused" });
      return "timeout";
    }
    return "stopped";
  }

  /**
   * Waits for a replica if the model scaled to zero, then calls it. A scale-to-zero model whose replicas all failed
   * before the first token (the pool scaled in under the catalog's feet) is waited for once more.
   */
  private async generate(): Promise<{ outcome: StreamOutcome; unavailable: boolean }> {
    const t = this.deps.timings;
    const startDeadline = () => {
      // The reply's time limit counts from when it can start, not from the wait.
      if (this.deadlineTimer) return;
      this.deadlineTimer = setTimeout(() => this.stop("deadline"), t.maxReplyMs);
      this.deadlineTimer.unref();
    };
    let waited = false;
    for (;;) {
      const w = await this.waitForReplica();
      if (w === "stopped" || this.stopReason) return { outcome: { kind: "aborted" }, unavailable: false };
      if (w === "timeout") {
        this.warmUpTimedOut = true;
        const secs = Math.round(t.coldStartWaitMs / 1000);
        return { outcome: { kind: "failed", failure: { kind: "network", message: `${this.plan.modelId} did not warm up within ${secs} s` } }, unavailable: true };
      }
      startDeadline();
      const r = await this.attempts(!waited);
      if (r.unavailable && !waited && !this.firstTokenSeen && !this.stopReason && this.scalesToZero()) {
        this.deps.pool.markAsleep(this.plan.modelId);
        waited = true;
        continue;
      }
      return r;
    }
  }

  /** Calls the model; a failure before the first token is retried once on another replica. */
  private async attempts(countStart: boolean): Promise<{ outcome: StreamOutcome; unavailable: boolean }> {
    const { deps, plan } = this;
    const t = deps.timings;
    const tried = new Set<Lease["replica"]>();
    let body: string | undefined;
    let bodyModel = "";
    let last: StreamOutcome | undefined;
    for (let attempt = 0; attempt < 2; attempt++) {
      if (this.stopReason) return { outcome: { kind: "aborted" }, unavailable: false };
      const lease = await deps.pool.pick(plan.modelId, plan.conversationId, tried);
      if (!lease) {
        if (attempt === 0 && !this.scalesToZero()) deps.metrics.modelRequests.inc({ model: plan.modelId, outcome: "refused" });
        return { outcome: last ?? { kind: "failed", failure: { kind: "network", message: `no replica of ${plan.modelId} is available` } }, unavailable: true };
      }
      if (attempt === 0 && countStart && !this.countedWaited) deps.metrics.modelRequests.inc({ model: plan.modelId, outcome: "started" });
      tried.add(lease.replica);
      if (attempt > 0) deps.metrics.retries.inc({ model: plan.modelId });
      if (body === undefined || bodyModel !== lease.model) {
        body = chatRequestBody(lease.model, plan.messages, plan.hold.outputTokens, plan.sampling);
        bodyModel = lease.model;
      }
      const stream = new UpstreamStream({
        endpoint: lease.endpoint,
        body,
        connectTimeoutMs: t.connectTimeoutMs,
        firstTokenTimeoutMs: t.firstTokenTimeoutMs,
        idleTimeoutMs: t.idleTimeoutMs,
        onDelta: (text) => this.onDelta(text),
      });
      this.current = stream;
      // A stop that came while picking aborts at once.
      if (this.stopReason) stream.abort();
      else stream.start();
      const outcome = await stream.done;
      this.current = undefined;
      last = outcome;
      if (outcome.kind === "failed") {
        deps.metrics.upstreamFailures.inc({ model: plan.modelId, kind: outcome.failure.kind });
        const fault = isReplicaFault(outcome.failure);
        deps.pool.release(lease, fault ? "failure" : "neutral");
        deps.log.warn({ replica: lease.replica.baseUrl, failure: outcome.failure, messageId: plan.assistantMessageId, afterFirstToken: stream.gotContent },
          "upstream request failed");
        if (stream.gotContent || !fault || this.stopReason) return { outcome, unavailable: false };
        continue;
      }
      deps.pool.release(lease, outcome.kind === "finished" ? "success" : "neutral");
      return { outcome, unavailable: false };
    }
    return { outcome: last!, unavailable: !this.firstTokenSeen };
  }

  private onDelta(text: string): void {
    if (!this.firstTokenSeen) {
      this.firstTokenSeen = true;
      const now = performance.now();
      const m = this.deps.metrics;
      m.ttft.observe({ model: this.plan.modelId }, (now - this.plan.startedAt) / 1000);
      const respondedAt = this.current?.respondedAt ?? now;
      m.ttftPhase.observe({ phase: "upstream_headers" }, (respondedAt - this.plan.heldAt) / 1000);
      m.ttftPhase.observe({ phase: "upstream_first_token" }, (now - respondedAt) / 1000);
    }
    this.reply.push(text);
  }

  /** Saves the text so far; at most one write in flight, skipped when nothing changed since the last one. */
  private checkpoint(): void {
    if (this.checkpointing || this.reply.final || this.plan.stateless) return;
    // The write also serves as the heartbeat the sweeper watches, so it happens even without new text.
    this.checkpointing = true;
    const length = this.reply.length;
    const text = length === this.checkpointedLength ? undefined : this.reply.text();
    const hold = this.holdToRecord;
    const write = text === undefined
      ? this.deps.store.checkpointHeartbeat(this.plan.assistantMessageId, hold)
      : this.deps.store.checkpoint(this.plan.assistantMessageId, text, this.reply.deltas, hold);
    write
      .then(() => {
        this.checkpointedLength = length;
        if (hold) this.holdToRecord = undefined;
      })
      .catch((err: unknown) => this.deps.log.warn({ err, messageId: this.plan.assistantMessageId }, "checkpoint failed"))
      .finally(() => {
        this.checkpointing = false;
      });
  }

  /** Charges, stores and announces the end of the reply. */
  private async finish({ outcome, unavailable }: { outcome: StreamOutcome; unavailable: boolean }): Promise<void> {
    const { deps, plan, reply } = this;
    const content = reply.text();
    const produced = reply.deltas > 0;
    const usage = outcome.kind === "finished" ? outcome.usage : undefined;
    const completionTokens = usage?.completionTokens ?? reply.deltas;
    const promptTokens = usage?.promptTokens ?? (produced ? plan.promptTokens : 0);

    let status: RunResult["status"];
    let finishReason: FinishReason;
    let errorCode = "";
    let errorMessage = "";
    if (outcome.kind === "finished") {
      status = "complete";
      finishReason = finishReasonOf(outcome.finishReason);
    } else if (outcome.kind === "aborted" && (this.stopReason === "cancelled" || this.stopReason === "client_gone")) {
      status = "stopped";
      finishReason = FinishReason.CANCELLED;
    } else {
      status = "failed";
      finishReason = FinishReason.ERROR;
      ({ errorCode, errorMessage } = this.describeFailure(outcome, unavailable));
    }

    // Charge what was produced (nothing when the model produced nothing), never more than the hold. Billing frees
    // the stream slot with the settlement (release_lease_id), before the client hears the end, so its next message
    // is never refused for this slot.
    const { hold } = plan;
    let charged = 0n;
    let leaseSettled = false;
    if (hold.holdId) {
      const cost = produced || usage ? replyCost(plan.prices, promptTokens, completionTokens) : 0n;
      const amount = cost > hold.amount ? hold.amount : cost;
      if (amount > 0n) {
        const h = await deps.billing.commit(hold.holdId, amount, { model: plan.modelId, inputTokens: promptTokens, outputTokens: completionTokens }, plan.leaseId);
        charged = h?.charged ?? 0n;
        leaseSettled = h !== undefined;
      } else {
        leaseSettled = (await deps.billing.release(hold.holdId, plan.leaseId)) !== undefined;
      }
    }
    const balanceAfter = hold.holdId ? hold.available + hold.amount - charged : 0n;

    // No hold to settle (a free model), or the settle failed: the slot is freed on its own while the final state is
    // stored.
    this.leaseReleased = true;
    const leaseFreed = leaseSettled ? undefined : deps.billing.releaseStreamLeaseNow(plan.leaseId);
    const usageEvent = charged > 0n || completionTokens > 0
      ? usageOutboxRow({ userId: plan.userId, modelId: plan.modelId, promptTokens, completionTokens, creditsCharged: charged, messageId: plan.assistantMessageId })
      : undefined;
    const stored = await (plan.stateless ? plan.stateless.recordUsage(usageEvent) : deps.store.finishReply(
      {
        messageId: plan.assistantMessageId,
        conversationId: plan.conversationId,
        content,
        status,
        finishReason: FINISH_REASON_NAMES[finishReason],
        promptTokens,
        completionTokens,
        tokenCount: completionTokens,
        creditsCharged: charged,
        balanceAfter,
        errorCode,
        errorMessage,
        preview: content ? previewOf(content) : "",
      },
      usageEvent,
      // Still unrecorded (a short reply; or a write carrying them is in flight: the same values twice is harmless).
      this.holdToRecord,
    )).catch((err: unknown) => {
      deps.log.error({ err, messageId: plan.assistantMessageId }, "could not store the final reply; the sweeper will finish it");
      return false;
    });

    deps.metrics.replies.inc({ model: plan.modelId, outcome: status });
    deps.metrics.tokens.inc({ model: plan.modelId }, completionTokens);
    if (charged > 0n) deps.metrics.creditsCharged.inc({ model: plan.modelId }, Number(charged));
    this.result = { status, content, creditsCharged: charged, completionTokens, stored: stored !== false };

    let event: ReplyEvent;
    if (status === "failed") {
      const value: ReplyError = {
        $typeName: "luna.chat.v1.ReplyError", code: errorCode, message: errorMessage,
        promptTokens: BigInt(promptTokens), completionTokens: BigInt(completionTokens), creditsCharged: charged, balanceAfter,
      };
      event = { case: "error", value };
    } else {
      const value: ReplyFinished = {
        $typeName: "luna.chat.v1.ReplyFinished", finishReason,
        promptTokens: BigInt(promptTokens), completionTokens: BigInt(completionTokens), creditsCharged: charged, balanceAfter,
      };
      event = { case: "finished", value };
    }
    await leaseFreed;
    reply.finish(event);
    deps.onFinal(this, status);
  }

  private describeFailure(outcome: StreamOutcome, unavailable: boolean): { errorCode: string; errorMessage: string } {
    if (outcome.kind === "aborted") {
      if (this.stopReason === "deadline") return { errorCode: "upstream_timeout", errorMessage: "the reply took longer than allowed" };
      return { errorCode: "interrupted", errorMessage: "the service stopped while the reply was generated" };
    }
    if (outcome.kind !== "failed") return { errorCode: "internal", errorMessage: "internal error" };
    const f: UpstreamFailure = outcome.failure;
    if (this.warmUpTimedOut) return { errorCode: WARM_UP_TIMEOUT, errorMessage: `the model is still warming up: ${f.message}; try again later` };
    if (isContextOverflow(f)) return { errorCode: "context_length_exceeded", errorMessage: f.message };
    if (unavailable && !this.firstTokenSeen) return { errorCode: "upstream_unavailable", errorMessage: `the model is unavailable: ${f.message}` };
    if (f.kind === "timeout") return { errorCode: "upstream_timeout", errorMessage: f.message };
    return { errorCode: "upstream_error", errorMessage: `the model failed: ${f.message}` };
  }
}
