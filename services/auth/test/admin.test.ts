// AuthAdminService end to end: invites, accounts, roles, disabling; admin-only access.
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { canonicalInviteCode, hashInviteCode } from "../src/domain/invite-code.js";
import { PASSWORD, rejection, startAuth, uniqueEmail, type Harness } from "./harness.js";

describe("AuthAdminService", () => {
  let h: Harness;
  let adminAuth: { headers: Record<string, string> };
  let adminId: string;
  beforeAll(async () => {
    h = await startAuth();
    adminAuth = h.bearer(await h.adminToken());
    adminId = (await h.auth.getMe({}, adminAuth)).user!.id;
  });
  afterAll(() => h?.close());

  it("is closed to users", async () => {
    const user = h.bearer((await h.signUp()).tokens!.accessToken);
    for (const call of [
      () => h.admin.createInvites({ count: 1, usesPerCode: 1 }, user),
      () => h.admin.listInvites({}, user),
      () => h.admin.listUsers({}, user),
      () => h.admin.setUserRole({ userId: adminId, role: Role.USER }, user),
      () => h.admin.disableUser({ userId: adminId, disabled: true }, user),
      () => h.admin.revokeInvite({ inviteId: adminId }, user),
    ]) {
      expect((await rejection(call())).code).toBe(Code.PermissionDenied);
    }
    expect((await rejection(h.admin.listUsers({}))).code).toBe(Code.Unauthenticated);
  });

  it("CreateInvites returns the codes once; only their hashes are stored", async () => {
    const res = await h.admin.createInvites({ count: 3, usesPerCode: 2, expiresIn: { seconds: 86_400n }, note: "for the beta" }, adminAuth);
    expect(res.invites).toHaveLength(3);
    for (const inv of res.invites) {
      expect(inv.code).toMatch(/^[0-9A-Z]{5}(-[0-9A-Z]{5}){3}$/);
      expect(inv).toMatchObject({ usesTotal: 2, usesLeft: 2, note: "for the beta", createdByUserId: adminId, codeHint: inv.code.slice(0, 4) });
      expect(inv.expiresAt).toBeDefined();
      const row = await h.db.invite.findUniqueOrThrow({ where: { id: inv.id } });
      expect(row.codeHash).toBe(hashInviteCode(canonicalInviteCode(inv.code)!));
    }
    const listed = await h.admin.listInvites({}, adminAuth);
    expect(listed.invites.every((i) => i.code === "")).toBe(true);
  });

  it("ListInvites pages newest first and hides inactive invites unless asked", async () => {
    const created = (await h.admin.createInvites({ count: 5, usesPerCode: 1, note: "paging" }, adminAuth)).invites.map((i) => i.id);
    await h.admin.revokeInvite({ inviteId: created[0]! }, adminAuth);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await h.admin.listInvites({ page: { pageSize: 2, pageToken } }, adminAuth);
      expect(page.invites.length).toBeLessThanOrEqual(2);
      seen.push(...page.invites.map((i) => i.id));
      pageToken = page.page?.nextPageToken ?? "";
    } while (pageToken);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).not.toContain(created[0]);
    for (const id of created.slice(1)) expect(seen).toContain(id);
    const all = await h.admin.listInvites({ includeInactive: true, page: { pageSize: 200 } }, adminAuth);
    expect(all.invites.map((i) => i.id)).toContain(created[0]);
    const times = all.invites.map((i) => Number(i.createdAt!.seconds));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
  });

  it("RevokeInvite makes a code unusable, is idempotent, and 404s unknown ids", async () => {
    const inv = (await h.admin.createInvites({ count: 1, usesPerCode: 5 }, adminAuth)).invites[0]!;
    const revoked = await h.admin.revokeInvite({ inviteId: inv.id }, adminAuth);
    expect(revoked.invite?.revokedAt).toBeDefined();
    expect((await h.admin.revokeInvite({ inviteId: inv.id }, adminAuth)).invite?.revokedAt).toEqual(revoked.invite?.revokedAt);
    const err = await rejection(h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: inv.code, displayName: "R" }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect((await rejection(h.admin.revokeInvite({ inviteId: "00000000-0000-4000-8000-000000000000" }, adminAuth))).code).toBe(Code.NotFound);
  });

  it("ListUsers pages newest first, filters by email prefix (wildcards are literal) and hides deleted accounts", async () => {
    const tag = `pfx${Date.now()}`;
    const emails = [`${tag}-a@example.com`, `${tag}-b@example.com`, `${tag}-c@example.com`];
    for (const e of emails) await h.signUp(e);
    const first = await h.admin.listUsers({ emailPrefix: tag.toUpperCase(), page: { pageSize: 2 } }, adminAuth);
    expect(first.users.map((u) => u.email)).toEqual([emails[2], emails[1]]);
    const second = await h.admin.listUsers({ emailPrefix: tag, page: { pageSize: 2, pageToken: first.page!.nextPageToken } }, adminAuth);
    expect(second.users.map((u) => u.email)).toEqual([emails[0]]);
    expect(second.page?.nextPageToken).toBe("");
    expect((await h.admin.listUsers({ emailPrefix: "%" }, adminAuth)).users).toHaveLength(0);
    expect((await h.admin.listUsers({ emailPrefix: `${tag}_` }, adminAuth)).users).toHaveLength(0);

    const gone = await h.signUp(`${tag}-z@example.com`);
    await h.auth.deleteAccount({ password: PASSWORD }, h.bearer(gone.tokens!.accessToken));
    expect((await h.admin.listUsers({ emailPrefix: tag }, adminAuth)).users.map((u) => u.id)).not.toContain(gone.user!.id);
  });

  it("SetUserRole promotes and demotes others; new tokens carry the role; never one's own", async () => {
    const email = uniqueEmail();
    const res = await h.signUp(email);
    const promoted = await h.admin.setUserRole({ userId: res.user!.id, role: Role.ADMIN }, adminAuth);
    expect(promoted.user?.role).toBe(Role.ADMIN);
    const asAdmin = await h.auth.refresh({ refreshToken: res.tokens!.refreshToken });
    expect((await h.admin.listUsers({}, h.bearer(asAdmin.tokens!.accessToken))).users.length).toBeGreaterThan(0);
    await h.admin.setUserRole({ userId: res.user!.id, role: Role.USER }, adminAuth);
    const self = await rejection(h.admin.setUserRole({ userId: adminId, role: Role.USER }, adminAuth));
    expect(self.code).toBe(Code.FailedPrecondition);
    expect((await rejection(h.admin.setUserRole({ userId: "00000000-0000-4000-8000-000000000000", role: Role.USER }, adminAuth))).code).toBe(Code.NotFound);
  });

  it("DisableUser ends the account's sessions; a disabled account cannot refresh even with a live session", async () => {
    const email = uniqueEmail();
    const res = await h.signUp(email);
    const disabled = await h.admin.disableUser({ userId: res.user!.id, disabled: true }, adminAuth);
    expect(disabled.user?.disabled).toBe(true);
    expect(await h.db.session.count({ where: { userId: res.user!.id, revokedAt: null } })).toBe(0);
    await h.admin.disableUser({ userId: res.user!.id, disabled: false }, adminAuth);

    // Disabled directly in the database (no session revocation): refresh still refuses.
    const live = await h.auth.signIn({ email, password: PASSWORD });
    await h.db.user.update({ where: { id: res.user!.id }, data: { disabledAt: new Date() } });
    const err = await rejection(h.auth.refresh({ refreshToken: live.tokens!.refreshToken }));
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.rawMessage).toContain("disabled");

    expect((await rejection(h.admin.disableUser({ userId: adminId, disabled: true }, adminAuth))).code).toBe(Code.FailedPrecondition);
  });

  it("bad input on every field is INVALID_ARGUMENT and writes nothing", async () => {
    const invites = await h.db.invite.count();
    for (const [call, field] of [
      [() => h.admin.createInvites({ count: 0, usesPerCode: 1 }, adminAuth), "count"],
      [() => h.admin.createInvites({ count: 1, usesPerCode: -1 }, adminAuth), "uses_per_code"],
      [() => h.admin.createInvites({ count: 1, usesPerCode: 1, expiresIn: { seconds: -1n } }, adminAuth), "expires_in"],
      [() => h.admin.createInvites({ count: 1, usesPerCode: 1, note: "x".repeat(1000) }, adminAuth), "note"],
      [() => h.admin.listInvites({ page: { pageSize: -3 } }, adminAuth), "page.page_size"],
      [() => h.admin.revokeInvite({ inviteId: "../etc" }, adminAuth), "invite_id"],
      [() => h.admin.listUsers({ page: { pageToken: "bogus" } }, adminAuth), "page.page_token"],
      [() => h.admin.setUserRole({ userId: adminId, role: Role.UNSPECIFIED }, adminAuth), "role"],
      [() => h.admin.disableUser({ userId: "x" }, adminAuth), "user_id"],
    ] as const) {
      const err = await rejection(call());
      expect(err.code, field).toBe(Code.InvalidArgument);
      expect(err.rawMessage.startsWith(`${field}:`), err.rawMessage).toBe(true);
    }
    expect(await h.db.invite.count()).toBe(invites);
  });
});
