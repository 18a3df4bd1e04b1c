// The orphaned-hold sweep reads only what is new: a hold already found named by its job is not listed again round
// after round (with thousands of queued jobs each round used to list every open image hold), while a new hold is
// looked at, and a complete pass still comes every IMAGE_ORPHAN_HOLD_RESCAN. Counted at billing's store (the real
// billing, in process): how often ListOpenHolds returned each image hold.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HOLD_VISIBILITY_MS } from "../src/sweeper.js";
import { startHarness, type Harness } from "./harness.js";

const harnesses: Harness[] = [];
afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
});

const ROUND_MS = 100;

/** Starts a harness (no worker: jobs stay queued, their holds open) whose billing counts each image hold listed. */
async function harness(image: Record<string, string>): Promise<{ h: Harness; reads: (jobIds: string[]) => number }> {
  const h = await startHarness({ worker0: false, image: { IMAGE_SWEEP_INTERVAL: `${ROUND_MS}ms`, IMAGE_ORPHAN_HOLD_GRACE: "0ms", ...image } });
  harnesses.push(h);
  const store = h.billing.ledger.store;
  const list = store.listOpenHolds.bind(store);
  const listed = new Map<string, number>();
  store.listOpenHolds = async (q) => {
    const holds = await list(q);
    if (q.reason === "image" && q.reference === undefined) for (const hold of holds) listed.set(hold.reference, (listed.get(hold.reference) ?? 0) + 1);
    return holds;
  };
  return { h, reads: (jobIds) => jobIds.reduce((n, id) => n + (listed.get(id) ?? 0), 0) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Past the window in which the sweep still re-reads a new hold (its row may become visible late). */
const settled = () => sleep(HOLD_VISIBILITY_MS + 5 * ROUND_MS);

async function queued(h: Harness, n: number): Promise<{ user: Awaited<ReturnType<Harness["newUser"]>>; ids: string[] }> {
  const user = await h.newUser();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push((await user.client.submitJob({ workflowId: "flux-schnell", prompt: `queued ${i}` })).job!.id);
  return { user, ids };
}

describe("orphaned-hold sweep", () => {
  let incremental: Awaited<ReturnType<typeof harness>>;
  let everyRound: Awaited<ReturnType<typeof harness>>;
  beforeAll(async () => {
    [incremental, everyRound] = await Promise.all([harness({}), harness({ IMAGE_ORPHAN_HOLD_RESCAN: "0ms" })]);
  }, 120_000);

  it("stops reading a job's hold once it is decided, and reads a new hold", async () => {
    const { h, reads } = incremental;
    const { user, ids } = await queued(h, 3);
    await settled();
    const old = reads(ids);
    expect(old).toBeGreaterThanOrEqual(3); // each queued job's hold was looked at
    const [late] = (await queued(h, 1)).ids;
    await settled();
    expect(reads(ids) - old).toBe(0); // the three old ones not again, while rounds went on
    expect(reads([late!])).toBeGreaterThanOrEqual(1); // the new one was looked at
    expect(await h.balance(user.id)).toMatchObject({ held: 150n }); // nothing released: every hold has its job
  }, 60_000);

  it("with IMAGE_ORPHAN_HOLD_RESCAN 0 every round is a complete pass (the old behaviour, for contrast)", async () => {
    const { h, reads } = everyRound;
    const { user, ids } = await queued(h, 3);
    await settled();
    const before = reads(ids);
    await sleep(10 * ROUND_MS);
    expect(reads(ids) - before).toBeGreaterThanOrEqual(3 * 5); // the same three holds, round after round
    expect(await h.balance(user.id)).toMatchObject({ held: 150n });
  }, 60_000);
});
