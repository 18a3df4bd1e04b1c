// Issue 20, defect 2: after DeleteAccount, DisableUser or a sign-out everywhere (ChangePassword), the access tokens
// issued before stop working within the configured bound in every service — here auth itself and billing (GetBalance,
// the call the issue saw succeed), each with its own verifier, Redis connection and cache, as separate services have.
import { randomBytes } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBillingBeside, type BillingBeside } from "./billing-beside.js";
import { outcome, PASSWORD, startAuth, type Harness } from "./harness.js";

/** The revocation check interval both services run with (LUNA_REVOCATION_CHECK_INTERVAL). */
const BOUND_MS = 1000;
/** Slack for a loaded 2-core machine on top of the bound (HTTP round trips, polling step). */
const SLACK_MS = 1500;

let h: Harness;
let billing: BillingBeside;
let balance: BillingBeside["balance"];

beforeAll(async () => {
  h = await startAuth({}, { revocationCheckMs: BOUND_MS });
  billing = await startBillingBeside(h, { revocationCheckMs: BOUND_MS });
  balance = billing.balance;
});

afterAll(async () => {
  await billing?.close();
  await h?.close();
});

/** Both services answer with `token`: auth's GetMe and billing's GetBalance. */
async function calls(token: string): Promise<Array<Code | "ok">> {
  return Promise.all([outcome(h.auth.getMe({}, h.bearer(token))), outcome(balance.getBalance({}, h.bearer(token)))]);
}

/** Polls until both services refuse `token`; returns how long that took after `since`. */
async function refusedAfter(token: string, since: number): Promise<number> {
  for (;;) {
    const results = await calls(token);
    if (results.every((r) => r === Code.Unauthenticated)) return performance.now() - since;
    // Until the bound, a service may still accept the token (its handler may then say the account is gone).
    expect(results.every((r) => r === "ok" || r === Code.Unauthenticated || r === Code.NotFound), `unexpected ${results.join(", ")}`).toBe(true);
    if (performance.now() - since > BOUND_MS + SLACK_MS + 5000) return performance.now() - since;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A fresh account whose token both services have just accepted (so each has cached "not revoked"). */
async function warmAccount(): Promise<{ userId: string; email: string; token: string }> {
  const email = `revoke-${randomBytes(4).toString("hex")}@example.com`;
  const res = await h.signUp(email);
  const token = res.tokens!.accessToken;
  expect(await calls(token)).toEqual(["ok", "ok"]);
  return { userId: res.user!.id, email, token };
}

describe("revoked access tokens stop working in every service within the bound", () => {
  it("after DeleteAccount", async () => {
    const { token } = await warmAccount();
    await h.auth.deleteAccount({ password: PASSWORD }, h.bearer(token));
    const took = await refusedAfter(token, performance.now());
    console.log(`revocation after DeleteAccount: both services refuse the token after ${Math.round(took)} ms (bound ${BOUND_MS} ms)`);
    expect(took).toBeLessThan(BOUND_MS + SLACK_MS);
  });

  it("after DisableUser; enabling again lets new sign-ins work", async () => {
    const { userId, email, token } = await warmAccount();
    await h.admin.disableUser({ userId, disabled: true }, h.bearer(await h.adminToken()));
    expect(await refusedAfter(token, performance.now())).toBeLessThan(BOUND_MS + SLACK_MS);
    await h.admin.disableUser({ userId, disabled: false }, h.bearer(await h.adminToken()));
    const fresh = (await h.auth.signIn({ email, password: PASSWORD })).tokens!.accessToken;
    expect(await calls(fresh)).toEqual(["ok", "ok"]);
  });

  it("after a sign-out everywhere (ChangePassword): older tokens refused, the new session's token works", async () => {
    const { email, token } = await warmAccount();
    const other = (await h.auth.signIn({ email, password: PASSWORD })).tokens!.accessToken; // another device
    const changed = await h.auth.changePassword({ currentPassword: PASSWORD, newPassword: "a brand new passphrase 42" }, h.bearer(token));
    const since = performance.now();
    expect(await refusedAfter(token, since)).toBeLessThan(BOUND_MS + SLACK_MS);
    expect(await refusedAfter(other, since)).toBeLessThan(BOUND_MS + SLACK_MS);
    expect(await calls(changed.tokens!.accessToken)).toEqual(["ok", "ok"]);
  });

  it("after SignOutEverywhere: every session's refresh token and older access tokens refused, a new sign-in works", async () => {
    const { email, token } = await warmAccount();
    const other = (await h.auth.signIn({ email, password: PASSWORD })).tokens!; // another device
    expect(await calls(other.accessToken)).toEqual(["ok", "ok"]);
    const res = await h.auth.signOutEverywhere({}, h.bearer(token));
    const since = performance.now();
    // Both sessions were active (the sign-up's and the other device's) and are ended.
    expect(res.sessionsEnded).toBe(2);
    expect(await outcome(h.auth.refresh({ refreshToken: other.refreshToken }))).toBe(Code.Unauthenticated);
    expect(await refusedAfter(other.accessToken, since)).toBeLessThan(BOUND_MS + SLACK_MS);
    expect(await refusedAfter(token, since)).toBeLessThan(BOUND_MS + SLACK_MS);
    // The account itself is fine: signing in again gives a working session.
    await new Promise((r) => setTimeout(r, 5));
    const fresh = (await h.auth.signIn({ email, password: PASSWORD })).tokens!;
    expect(await calls(fresh.accessToken)).toEqual(["ok", "ok"]);
    // A second call ends only what is left (the new session).
    expect((await h.auth.signOutEverywhere({}, h.bearer(fresh.accessToken))).sessionsEnded).toBe(1);
    expect(await outcome(h.auth.signOutEverywhere({}))).toBe(Code.Unauthenticated);
  });

  it("a revocation of one user leaves the others alone", async () => {
    const bystander = await warmAccount();
    const { token } = await warmAccount();
    await h.auth.deleteAccount({ password: PASSWORD }, h.bearer(token));
    expect(await refusedAfter(token, performance.now())).toBeLessThan(BOUND_MS + SLACK_MS);
    expect(await calls(bystander.token)).toEqual(["ok", "ok"]);
  });
});
