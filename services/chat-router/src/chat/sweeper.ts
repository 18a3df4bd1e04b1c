/**
 * Finishes replies whose replica died mid-stream: a streaming reply whose checkpoint heartbeat is older than
 * CHAT_STALE_STREAM_AFTER is claimed, billed for what its last checkpoint holds (or for what an earlier commit
 * already charged), marked failed ("interrupted") and its usage event emitted — exactly like a reply that failed
 * after its first token.
 *
 * The hold id reaches its message with the reply run's first write after the reserve (a checkpoint or heartbeat,
 * CHAT_CHECKPOINT_INTERVAL after the start, or the final state of a shorter reply; no statement of its own), and a
 * speculative hold may be placed before the message is even stored; a crash in between leaves an open hold that no
 * record names. Billing is asked for those by their reference (the message id): an orphaned reply without a hold id
 * settles the hold placed for it, and open chat holds older than CHAT_ORPHAN_HOLD_GRACE whose message is gone,
 * finished, or names another hold are released, instead of waiting for their deadline (CHAT_HOLD_TTL). A short
 * reply whose replica died after billing's Commit and before its final state (the write that records the hold) has
 * no open hold left: its committed hold is found by the message id too (ListHolds), and the reply is finished with
 * that charge and its usage event. Its balance_after stays 0 (unknown: the available credits after the reserve were
 * recorded by the write that never happened).
 */
import { HoldStatus, type Hold } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { isUuid, type CatalogCache } from "@luna/kit";
import { replyCost } from "../domain/pricing.js";
import { previewOf } from "../domain/validate.js";
import type { ChatStore, MessageRow } from "../data/store.js";
import { usageOutboxRow } from "../events/usage.js";
import type { BillingClient } from "./billing.js";

export interface SweeperDeps {
  store: ChatStore;
  billing: BillingClient;
  catalog: Pick<CatalogCache, "getModel">;
  staleMs: number;
  /** Open holds younger than this are left alone by the hold sweep (their request may still be starting). */
  orphanHoldGraceMs: number;
  /** Replies this process streams (never orphans, whatever their heartbeat says). */
  localIds(): string[];
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

const BATCH = 50;

/** One sweep; returns how many replies it finished. */
export async function sweepOrphanedReplies(deps: SweeperDeps): Promise<number> {
  // Replies of the OpenAI-compatible API have no message row (and ids that are no UUIDs): nothing to skip there.
  const rows = await deps.store.claimStale(deps.staleMs, BATCH, deps.localIds().filter(isUuid));
  let n = 0;
  for (const row of rows) {
    try {
      if (await finishOrphan(deps, row)) n++;
    } catch (err) {
      deps.log.error({ err, messageId: row.id }, "could not finish an orphaned reply; retrying next sweep");
    }
  }
  if (n > 0) deps.log.info({ replies: n }, "finished replies whose replica stopped");
  const released = await releaseOrphanedHolds(deps).catch((err: unknown) => {
    deps.log.warn({ err }, "could not look for orphaned holds; retrying next sweep");
    return 0;
  });
  if (released > 0) deps.log.info({ holds: released }, "released chat holds that no reply uses");
  return n;
}

/**
 * Releases open chat holds no reply will settle: older than the grace, and whose message does not exist (the
 * request died before storing it, or it was undone or deleted), is no longer streaming, or names another hold (a
 * speculative hold that was neither used nor released). Holds of streaming replies without a hold id are left to
 * the stale-reply sweep, which settles them (see finishOrphan). Returns how many it released.
 */
export async function releaseOrphanedHolds(deps: SweeperDeps): Promise<number> {
  const holds = (await deps.billing.openHolds({ createdBefore: new Date(Date.now() - deps.orphanHoldGraceMs) }))
    .filter((h) => isUuid(h.reference));
  if (holds.length === 0) return 0;
  const local = new Set(deps.localIds());
  const states = await deps.store.holdStates([...new Set(holds.map((h) => h.reference))]);
  let n = 0;
  for (const h of holds) {
    if (local.has(h.reference)) continue;
    const m = states.get(h.reference);
    const orphaned = !m || m.status !== "streaming" || (m.holdId !== null && m.holdId !== h.id);
    if (!orphaned) continue;
    const r = await deps.billing.release(h.id);
    if (r && r.status !== HoldStatus.OPEN) n++;
  }
  return n;
}

/**
 * The hold of an orphaned reply whose hold id was never recorded: the largest open hold placed for the message (the
 * one its run used; the others are released), or else the committed one — the run committed it and died before
 * storing the final state (at most one: a speculative hold is either released or is the one the reply uses).
 * Undefined when there is neither, or when billing predates ListHolds (then the reply is finished without a charge,
 * as before it existed; the ledger's charge stands).
 */
async function adoptHold(deps: SweeperDeps, messageId: string): Promise<Hold | undefined> {
  const holds = (await deps.billing.openHolds({ reference: messageId })).sort((a, b) => (a.amount < b.amount ? 1 : a.amount > b.amount ? -1 : 0));
  for (const extra of holds.slice(1)) await deps.billing.release(extra.id);
  if (holds[0]) return holds[0];
  return (await deps.billing.holdsOf(messageId))?.find((h) => h.status === HoldStatus.COMMITTED);
}

async function finishOrphan(deps: SweeperDeps, row: MessageRow): Promise<boolean> {
  const owner = await deps.store.conversationOwner(row.conversationId);
  if (!owner) return false;
  const completionTokens = row.completionTokens;
  const promptTokens = completionTokens > 0 ? row.promptTokens : 0;
  let charged = 0n;
  const holdId = row.holdId ?? (await adoptHold(deps, row.id))?.id;
  if (holdId) {
    const hold = await deps.billing.getHold(holdId);
    if (hold?.status === HoldStatus.COMMITTED) {
      charged = hold.charged;
    } else if (hold?.status === HoldStatus.OPEN) {
      const model = deps.catalog.getModel(row.modelId);
      const cost = model && completionTokens > 0
        ? replyCost({ inputPer1k: model.prices?.inputPer1kTokens ?? 0n, outputPer1k: model.prices?.outputPer1kTokens ?? 0n }, promptTokens, completionTokens)
        : 0n;
      const amount = cost > hold.amount ? hold.amount : cost;
      if (amount > 0n) {
        charged = (await deps.billing.commit(holdId, amount, { model: row.modelId, inputTokens: promptTokens, outputTokens: completionTokens }))?.charged ?? 0n;
      } else {
        await deps.billing.release(holdId);
      }
    }
  }
  const balanceAfter = row.holdId ? row.availableAfterReserve + row.creditsHeld - charged : 0n;
  const stored = await deps.store.finishReply(
    {
      messageId: row.id,
      conversationId: row.conversationId,
      content: row.content,
      status: "failed",
      finishReason: "error",
      promptTokens,
      completionTokens,
      tokenCount: completionTokens,
      creditsCharged: charged,
      balanceAfter,
      errorCode: "interrupted",
      errorMessage: "the reply was interrupted (its server stopped); the text produced until then is kept",
      preview: row.content ? previewOf(row.content) : "",
    },
    charged > 0n || completionTokens > 0
      ? usageOutboxRow({ userId: owner.userId, modelId: row.modelId, promptTokens, completionTokens, creditsCharged: charged, messageId: row.id })
      : undefined,
  );
  return stored;
}
