/**
 * Finishes replies whose replica died mid-stream: a streaming reply whose checkpoint heartbeat is older than
 * CHAT_STALE_STREAM_AFTER is claimed, billed for what its last checkpoint holds (or for what an earlier commit
 * already charged), marked failed ("interrupted") and its usage event emitted — exactly like a reply that failed
 * after its first token.
 */
import { HoldStatus } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import type { CatalogCache } from "@luna/kit";
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
  /** Replies this process streams (never orphans, whatever their heartbeat says). */
  localIds(): string[];
  kickOutbox(): void;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

const BATCH = 50;

/** One sweep; returns how many replies it finished. */
export async function sweepOrphanedReplies(deps: SweeperDeps): Promise<number> {
  const rows = await deps.store.claimStale(deps.staleMs, BATCH, deps.localIds());
  let n = 0;
  for (const row of rows) {
    try {
      if (await finishOrphan(deps, row)) n++;
    } catch (err) {
      deps.log.error({ err, messageId: row.id }, "could not finish an orphaned reply; retrying next sweep");
    }
  }
  if (n > 0) deps.log.info({ replies: n }, "finished replies whose replica stopped");
  return n;
}

async function finishOrphan(deps: SweeperDeps, row: MessageRow): Promise<boolean> {
  const owner = await deps.store.conversationOwner(row.conversationId);
  if (!owner) return false;
  const completionTokens = row.completionTokens;
  const promptTokens = completionTokens > 0 ? row.promptTokens : 0;
  let charged = 0n;
  if (row.holdId) {
    const hold = await deps.billing.getHold(row.holdId);
    if (hold?.status === HoldStatus.COMMITTED) {
      charged = hold.charged;
    } else if (hold?.status === HoldStatus.OPEN) {
      const model = deps.catalog.getModel(row.modelId);
      const cost = model && completionTokens > 0
        ? replyCost({ inputPer1k: model.prices?.inputPer1kTokens ?? 0n, outputPer1k: model.prices?.outputPer1kTokens ?? 0n }, promptTokens, completionTokens)
        : 0n;
      const amount = cost > hold.amount ? hold.amount : cost;
      if (amount > 0n) {
        charged = (await deps.billing.commit(row.holdId, amount, { model: row.modelId, inputTokens: promptTokens, outputTokens: completionTokens }))?.charged ?? 0n;
      } else {
        await deps.billing.release(row.holdId);
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
  if (stored) deps.kickOutbox();
  return stored;
}
