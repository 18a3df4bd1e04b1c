// The hold sweep's mark alone (the whole sweep against real billing and Postgres: test/hold-sweep.test.ts and
// test/hold-crash.test.ts): what moves it, and what holds it back, at controlled instants.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import { HoldSchema, type Hold } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { describe, expect, it } from "vitest";
import type { JobStore } from "./data/job-store.js";
import { HOLD_VISIBILITY_MS, releaseOrphanedHolds, type HoldScan, type SweeperOptions } from "./sweeper.js";

const T0 = new Date("2026-12-06T10:00:00Z");
const JOB = "0f8e7a3c-1d2b-4c5d-8e9f-a0b1c2d3e4f5";
const USER = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d";

/** Billing with one open image hold (created at T0, its job never stored), honouring the list's time bounds. */
function billing(): { credits: SweeperOptions["credits"]; released: string[] } {
  const hold: Hold = create(HoldSchema, { id: "h1", accountId: USER, reference: JOB, amount: 50n, createdAt: timestampFromDate(T0) });
  const released: string[] = [];
  const transport = createRouterTransport((router) => router.service(CreditsService, {
    listOpenHolds: (req) => {
      const at = timestampDate(hold.createdAt!).getTime();
      const open = !released.includes(hold.id)
        && (!req.createdBefore || at < timestampDate(req.createdBefore).getTime())
        && (!req.createdAfter || at >= timestampDate(req.createdAfter).getTime());
      return { holds: open ? [hold] : [], nextPageToken: "" };
    },
    release: (req) => {
      released.push(req.holdId);
      return {};
    },
  }));
  return { credits: createClient(CreditsService, transport), released };
}

describe("the hold sweep's mark", () => {
  it("a hold left undecided (its user's lock busy) is read again by later rounds, however long that takes", async () => {
    const { credits, released } = billing();
    let lockBusy = true;
    const store = {
      jobsMissing: async () => (lockBusy ? { missing: [], undecided: [JOB] } : { missing: [JOB], undecided: [] }),
    } as unknown as JobStore;
    const holdScan: HoldScan = {};
    const opts = { store, credits, holdScan, orphanHoldGraceMs: 0, orphanHoldRescanMs: 3_600_000, batch: 100,
      log: { info: () => undefined, warn: () => undefined } } as unknown as SweeperOptions;

    // First round (a complete pass) a second after the hold: its user's lock is busy.
    expect(await releaseOrphanedHolds(opts, new Date(T0.getTime() + 1000))).toBe(0);
    expect(holdScan.decidedBefore!.getTime()).toBeLessThanOrEqual(T0.getTime());
    // Rounds long after the visibility window: the mark stays at the undecided hold, so it is still read.
    expect(await releaseOrphanedHolds(opts, new Date(T0.getTime() + 10 * HOLD_VISIBILITY_MS))).toBe(0);
    lockBusy = false;
    expect(await releaseOrphanedHolds(opts, new Date(T0.getTime() + 20 * HOLD_VISIBILITY_MS))).toBe(1);
    expect(released).toEqual(["h1"]);
  });

  it("a decided round moves the mark to the visibility window's edge, not to `now`", async () => {
    const { credits } = billing();
    const store = { jobsMissing: async () => ({ missing: [], undecided: [] }) } as unknown as JobStore;
    const holdScan: HoldScan = {};
    const opts = { store, credits, holdScan, orphanHoldGraceMs: 0, orphanHoldRescanMs: 3_600_000, batch: 100,
      log: { info: () => undefined, warn: () => undefined } } as unknown as SweeperOptions;
    const now = new Date(T0.getTime() + 60_000);
    await releaseOrphanedHolds(opts, now);
    // A hold created just before `now` whose row became visible after this round's read is read by the next round.
    expect(holdScan.decidedBefore).toEqual(new Date(now.getTime() - HOLD_VISIBILITY_MS));
  });
});
