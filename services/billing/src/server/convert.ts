/** Domain values → protobuf messages (and the few proto values the handlers read). */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  AccountKind,
  AccountSchema,
  AccountStatus,
  HoldSchema,
  HoldStatus,
  LedgerEntryKind,
  LedgerEntrySchema,
  UsageDetailsSchema,
  type Account as AccountMsg,
  type Hold as HoldMsg,
  type LedgerEntry as LedgerEntryMsg,
  type UsageDetails,
} from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import type { Account, HistoryItem, Hold, Micros, Usage } from "../domain/ledger.js";

export function timestampFromMicros(us: Micros): Timestamp {
  const seconds = us / 1_000_000n;
  const rest = us % 1_000_000n;
  // Floor toward -infinity so nanos stay in [0, 1e9) for instants before 1970 too.
  return rest < 0n
    ? create(TimestampSchema, { seconds: seconds - 1n, nanos: Number(rest + 1_000_000n) * 1000 })
    : create(TimestampSchema, { seconds, nanos: Number(rest) * 1000 });
}

export function durationFromMs(ms: number): Duration {
  const whole = Math.max(0, Math.floor(ms));
  return create(DurationSchema, { seconds: BigInt(Math.floor(whole / 1000)), nanos: (whole % 1000) * 1_000_000 });
}

/** A Duration as milliseconds; undefined when unset. Negative or non-normalized values are bad input for the caller to reject. */
export function durationToMs(d: Duration | undefined): number | undefined {
  if (!d) return undefined;
  return Number(d.seconds) * 1000 + Math.trunc(d.nanos / 1_000_000);
}

const HOLD_STATUS = { open: HoldStatus.OPEN, committed: HoldStatus.COMMITTED, released: HoldStatus.RELEASED, expired: HoldStatus.EXPIRED } as const;

export function holdToProto(h: Hold): HoldMsg {
  return create(HoldSchema, {
    id: h.id,
    accountId: h.accountId,
    amount: h.amount,
    status: HOLD_STATUS[h.status],
    charged: h.charged,
    released: h.released,
    reason: h.reason,
    reference: h.reference,
    createdAt: timestampFromMicros(h.createdAt),
    expiresAt: timestampFromMicros(h.expiresAt),
    resolvedAt: h.resolvedAt === null ? undefined : timestampFromMicros(h.resolvedAt),
  });
}

export function accountToProto(a: Account): AccountMsg {
  return create(AccountSchema, {
    id: a.id,
    kind: a.kind === "user" ? AccountKind.USER : AccountKind.SYSTEM,
    status: a.status === "open" ? AccountStatus.OPEN : AccountStatus.CLOSED,
    balance: a.balance,
    held: a.held,
    available: a.available,
    openHolds: a.openHolds,
    createdAt: timestampFromMicros(a.createdAt),
    closedAt: a.closedAt === null ? undefined : timestampFromMicros(a.closedAt),
  });
}

const ENTRY_KIND = {
  grant: LedgerEntryKind.GRANT,
  charge: LedgerEntryKind.CHARGE,
  release: LedgerEntryKind.RELEASE,
  reversal: LedgerEntryKind.REVERSAL,
} as const;

export function historyItemToProto(i: HistoryItem): LedgerEntryMsg {
  return create(LedgerEntrySchema, {
    id: i.id,
    kind: ENTRY_KIND[i.kind],
    amount: i.amount,
    balanceDelta: i.balanceDelta,
    transferId: i.transferId,
    holdId: i.holdId,
    reason: i.reason,
    reference: i.reference,
    description: i.description,
    usage: i.usage
      ? create(UsageDetailsSchema, {
          model: i.usage.model,
          feature: i.usage.feature,
          inputTokens: i.usage.inputTokens,
          outputTokens: i.usage.outputTokens,
          images: i.usage.images,
        })
      : undefined,
    createdAt: timestampFromMicros(i.createdAt),
  });
}

export function usageFromProto(u: UsageDetails | undefined): Usage | undefined {
  if (!u) return undefined;
  return { model: u.model, feature: u.feature, inputTokens: u.inputTokens, outputTokens: u.outputTokens, images: u.images };
}
