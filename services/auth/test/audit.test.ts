// The audit log end to end (issue 20): each security/admin action records one event with actor, subject, time,
// request id and source, in the action's own transaction; AuthAdminService.ListAuditEvents lists them (admins only,
// paginated, filterable); account deletion clears the account's email from the log; the table is append-only.
import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import type { AuditEvent } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { PASSWORD, randomIp, rejection, startAuth, uniqueEmail, type Harness } from "./harness.js";

describe("audit log", () => {
  let h: Harness;
  let adminAuth: { headers: Record<string, string> };
  let adminId: string;
  beforeAll(async () => {
    // One free failure: the second wrong password in a row is a lockout (sign_in.locked).
    h = await startAuth({ AUTH_SIGNIN_FREE_FAILURES: "1", AUTH_SIGNIN_BASE_DELAY: "1s", AUTH_SIGNIN_MAX_DELAY: "1s" });
    adminAuth = h.bearer(await h.adminToken());
    adminId = (await h.auth.getMe({}, adminAuth)).user!.id;
  });
  afterAll(() => h?.close());

  /** Every event (all pages) matching the filter, newest first. */
  async function events(filter: { userId?: string; kinds?: string[] } = {}): Promise<AuditEvent[]> {
    const out: AuditEvent[] = [];
    let pageToken = "";
    do {
      const r = await h.admin.listAuditEvents({ userId: filter.userId ?? "", kinds: filter.kinds ?? [], page: { pageSize: 200, pageToken } }, adminAuth);
      out.push(...r.events);
      pageToken = r.page?.nextPageToken ?? "";
    } while (pageToken !== "");
    return out;
  }
  const only = async (kind: string, userId?: string) => {
    const found = await events({ kinds: [kind], userId });
    expect(found, `${kind} events`).toHaveLength(1);
    return found[0]!;
  };
  const withRequestId = (auth: { headers: Record<string, string> }, id: string) => ({ headers: { ...auth.headers, "x-request-id": id } });

  it("records each kind once, with actor, subject, source, request id and time; deletion clears the email", async () => {
    const ip = randomIp();
    const from = h.clientsFrom(ip);
    const email = uniqueEmail("audited");
    const [code] = await h.invites(1);
    const signUpRid = `signup-${randomUUID()}`;
    const up = await from.auth.signUp({ email, password: PASSWORD, inviteCode: code!, displayName: "Audited" }, { headers: { "x-request-id": signUpRid } });
    const userId = up.user!.id;
    const me = h.bearer(up.tokens!.accessToken);

    const signUp = await only("sign_up", userId);
    expect(signUp).toMatchObject({ actorId: userId, subjectId: userId, subjectEmail: email, source: ip, requestId: signUpRid });
    expect(JSON.parse(signUp.detailsJson)).toHaveProperty("inviteId");
    expect(Math.abs(Number(signUp.time!.seconds) * 1000 - h.clock.now().getTime())).toBeLessThan(60_000);

    // A wrong password, then (one free failure) a lockout; a failure for an unknown email names no account.
    expect((await rejection(from.auth.signIn({ email, password: "wrong password entirely" }))).code).toBe(Code.Unauthenticated);
    expect((await rejection(from.auth.signIn({ email, password: "wrong password entirely" }))).code).toBe(Code.ResourceExhausted);
    expect(await only("sign_in.failed", userId)).toMatchObject({ actorId: "", subjectId: userId, subjectEmail: email, source: ip });
    const locked = (await events({ kinds: ["sign_in.locked"] })).filter((e) => e.subjectEmail === email);
    expect(locked).toHaveLength(1);
    expect(locked[0]).toMatchObject({ source: ip, subjectId: "" });
    const ghost = uniqueEmail("ghost");
    await rejection(from.auth.signIn({ email: ghost, password: "whatever it is here" }));
    expect((await events({ kinds: ["sign_in.failed"] })).filter((e) => e.subjectEmail === ghost)).toMatchObject([{ subjectId: "", source: ip }]);
    // Let the (1 s) lockout pass for the rest of the test.
    h.clock.advance(2_000);
    await new Promise((r) => setTimeout(r, 1_500));

    const changed = await from.auth.changePassword({ currentPassword: PASSWORD, newPassword: `${PASSWORD} 2` }, withRequestId(me, "rid-password"));
    expect(await only("password.changed", userId)).toMatchObject({ actorId: userId, subjectId: userId, source: ip, requestId: "rid-password" });
    const me2 = h.bearer(changed.tokens!.accessToken);

    const key = (await from.auth.createApiKey({ name: "ci" }, me2)).apiKey!;
    await from.auth.revokeApiKey({ apiKeyId: key.id }, me2);
    await from.auth.revokeApiKey({ apiKeyId: key.id }, me2); // a second revocation changes nothing and records nothing
    expect(await only("api_key.created", userId)).toMatchObject({ actorId: userId, subjectId: userId, source: ip });
    const revoked = await only("api_key.revoked", userId);
    expect(revoked).toMatchObject({ actorId: userId, subjectId: userId, source: ip });
    expect(JSON.parse(revoked.detailsJson)).toMatchObject({ apiKeyId: key.id });

    // Admin actions, from the admin's own address.
    const adminIp = randomIp();
    const admin = h.clientsFrom(adminIp).admin;
    const invites = (await admin.createInvites({ count: 2, usesPerCode: 1, note: "audit" }, adminAuth)).invites;
    const created = (await events({ kinds: ["invites.created"], userId: adminId })).filter((e) => e.source === adminIp);
    expect(created).toHaveLength(1);
    expect(JSON.parse(created[0]!.detailsJson).inviteIds).toEqual(invites.map((i) => i.id));
    await admin.revokeInvite({ inviteId: invites[0]!.id }, adminAuth);
    await admin.revokeInvite({ inviteId: invites[0]!.id }, adminAuth);
    expect((await events({ kinds: ["invite.revoked"] })).filter((e) => JSON.parse(e.detailsJson).inviteId === invites[0]!.id))
      .toMatchObject([{ actorId: adminId, source: adminIp }]);

    await admin.setUserRole({ userId, role: Role.ADMIN }, adminAuth);
    await admin.setUserRole({ userId, role: Role.ADMIN }, adminAuth); // no change, no event
    const role = await only("role.changed", userId);
    expect(role).toMatchObject({ actorId: adminId, subjectId: userId, source: adminIp });
    expect(JSON.parse(role.detailsJson)).toEqual({ from: "user", to: "admin" });
    await admin.setUserRole({ userId, role: Role.USER }, adminAuth);

    await admin.disableUser({ userId, disabled: true }, adminAuth);
    expect(await only("account.disabled", userId)).toMatchObject({ actorId: adminId, subjectId: userId, source: adminIp });
    await admin.disableUser({ userId, disabled: false }, adminAuth);
    expect(await only("account.enabled", userId)).toMatchObject({ actorId: adminId, subjectId: userId });

    // A refresh token replayed after the grace window revokes its session: recorded against the account.
    const session = await from.auth.signIn({ email, password: `${PASSWORD} 2` });
    await from.auth.refresh({ refreshToken: session.tokens!.refreshToken });
    h.clock.advance(h.config.AUTH_REFRESH_GRACE + 1_000);
    await rejection(from.auth.refresh({ refreshToken: session.tokens!.refreshToken }));
    const replay = await only("session.revoked", userId);
    expect(replay).toMatchObject({ subjectId: userId, source: ip });
    expect(JSON.parse(replay.detailsJson)).toMatchObject({ reason: "replay" });

    const fresh = await from.auth.signIn({ email, password: `${PASSWORD} 2` });
    await from.auth.deleteAccount({ password: `${PASSWORD} 2` }, h.bearer(fresh.tokens!.accessToken));
    expect(await only("account.deleted", userId)).toMatchObject({ actorId: userId, subjectId: userId, source: ip, subjectEmail: "" });
    // Personal data: the deleted account's email is gone from every row, the lockout row without an account id too.
    const rows = await h.db.auditEvent.findMany({ where: { OR: [{ subjectId: userId }, { subjectEmail: email }] } });
    expect(rows).toHaveLength(11); // sign_up … account.deleted above, each once
    expect(rows.filter((r) => r.subjectEmail !== null)).toEqual([]);
    // The lockout row had no account id, only the email: it keeps its place in the log without the email.
    expect(await h.db.auditEvent.findMany({ where: { kind: "sign_in.locked", source: ip } })).toMatchObject([{ subjectEmail: null, subjectId: null }]);
    expect((await events({ kinds: ["sign_in.locked"] })).filter((e) => e.subjectEmail === email)).toEqual([]);
    // Other accounts' rows keep theirs.
    expect((await events({ kinds: ["sign_in.failed"] })).filter((e) => e.subjectEmail === ghost)).toHaveLength(1);
  });

  it("writes the event in the action's transaction: no event when the action fails, no action when the event fails", async () => {
    const email = uniqueEmail("dup");
    await h.signUp(email);
    const before = (await events({ kinds: ["sign_up"] })).length;
    const [code] = await h.invites(1);
    expect((await rejection(h.auth.signUp({ email, password: PASSWORD, inviteCode: code!, displayName: "Dup" }))).code).toBe(Code.AlreadyExists);
    expect(await events({ kinds: ["sign_up"] })).toHaveLength(before);

    // The audit insert fails (a test-only trigger): the role change it records must not happen either.
    const target = (await h.signUp()).user!.id;
    await h.db.$executeRawUnsafe(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit down'; END $$`);
    await h.db.$executeRawUnsafe(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit()`);
    try {
      expect((await rejection(h.admin.setUserRole({ userId: target, role: Role.ADMIN }, adminAuth))).code).toBe(Code.Internal);
      expect((await rejection(h.admin.disableUser({ userId: target, disabled: true }, adminAuth))).code).toBe(Code.Internal);
    } finally {
      await h.db.$executeRawUnsafe(`DROP TRIGGER refuse_audit ON audit_events`);
      await h.db.$executeRawUnsafe(`DROP FUNCTION refuse_audit()`);
    }
    const row = await h.db.user.findUniqueOrThrow({ where: { id: target } });
    expect(row.role).toBe("user");
    expect(row.disabledAt).toBeNull();
    expect(await events({ userId: target, kinds: ["role.changed", "account.disabled"] })).toEqual([]);
  });

  it("is append-only: UPDATE and DELETE are refused by the database", async () => {
    await h.invites(1); // at least one row (invites.created), whatever ran before
    const [any] = await h.db.auditEvent.findMany({ take: 1, where: { subjectEmail: null } });
    expect(any).toBeDefined();
    await expect(h.db.$executeRawUnsafe(`DELETE FROM audit_events WHERE id = '${any!.id}'`)).rejects.toThrow(/append-only/);
    await expect(h.db.$executeRawUnsafe(`UPDATE audit_events SET kind = 'x' WHERE id = '${any!.id}'`)).rejects.toThrow(/append-only/);
    await expect(h.db.$executeRawUnsafe(`UPDATE audit_events SET subject_email = 'someone@else.test' WHERE id = '${any!.id}'`)).rejects.toThrow(/append-only/);
    expect(await h.db.auditEvent.findUniqueOrThrow({ where: { id: any!.id } })).toEqual(any);
  });

  it("ListAuditEvents is for admins only", async () => {
    const user = h.bearer((await h.signUp()).tokens!.accessToken);
    expect((await rejection(h.admin.listAuditEvents({}, user))).code).toBe(Code.PermissionDenied);
    expect((await rejection(h.admin.listAuditEvents({}))).code).toBe(Code.Unauthenticated);
  });

  it("pages newest first without repeats and filters by user and kind; bad filters and tokens are INVALID_ARGUMENT", async () => {
    const users = [(await h.signUp()).user!.id, (await h.signUp()).user!.id];
    for (const u of users) {
      await h.admin.setUserRole({ userId: u, role: Role.ADMIN }, adminAuth);
      await h.admin.setUserRole({ userId: u, role: Role.USER }, adminAuth);
      await h.admin.disableUser({ userId: u, disabled: true }, adminAuth);
    }
    const all = await events();
    const seen: AuditEvent[] = [];
    let pageToken = "";
    do {
      const r = await h.admin.listAuditEvents({ page: { pageSize: 3, pageToken } }, adminAuth);
      expect(r.events.length).toBeLessThanOrEqual(3);
      seen.push(...r.events);
      pageToken = r.page!.nextPageToken;
    } while (pageToken !== "");
    expect(seen.map((e) => e.id)).toEqual(all.map((e) => e.id));
    expect(new Set(seen.map((e) => e.id)).size).toBe(seen.length);
    const times = seen.map((e) => Number(e.time!.seconds) * 1e9 + e.time!.nanos);
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    const mine = await events({ userId: users[0] });
    expect(mine.map((e) => e.kind).sort()).toEqual(["account.disabled", "role.changed", "role.changed", "sign_up"]);
    expect(mine.every((e) => e.actorId === users[0] || e.subjectId === users[0])).toBe(true);
    const roles = await events({ kinds: ["role.changed"], userId: users[1] });
    expect(roles).toHaveLength(2);
    expect(await events({ kinds: ["role.changed", "account.disabled", "role.changed"], userId: users[1] })).toHaveLength(3);
    expect(await events({ userId: randomUUID() })).toEqual([]);

    const bad: Array<[Parameters<typeof h.admin.listAuditEvents>[0], string]> = [
      [{ userId: "not-a-uuid" }, "user_id"],
      [{ kinds: ["role.changd"] }, "kinds"],
      [{ kinds: [""] }, "kinds"],
      [{ page: { pageToken: "garbage" } }, "page_token"],
      [{ page: { pageToken: Buffer.from('{"t":"2026-01-01T00:00:00Z","id":"x"}').toString("base64url") } }, "page_token"],
      [{ page: { pageSize: -1 } }, "page_size"],
    ];
    for (const [req, field] of bad) {
      const err = await rejection(h.admin.listAuditEvents(req, adminAuth));
      expect(err.code, JSON.stringify(req)).toBe(Code.InvalidArgument);
      expect(err.message).toContain(field);
    }
  });
});
