// Every AuthService RPC end to end against real Postgres, Redis and NATS (through the server and the kit interceptor).
import { Code } from "@connectrpc/connect";
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserCreatedSchema, UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { jetstream } from "@nats-io/jetstream";
import { createLogger } from "@luna/kit";
import { createAuthModule } from "../src/index.js";
import { ADMIN_EMAIL, PASSWORD, rejection, startAuth, streamLastSeq, uniqueEmail, waitForEvent, type Harness } from "./harness.js";

describe("AuthService", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startAuth();
  });
  afterAll(() => h?.close());

  describe("SignUp", () => {
    it("creates the account with a normalised email, redeems the invite and signs in", async () => {
      const [code] = await h.invites(1);
      const email = uniqueEmail("mixed");
      const res = await h.auth.signUp({ email: `  ${email.toUpperCase()} `, password: PASSWORD, inviteCode: code!.toLowerCase(), displayName: " Ann " });
      expect(res.user).toMatchObject({ email, displayName: "Ann", role: Role.USER, disabled: false });
      expect((await h.auth.getMe({}, h.bearer(res.tokens!.accessToken))).user?.id).toBe(res.user!.id);
      const row = await h.db.user.findUniqueOrThrow({ where: { id: res.user!.id } });
      expect(row.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
      const invite = await h.db.invite.findFirstOrThrow({ where: { id: row.inviteId! } });
      expect(invite.usesLeft).toBe(0);
    });

    it("publishes user.created through the outbox, written in the sign-up transaction", async () => {
      const before = await streamLastSeq(h);
      const email = uniqueEmail();
      const res = await h.signUp(email);
      const userId = res.user!.id;
      const outbox = await h.db.outboxEvent.findMany({ where: { subject: "luna.events.user.created" } });
      const row = outbox.find((r) => Buffer.from(r.payload).includes(Buffer.from(userId)));
      expect(row).toBeDefined();
      const { message, msgId } = await waitForEvent(h, "luna.events.user.created", UserCreatedSchema, before, (m) => m.userId === userId);
      expect(message).toMatchObject({ userId, email, role: "user" });
      expect(message.meta?.subjectId).toBe(userId);
      expect(message.meta?.eventId).toBe(row!.id);
      expect(msgId).toBe(row!.id); // Nats-Msg-Id = event id (publisher dedup)
    });

    it("a failed sign-up writes nothing: no user, no event, the invite keeps its use", async () => {
      const email = uniqueEmail();
      await h.signUp(email);
      const [code] = await h.invites(1);
      const eventsBefore = await h.db.outboxEvent.count();
      const err = await rejection(h.auth.signUp({ email: email.toUpperCase(), password: PASSWORD, inviteCode: code!, displayName: "Dup" }));
      expect(err.code).toBe(Code.AlreadyExists);
      expect(await h.db.outboxEvent.count()).toBe(eventsBefore);
      expect(await h.db.user.count({ where: { email } })).toBe(1);
      // The invite was not consumed by the failed attempt.
      expect((await h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: code!, displayName: "Ok" })).user).toBeDefined();
    });

    it("each user.created outbox row belongs to exactly one account", async () => {
      const users = await h.db.user.count();
      const events = await h.db.outboxEvent.count({ where: { subject: "luna.events.user.created" } });
      expect(events).toBe(users);
    });

    it("refuses unknown, used-up, revoked and expired invites with one message", async () => {
      const [used] = await h.invites(1);
      await h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: used!, displayName: "First" });
      const [revoked] = await h.invites(1);
      const adminAuth = h.bearer(await h.adminToken());
      const list = await h.admin.listInvites({}, adminAuth);
      const revokedId = list.invites.find((i) => revoked!.replace(/-/g, "").startsWith(i.codeHint))!.id;
      await h.admin.revokeInvite({ inviteId: revokedId }, adminAuth);
      const expiring = await h.admin.createInvites({ count: 1, usesPerCode: 1, expiresIn: { seconds: 120n }, note: "" }, adminAuth);
      h.clock.advance(121_000);
      for (const code of [used!, revoked!, expiring.invites[0]!.code, "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ"]) {
        const err = await rejection(h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: code, displayName: "X" }));
        expect(err.code, code).toBe(Code.PermissionDenied);
        expect(err.rawMessage).toContain("invite code is not valid");
      }
    });

    it("refuses common passwords and bad fields without writing", async () => {
      const [code] = await h.invites(1);
      const users = await h.db.user.count();
      for (const [req, field] of [
        [{ password: "password1" }, "password"],
        [{ password: "Iloveyou!" }, "password"],
        [{ email: "nope" }, "email"],
        [{ displayName: "" }, "display_name"],
        [{ inviteCode: "" }, "invite_code"],
      ] as const) {
        const err = await rejection(h.auth.signUp({ ...{ email: uniqueEmail(), password: PASSWORD, inviteCode: code!, displayName: "X" }, ...req }));
        expect(err.code).toBe(Code.InvalidArgument);
        expect(err.rawMessage.startsWith(`${field}:`), err.rawMessage).toBe(true);
      }
      expect(await h.db.user.count()).toBe(users);
    });
  });

  describe("SignIn", () => {
    it("signs in with any case of the email and starts a new session", async () => {
      const email = uniqueEmail();
      await h.signUp(email);
      const res = await h.auth.signIn({ email: email.toUpperCase(), password: PASSWORD });
      expect(res.user?.email).toBe(email);
      expect(res.tokens?.refreshToken).toMatch(/^luna_rt_/);
      expect(await h.db.session.count({ where: { userId: res.user!.id } })).toBe(2);
    });

    it("answers a wrong password and an unknown email identically", async () => {
      const email = uniqueEmail();
      await h.signUp(email);
      const wrong = await rejection(h.auth.signIn({ email, password: "not the password at all" }));
      const unknown = await rejection(h.auth.signIn({ email: uniqueEmail("ghost"), password: "not the password at all" }));
      expect(wrong.code).toBe(Code.Unauthenticated);
      expect(unknown.code).toBe(Code.Unauthenticated);
      expect(unknown.rawMessage).toBe(wrong.rawMessage);
    });

    it("refuses disabled accounts (after the password checked out) and deleted ones", async () => {
      const email = uniqueEmail();
      const res = await h.signUp(email);
      const adminAuth = h.bearer(await h.adminToken());
      await h.admin.disableUser({ userId: res.user!.id, disabled: true }, adminAuth);
      expect((await rejection(h.auth.signIn({ email, password: "wrong password here" }))).code).toBe(Code.Unauthenticated);
      const err = await rejection(h.auth.signIn({ email, password: PASSWORD }));
      expect(err.code).toBe(Code.PermissionDenied);
      expect(err.rawMessage).toContain("disabled");
      // Refresh is refused too, and disabling revoked the sessions.
      expect((await rejection(h.auth.refresh({ refreshToken: res.tokens!.refreshToken }))).code).toBe(Code.Unauthenticated);
      await h.admin.disableUser({ userId: res.user!.id, disabled: false }, adminAuth);
      expect((await h.auth.signIn({ email, password: PASSWORD })).user?.disabled).toBe(false);
    });
  });

  it("upgrades a password hash to stronger argon2 parameters at the next sign-in", async () => {
    const email = uniqueEmail();
    const { user } = await h.signUp(email);
    const log = createLogger({ service: "auth-test", level: "silent" });
    const stronger = await createAuthModule({ ...h.config, AUTH_ARGON2_MEMORY_KIB: 24_576, AUTH_ARGON2_ITERATIONS: 3 },
      { log, redis: h.redis, js: jetstream(h.nc), databaseUrl: h.database.url });
    try {
      await stronger.accounts.signIn({ email, password: PASSWORD }, { ip: h.ip });
      const row = await h.db.user.findUniqueOrThrow({ where: { id: user!.id } });
      expect(row.passwordHash).toMatch(/^\$argon2id\$v=19\$m=24576,t=3,p=1\$/);
      expect((await h.auth.signIn({ email, password: PASSWORD })).user?.id).toBe(user!.id);
    } finally {
      await stronger.stop();
    }
  });

  describe("GetMe and UpdateProfile", () => {
    it("return and change the caller's own account", async () => {
      const res = await h.signUp();
      const auth = h.bearer(res.tokens!.accessToken);
      expect((await h.auth.getMe({}, auth)).user).toMatchObject({ id: res.user!.id, displayName: "Test User" });
      const updated = await h.auth.updateProfile({ displayName: "  New Name  " }, auth);
      expect(updated.user?.displayName).toBe("New Name");
      expect((await h.auth.getMe({}, auth)).user?.displayName).toBe("New Name");
      const err = await rejection(h.auth.updateProfile({ displayName: "x".repeat(65) }, auth));
      expect(err.code).toBe(Code.InvalidArgument);
      expect((await h.auth.getMe({}, auth)).user?.displayName).toBe("New Name");
    });
  });

  describe("ChangePassword", () => {
    it("needs the current password, ends every other session, returns a working new session", async () => {
      const email = uniqueEmail();
      const first = await h.signUp(email);
      const second = await h.auth.signIn({ email, password: PASSWORD });
      const auth = h.bearer(first.tokens!.accessToken);
      const wrong = await rejection(h.auth.changePassword({ currentPassword: "not my password", newPassword: "a brand new passphrase" }, auth));
      expect(wrong.code).toBe(Code.PermissionDenied);
      const common = await rejection(h.auth.changePassword({ currentPassword: PASSWORD, newPassword: "baseball" }, auth));
      expect(common.code).toBe(Code.InvalidArgument);

      const res = await h.auth.changePassword({ currentPassword: PASSWORD, newPassword: "a brand new passphrase" }, auth);
      for (const old of [first.tokens!.refreshToken, second.tokens!.refreshToken]) {
        expect((await rejection(h.auth.refresh({ refreshToken: old }))).code).toBe(Code.Unauthenticated);
      }
      expect((await h.auth.refresh({ refreshToken: res.tokens!.refreshToken })).tokens).toBeDefined();
      expect((await rejection(h.auth.signIn({ email, password: PASSWORD }))).code).toBe(Code.Unauthenticated);
      expect((await h.auth.signIn({ email, password: "a brand new passphrase" })).user?.email).toBe(email);
    });
  });

  describe("DeleteAccount", () => {
    it("confirms the password, scrubs personal data, ends sessions and publishes user.deleted", async () => {
      const email = uniqueEmail();
      const res = await h.signUp(email);
      const userId = res.user!.id;
      const auth = h.bearer(res.tokens!.accessToken);
      expect((await rejection(h.auth.deleteAccount({ password: "wrong password!" }, auth))).code).toBe(Code.PermissionDenied);
      const before = await streamLastSeq(h);
      await h.auth.deleteAccount({ password: PASSWORD }, auth);

      const row = await h.db.user.findUniqueOrThrow({ where: { id: userId } });
      expect(row).toMatchObject({ email: null, displayName: "", passwordHash: null });
      expect(row.deletedAt).not.toBeNull();
      expect(await h.db.session.count({ where: { userId } })).toBe(0);
      const { message } = await waitForEvent(h, "luna.events.user.deleted", UserDeletedSchema, before, (m) => m.userId === userId);
      expect(message.meta?.subjectId).toBe(userId);

      expect((await rejection(h.auth.refresh({ refreshToken: res.tokens!.refreshToken }))).code).toBe(Code.Unauthenticated);
      expect((await rejection(h.auth.signIn({ email, password: PASSWORD }))).code).toBe(Code.Unauthenticated);
      expect((await rejection(h.auth.getMe({}, auth))).code).toBe(Code.NotFound);
      // The email is free again.
      expect((await h.signUp(email)).user?.id).not.toBe(userId);
    });

    it("the last admin cannot delete their account", async () => {
      const err = await rejection(h.auth.deleteAccount({ password: "a very secret admin passphrase" }, h.bearer(await h.adminToken())));
      expect(err.code).toBe(Code.FailedPrecondition);
      expect(await h.db.user.count({ where: { email: ADMIN_EMAIL } })).toBe(1);
    });
  });
});

describe("bootstrap", () => {
  it("creates the first admin from configuration once, and publishes user.created for it", async () => {
    const h = await startAuth();
    try {
      const admins = await h.db.user.findMany({ where: { role: "admin" } });
      expect(admins.map((a) => a.email)).toEqual([ADMIN_EMAIL]);
      await h.module.start(); // a restart does not create another
      expect(await h.db.user.count({ where: { role: "admin" } })).toBe(1);
      expect(await h.db.outboxEvent.count({ where: { subject: "luna.events.user.created" } })).toBe(1);
    } finally {
      await h.close();
    }
  });

  it("generates a password for the first admin when none is configured", async () => {
    const h = await startAuth({ AUTH_ADMIN_PASSWORD: "" });
    try {
      const admin = await h.db.user.findFirstOrThrow({ where: { role: "admin" } });
      expect(admin.passwordHash).toMatch(/^\$argon2id\$/);
    } finally {
      await h.close();
    }
  });

  it("bootstrapDev writes usable invite codes once and keeps them until they are used", async () => {
    const h = await startAuth();
    const file = join(tmpdir(), `luna-invites-${process.pid}-${Date.now()}`, "invites.txt");
    try {
      const codes = await h.module.bootstrapDev({ inviteCount: 3, invitesFile: file });
      expect(codes).toHaveLength(3);
      expect((await readFile(file, "utf8")).trim().split("\n")).toEqual(codes);
      expect(await h.module.bootstrapDev({ inviteCount: 3, invitesFile: file })).toEqual(codes);
      expect(await h.db.invite.count()).toBe(3);
      for (const code of codes) await h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: code, displayName: "Dev" });
      const fresh = await h.module.bootstrapDev({ inviteCount: 2, invitesFile: file });
      expect(fresh).toHaveLength(2);
      expect(fresh.some((c) => codes.includes(c))).toBe(false);
      expect((await readFile(file, "utf8")).trim().split("\n")).toEqual(fresh);
    } finally {
      await rm(join(file, ".."), { recursive: true, force: true });
      await h.close();
    }
  });

  it("open sign-up needs no invite code", async () => {
    const h = await startAuth({ AUTH_OPEN_SIGNUP: "true" });
    try {
      const res = await h.auth.signUp({ email: uniqueEmail(), password: PASSWORD, inviteCode: "", displayName: "Open" });
      expect(res.user?.id).toBeDefined();
    } finally {
      await h.close();
    }
  });
});
