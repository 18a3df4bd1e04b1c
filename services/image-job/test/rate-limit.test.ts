// Billing's per-minute request limit for image jobs (feature "image", issue 20 item 6): a new job is counted before its
// credits are reserved; a refused one holds nothing and stores nothing; a retry of a stored job (same idempotency
// key) is answered from the store and not counted; other users are not affected.
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startHarness, type Harness } from "./harness.js";

let h: Harness;

beforeAll(async () => {
  // No worker: the accepted jobs wait in the queue, so the per-user open-job limit is not what refuses.
  h = await startHarness({ worker0: false, imagePerMinute: 3 });
});

afterAll(async () => {
  await h?.close();
});

async function codeOf(p: Promise<unknown>): Promise<{ code: Code | 0; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  return { code: 0, message: "" };
}

describe("per-minute limit of image jobs", () => {
  it("refuses the job over the limit before reserving; retries of stored jobs are not counted", async () => {
    const alice = await h.newUser();
    const ids: string[] = [];
    for (const key of ["k1", "k2", "k3"]) {
      const { job } = await alice.client.submitJob({ workflowId: "flux-schnell", prompt: `job ${key}`, idempotencyKey: key });
      ids.push(job!.id);
    }
    // A retry of a stored job is not a new request.
    expect((await alice.client.submitJob({ workflowId: "flux-schnell", prompt: "job k1", idempotencyKey: "k1" })).job!.id).toBe(ids[0]);

    const refused = await codeOf(alice.client.submitJob({ workflowId: "flux-schnell", prompt: "one too many", idempotencyKey: "k4" }));
    expect(refused).toEqual({ code: Code.ResourceExhausted, message: expect.stringMatching(/^rate limit: at most 3 image jobs per minute; retry in \d+s$/) });
    // Nothing reserved or stored for it.
    expect(await h.balance(alice.id)).toMatchObject({ balance: 1000n, held: 150n });
    expect((await alice.client.listJobs({})).jobs.map((j) => j.id).sort()).toEqual([...ids].sort());

    // Another user has a budget of their own.
    const bob = await h.newUser();
    expect((await bob.client.submitJob({ workflowId: "flux-schnell", prompt: "bob's" })).job!.id).toBeTruthy();
    await h.assertLedgerConsistent();
  });
});
