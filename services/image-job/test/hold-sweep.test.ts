// The orphaned-hold sweep reads only what is new: a hold already found named by its job is not listed again every
// round (with thousands of queued jobs each round used to list every open image hold), while a new hold is looked at
// once and a complete pass still comes every IMAGE_ORPHAN_HOLD_RESCAN. Counted at billing's store (the real
// billing, in process): the image holds each ListOpenHolds call returned.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHarness, type Harness } from "./harness.js";

const harnesses: Harness[] = [];
afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
});

/** Starts a harness (no worker: jobs stay queued, their holds open) whose billing counts the image holds listed. */
async function harness(image: Record<string, string>): Promise<{ h: Harness; listed: () => number }> {
  const h = await startHarness({ worker0: false, image: { IMAGE_SWEEP_INTERVAL: "100ms", IMAGE_ORPHAN_HOLD_GRACE: "0ms", ...image } });
  harnesses.push(h);
  const store = h.billing.ledger.store;
  const list = store.listOpenHolds.bind(store);
  let listed = 0;
  store.listOpenHolds = async (q) => {
    const holds = await list(q);
    if (q.reason === "image" && q.reference === undefined) listed += holds.length;
    return holds;
  };
  return { h, listed: () => listed };
}

const rounds = (n: number) => new Promise((r) => setTimeout(r, n * 100 + 50));

describe("orphaned-hold sweep", () => {
  let incremental: Awaited<ReturnType<typeof harness>>;
  let everyRound: Awaited<ReturnType<typeof harness>>;
  beforeAll(async () => {
    [incremental, everyRound] = await Promise.all([harness({}), harness({ IMAGE_ORPHAN_HOLD_RESCAN: "0ms" })]);
  }, 120_000);

  it("lists a job's hold once, not in every round, and still looks at a new hold", async () => {
    const { h, listed } = incremental;
    const user = await h.newUser();
    for (let i = 0; i < 3; i++) await user.client.submitJob({ workflowId: "flux-schnell", prompt: `queued ${i}` });
    await rounds(5);
    const afterFirst = listed();
    expect(afterFirst).toBeGreaterThanOrEqual(3); // each queued job's hold was looked at
    await rounds(10);
    expect(listed() - afterFirst).toBe(0); // and not again

    await user.client.submitJob({ workflowId: "flux-schnell", prompt: "one more" });
    await rounds(10);
    expect(listed() - afterFirst).toBeGreaterThanOrEqual(1);
    expect(listed() - afterFirst).toBeLessThanOrEqual(2); // the new hold, not the three old ones again
    expect(await h.balance(user.id)).toMatchObject({ held: 200n }); // nothing released: every hold has its job
  });

  it("with IMAGE_ORPHAN_HOLD_RESCAN 0 every round is a complete pass (the old behaviour, for contrast)", async () => {
    const { h, listed } = everyRound;
    const user = await h.newUser();
    for (let i = 0; i < 3; i++) await user.client.submitJob({ workflowId: "flux-schnell", prompt: `queued ${i}` });
    await rounds(5);
    const before = listed();
    await rounds(10);
    expect(listed() - before).toBeGreaterThanOrEqual(3 * 5); // the same three holds, round after round
    expect(await h.balance(user.id)).toMatchObject({ held: 150n });
  });
});
