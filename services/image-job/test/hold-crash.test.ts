// RELIABILITY.md (issue 20 item 5): image-job killed (SIGKILL) between billing's reserve and the commit of the job.
// The child's submission is held inside that window by a test trigger on image_jobs (it waits for a lock this test
// holds) while billing already has the hold; the child is killed there, its transaction never commits, so no job
// names the hold. The surviving image-job's sweeper finds the hold by its reference (the job id, through billing's
// ListOpenHolds), confirms under the user's lock that no job exists, and releases it at once instead of at its
// deadline; a retry of the same idempotency key is then refused instead of running on a released hold.
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jobIdForKey } from "../src/domain/job.js";
import { eventually, startHarness, type Harness } from "./harness.js";
import { waitForNoHold } from "./helpers.js";

const LOCK = 20_520_005;
let h: Harness;
let db: pg.Client;

beforeAll(async () => {
  // Grace 0: only the user's lock keeps the sweeper off a submission still between its reserve and its commit.
  h = await startHarness({ worker0: false, image: { IMAGE_ORPHAN_HOLD_GRACE: "0ms" } });
  db = new pg.Client({ connectionString: h.jobDatabaseUrl });
  await db.connect();
  const name = (await db.query<{ n: string }>("SELECT current_database() AS n")).rows[0]!.n;
  // A killed client's backend notices the closed socket while it waits (as it does at its next read in production).
  await db.query(`ALTER DATABASE "${name}" SET client_connection_check_interval = '100ms'`);
  await db.query(`CREATE FUNCTION luna_test_hold_window() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN PERFORM pg_advisory_xact_lock(${LOCK}); RETURN NEW; END $$`);
  await db.query("CREATE TRIGGER luna_test_hold_window BEFORE INSERT ON image_jobs FOR EACH ROW EXECUTE FUNCTION luna_test_hold_window()");
}, 60_000);

afterAll(async () => {
  await db?.end();
  await h?.close();
});

const waiters = async () =>
  (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'")).rows[0]!.n;

describe("image-job killed between reserve and commit", () => {
  it("the sweeper releases the hold no job names, within a sweep, and a retry of the key is refused", async () => {
    const doomed = await h.spawnImageJob({ IMAGE_SWEEP_INTERVAL: "1h" });
    const user = await h.newUser();
    const jobId = jobIdForKey(user.id, "crash-1");
    await db.query("SELECT pg_advisory_lock($1)", [LOCK]);
    const submit = doomed.client(user.id).submitJob({ workflowId: "flux-schnell", prompt: "never stored", idempotencyKey: "crash-1" })
      .catch((e: unknown) => ConnectError.from(e));
    // Inside the window: billing holds the credits, the job's insert waits.
    const [hold] = await eventually(async () => {
      const holds = await h.billing.ledger.store.listOpenHolds({ reason: "image", reference: jobId, limit: 10 });
      return holds.length === 1 && (await waiters()) >= 1 ? holds : undefined;
    }, 20_000, "hold placed and the job's insert waiting");
    expect(hold).toMatchObject({ amount: 50n, accountId: user.id });
    // The surviving sweeper (grace 0) must not take the hold while the submission holds the user's lock. Longer
    // than its lock wait (2 s): the sweep leaves the hold undecided and comes back to it after the kill (the mark's
    // logic alone: src/sweeper.test.ts).
    await new Promise((r) => setTimeout(r, 3000));
    expect((await h.billing.ledger.store.getHold(hold!.id))!.status).toBe("open");

    doomed.child.kill("SIGKILL");
    await new Promise((r) => doomed.child.once("exit", r));
    expect((await submit) as ConnectError).toBeInstanceOf(ConnectError);
    await eventually(async () => ((await waiters()) === 0 ? true : undefined), 10_000, "the killed process's backend gone");
    await db.query("SELECT pg_advisory_unlock($1)", [LOCK]);
    await db.query("DROP TRIGGER luna_test_hold_window ON image_jobs");

    expect(await waitForNoHold(() => h.balance(user.id))).toMatchObject({ balance: 1000n, held: 0n });
    const released = (await h.billing.ledger.store.getHold(hold!.id))!;
    expect(released.status).toBe("released");
    expect(released.expiresAt - released.resolvedAt!).toBeGreaterThan(10n * 60n * 1_000_000n); // long before its deadline
    expect((await db.query("SELECT count(*)::int AS n FROM image_jobs WHERE id = $1", [jobId])).rows[0].n).toBe(0);

    // The user's client on the surviving image-job.
    const again = await user.client.submitJob({ workflowId: "flux-schnell", prompt: "never stored", idempotencyKey: "crash-1" })
      .catch((e: unknown) => ConnectError.from(e));
    expect(again).toMatchObject({ code: Code.FailedPrecondition, rawMessage: expect.stringContaining("hold was released") });
    await h.assertLedgerConsistent();
  }, 90_000);
});
