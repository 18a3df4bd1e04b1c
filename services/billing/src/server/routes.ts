/**
 * Connect handlers of billing's services: validate every field (INVALID_ARGUMENT names it), call the ledger or the
 * limiter, map the result. Auth rules per method live in index.ts (`authRules`); handlers also check the principal
 * themselves so a misconfigured rule can never expose another user's account.
 */
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { RateLimitService } from "@luna/contracts/envoy/service/ratelimit/v3/rls_pb.js";
import {
  CheckInvariantsResponseSchema,
  BillingAdminService,
  GetAccountResponseSchema,
  GrantCreditsResponseSchema,
  InvariantViolationSchema,
  ReverseTransferResponseSchema,
} from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import {
  BillingService,
  GetBalanceResponseSchema,
  ListLedgerEntriesResponseSchema,
} from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import {
  CommitResponseSchema,
  CreditsService,
  GetHoldResponseSchema,
  ListHoldsResponseSchema,
  ListOpenHoldsResponseSchema,
  ReleaseResponseSchema,
  ReserveResponseSchema,
} from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { PageResponseSchema } from "@luna/contracts/luna/common/v1/common_pb.js";
import { adminActionEvent, auditActorOf, invalidPageSize, requirePrincipal } from "@luna/kit";
import { invalid, notFound } from "../domain/errors.js";
import {
  checkAnyAccountId,
  checkIdempotencyKey,
  checkNonNegativeAmount,
  checkPositiveAmount,
  checkReasonLabel,
  checkText,
  checkUsage,
  checkUserAccountId,
  checkUuid,
} from "../domain/ledger.js";
import type { Ledger } from "../ledger.js";
import { isLeaseId, type RateLimiter } from "../limits/limiter.js";
import {
  accountToProto,
  durationToMs,
  historyItemToProto,
  holdToProto,
  timestampFromMicros,
  usageFromProto,
} from "./convert.js";
import { rpc } from "./errors.js";
import { limitsServiceImpl, rateLimitServiceImpl } from "./limits.js";
import { LimitsService } from "@luna/contracts/luna/billing/v1/limits_service_pb.js";
import { decodeHoldPageToken, decodePageToken, encodeHoldPageToken, encodePageToken } from "./page-token.js";

export interface RouteDeps {
  ledger: Ledger;
  limiter: RateLimiter;
  /** Envoy's rate limit domain answered with limits. */
  rateLimitDomain: string;
  /** Wakes the outbox relay after an admin action committed its audit event. */
  kickOutbox?: () => void;
  log?: { warn(obj: object, msg?: string): void };
}

/** The service name in audit events (`luna.events.audit.billing`). */
export const BILLING_SERVICE = "billing";

const HISTORY_DEFAULT_PAGE = 50;
const HISTORY_MAX_PAGE = 200;
const OPEN_HOLDS_DEFAULT_PAGE = 100;
const OPEN_HOLDS_MAX_PAGE = 500;

/** Marks a replayed idempotent response (Stripe's `Idempotent-Replayed`); the body stays byte-identical. */
function markReplay(ctx: HandlerContext, replayed: boolean): void {
  if (replayed) ctx.responseHeader.set("idempotent-replayed", "true");
}

function holdTtlMs(ledger: Ledger, field: string, d: Parameters<typeof durationToMs>[0]): number {
  const ms = durationToMs(d);
  if (ms === undefined) return ledger.holdTtl(0);
  if (d && (d.seconds < 0n || d.nanos < 0)) throw invalid(field, "must not be negative");
  if (ms < 1000) throw invalid(field, "must be at least 1s (or unset for the default)");
  return ledger.holdTtl(ms);
}

export function billingRoutes(deps: RouteDeps): (router: ConnectRouter) => void {
  const { ledger } = deps;
  const store = ledger.store;

  /**
   * Frees the lease a Commit/Release names, once the hold is settled (or the settle is a replay: ZREM is idempotent).
   * Best effort: the money call never fails for it — a lease that cannot be freed expires by itself (the limiter's
   * fail-open hook logs Redis errors; a malformed id is logged here).
   */
  async function releaseLeaseWith(leaseId: string, holdId: string): Promise<void> {
    if (leaseId === "") return;
    if (!isLeaseId(leaseId)) {
      deps.log?.warn({ holdId, leaseId: leaseId.slice(0, 100) }, "release_lease_id is not a lease id; nothing freed");
      return;
    }
    await deps.limiter.release(leaseId).catch((err: unknown) => deps.log?.warn({ err, holdId }, "could not free the lease of a settled hold (it expires by itself)"));
  }

  return (router) => {
    router.service(BillingService, {
      getBalance: (_req, ctx) =>
        rpc(async () => {
          const me = requirePrincipal(ctx, "user");
          const account = await store.getAccount(me.userId);
          // A user whose sign-up event is not processed yet simply has nothing.
          return create(GetBalanceResponseSchema, {
            balance: account?.balance ?? 0n,
            held: account?.held ?? 0n,
            available: account?.available ?? 0n,
          });
        }),
      listLedgerEntries: (req, ctx) =>
        rpc(async () => {
          const me = requirePrincipal(ctx, "user");
          const size = req.page?.pageSize ?? 0;
          if (size < 0) throw invalidPageSize("page.page_size", size);
          const limit = size === 0 ? HISTORY_DEFAULT_PAGE : Math.min(size, HISTORY_MAX_PAGE);
          const after = decodePageToken("page.page_token", req.page?.pageToken ?? "");
          const items = await store.listHistory(me.userId, limit + 1, after);
          const page = items.slice(0, limit);
          const last = page[page.length - 1];
          return create(ListLedgerEntriesResponseSchema, {
            entries: page.map(historyItemToProto),
            page: create(PageResponseSchema, {
              nextPageToken: items.length > limit && last ? encodePageToken({ at: last.createdAt, id: last.id }) : "",
            }),
          });
        }),
    });

    router.service(CreditsService, {
      reserve: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const input = {
            accountId: checkUserAccountId("account_id", req.accountId),
            amount: checkPositiveAmount("amount", req.amount),
            reason: checkReasonLabel("reason", req.reason),
            reference: checkText("reference", req.reference, { required: false, max: 200 }),
            idempotencyKey: checkIdempotencyKey("idempotency_key", req.idempotencyKey),
            ttlMs: holdTtlMs(ledger, "ttl", req.ttl),
          };
          const out = await ledger.reserve(input);
          markReplay(ctx, out.replayed);
          return create(ReserveResponseSchema, {
            holdId: out.result.holdId,
            amount: out.result.amount,
            expiresAt: timestampFromMicros(out.result.expiresAt),
            available: out.result.available,
          });
        }),
      commit: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const input = {
            holdId: checkUuid("hold_id", req.holdId),
            amount: checkNonNegativeAmount("amount", req.amount),
            usage: checkUsage("usage", usageFromProto(req.usage)),
          };
          const out = await ledger.commit(input);
          await releaseLeaseWith(req.releaseLeaseId, input.holdId);
          markReplay(ctx, out.replayed);
          return create(CommitResponseSchema, { hold: holdToProto(out.result.hold), transferId: out.result.transferId, leaseReleased: req.releaseLeaseId !== "" });
        }),
      release: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const holdId = checkUuid("hold_id", req.holdId);
          const out = await ledger.release(holdId);
          await releaseLeaseWith(req.releaseLeaseId, holdId);
          markReplay(ctx, out.replayed);
          return create(ReleaseResponseSchema, { hold: holdToProto(out.result), leaseReleased: req.releaseLeaseId !== "" });
        }),
      getHold: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const id = checkUuid("hold_id", req.holdId);
          const hold = await store.getHold(id);
          if (!hold) throw notFound(`hold "${id}"`);
          return create(GetHoldResponseSchema, { hold: holdToProto(hold) });
        }),
      listOpenHolds: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const reason = checkReasonLabel("reason", req.reason);
          const reference = req.reference === "" ? undefined : checkText("reference", req.reference, { required: false, max: 200 });
          if (req.pageSize < 0) throw invalidPageSize("page_size", req.pageSize);
          const limit = req.pageSize === 0 ? OPEN_HOLDS_DEFAULT_PAGE : Math.min(req.pageSize, OPEN_HOLDS_MAX_PAGE);
          const after = decodeHoldPageToken("page_token", req.pageToken);
          const b = req.createdBefore;
          if (b && (b.seconds < 0n || b.nanos < 0 || b.nanos > 999_999_999)) throw invalid("created_before", "must be a valid instant after 1970");
          const beforeUs = b ? b.seconds * 1_000_000n + BigInt(Math.floor(b.nanos / 1000)) : undefined;
          const a = req.createdAfter;
          if (a && (a.seconds < 0n || a.nanos < 0 || a.nanos > 999_999_999)) throw invalid("created_after", "must be a valid instant after 1970");
          const sinceUs = a ? a.seconds * 1_000_000n + BigInt(Math.floor(a.nanos / 1000)) : undefined;
          const holds = await store.listOpenHolds({ reason, reference, beforeUs, sinceUs, limit: limit + 1, after });
          const page = holds.slice(0, limit);
          const last = page[page.length - 1];
          return create(ListOpenHoldsResponseSchema, {
            holds: page.map(holdToProto),
            nextPageToken: holds.length > limit && last ? encodeHoldPageToken({ at: last.createdAt, id: last.id }) : "",
          });
        }),
      listHolds: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "internal");
          const reason = checkReasonLabel("reason", req.reason);
          const reference = checkText("reference", req.reference, { required: true, max: 200 });
          if (req.pageSize < 0) throw invalidPageSize("page_size", req.pageSize);
          const limit = req.pageSize === 0 ? OPEN_HOLDS_DEFAULT_PAGE : Math.min(req.pageSize, OPEN_HOLDS_MAX_PAGE);
          // The same keyset token as ListOpenHolds (created_at, id of the page's last hold), read backwards.
          const before = decodeHoldPageToken("page_token", req.pageToken);
          const holds = await store.listHolds({ reason, reference, limit: limit + 1, before });
          const page = holds.slice(0, limit);
          const last = page[page.length - 1];
          return create(ListHoldsResponseSchema, {
            holds: page.map(holdToProto),
            nextPageToken: holds.length > limit && last ? encodeHoldPageToken({ at: last.createdAt, id: last.id }) : "",
          });
        }),
    });

    router.service(BillingAdminService, {
      grantCredits: (req, ctx) =>
        rpc(async () => {
          const actor = auditActorOf(ctx);
          const input = {
            accountId: checkUserAccountId("account_id", req.accountId),
            amount: checkPositiveAmount("amount", req.amount),
            reason: checkText("reason", req.reason, { required: true, max: 200 }),
            idempotencyKey: checkIdempotencyKey("idempotency_key", req.idempotencyKey),
          };
          // The audit fact is written by the grant's own statement: with the grant, never on a replay.
          const out = await ledger.grant(input, undefined, (transferId) => adminActionEvent({
            service: BILLING_SERVICE, action: "credits.granted", actor, target: input.accountId, subjectUserId: input.accountId,
            detail: { case: "creditsGranted", value: { ...input, transferId } },
          }));
          if (!out.replayed) deps.kickOutbox?.();
          markReplay(ctx, out.replayed);
          return create(GrantCreditsResponseSchema, {
            transferId: out.result.transferId,
            amount: out.result.amount,
            balance: out.result.balance,
            createdAt: timestampFromMicros(out.result.createdAt),
          });
        }),
      getAccount: (req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "admin");
          const id = checkAnyAccountId("account_id", req.accountId);
          const account = await store.getAccount(id);
          if (!account) throw notFound(`account "${id}"`);
          return create(GetAccountResponseSchema, { account: accountToProto(account) });
        }),
      reverseTransfer: (req, ctx) =>
        rpc(async () => {
          const actor = auditActorOf(ctx);
          const transferId = checkUuid("transfer_id", req.transferId);
          const reason = checkText("reason", req.reason, { required: true, max: 200 });
          const out = await store.reverse(transferId, reason, (r) => adminActionEvent({
            service: BILLING_SERVICE, action: "credits.reversed", actor, target: r.accountId || transferId,
            subjectUserId: r.accountId,
            detail: { case: "creditsReversed", value: { accountId: r.accountId, amount: r.amount, reason,
              reversedTransferId: transferId, reversalTransferId: r.reversalId } },
          }));
          if (!out.replayed) deps.kickOutbox?.();
          markReplay(ctx, out.replayed);
          return create(ReverseTransferResponseSchema, {
            transferId: out.result.transferId,
            amount: out.result.amount,
            createdAt: timestampFromMicros(out.result.createdAt),
          });
        }),
      checkInvariants: (_req, ctx) =>
        rpc(async () => {
          requirePrincipal(ctx, "admin");
          const r = await ledger.checkInvariants();
          return create(CheckInvariantsResponseSchema, {
            ok: r.ok,
            violations: r.violations.map((v) => create(InvariantViolationSchema, v)),
            checkedAt: timestampFromMicros(r.checkedAt),
            accountsChecked: r.accountsChecked,
            entriesChecked: r.entriesChecked,
            holdsChecked: r.holdsChecked,
          });
        }),
    });

    router.service(LimitsService, limitsServiceImpl(deps.limiter));
    router.service(RateLimitService, rateLimitServiceImpl(deps.limiter, deps.rateLimitDomain));
  };
}
