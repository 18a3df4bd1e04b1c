import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { authInterceptor, clientAddressKey, invalidPageSize, invalidPageToken, type JwtVerifier } from "@luna/kit";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { AuthAdminService } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { loadCommonPasswords } from "../domain/password-policy.js";
import { generateRefreshToken } from "../domain/refresh-token.js";
import { encodePageToken } from "../domain/page-token.js";
import { authRules, routes, type AccountsApi } from "./routes.js";

// Handler tests: in memory, with a fake verifier ("Bearer user:<id>" / "Bearer admin:<id>") and fake use cases that
// record calls. A rejected request must never reach the use cases (no partial write).
const USER = "0b7e8a5e-8f35-4a8e-9a57-2f1f4b0c3d11";
const OTHER = "5c1b8e3a-0d4f-4c3b-8f0e-2a9d7c6b5e41";
const GOOD = { email: "ann@example.com", password: "correct horse battery staple", inviteCode: "7KQ2M-XD9RT-0A1BC-DEFGH", displayName: "Ann" };
const now = new Date("2026-01-01T00:00:00Z");
const fakeUser = { id: USER, email: "ann@example.com", displayName: "Ann", passwordHash: null, role: "user", inviteId: null, disabledAt: null, deletedAt: null, createdAt: now, updatedAt: now };
const fakeTokens = { accessToken: "a", accessTokenExpiresAt: now, refreshToken: "r", refreshTokenExpiresAt: now };

/** Stands in for the kit's server, which resolves the client address of each call (tested in the kit). */
const serverResolvedAddress: Interceptor = (next) => (req) => {
  const address = req.header.get("x-test-client-address");
  if (address) req.contextValues.set(clientAddressKey, address);
  return next(req);
};

function setup(opts: { openSignUp?: boolean } = {}) {
  const calls: Array<{ method: string; args: unknown[] }> = [];
  const record = (method: string, result: unknown) => async (...args: unknown[]) => {
    calls.push({ method, args });
    return result;
  };
  const accounts: AccountsApi = {
    signUp: record("signUp", { user: fakeUser, tokens: fakeTokens }),
    signIn: record("signIn", { user: fakeUser, tokens: fakeTokens }),
    refresh: record("refresh", fakeTokens),
    signOut: record("signOut", undefined),
    getMe: record("getMe", fakeUser),
    updateProfile: record("updateProfile", fakeUser),
    changePassword: record("changePassword", fakeTokens),
    deleteAccount: record("deleteAccount", undefined),
    createInvites: record("createInvites", []),
    listInvites: record("listInvites", { items: [] }),
    revokeInvite: record("revokeInvite", { id: OTHER, codeHint: "7KQ2", usesTotal: 1, usesLeft: 0, expiresAt: null, note: "", createdAt: now, createdByUserId: null, revokedAt: now, codeHash: "x" }),
    listUsers: record("listUsers", { items: [fakeUser] }),
    setUserRole: record("setUserRole", fakeUser),
    setUserDisabled: record("setUserDisabled", fakeUser),
  } as unknown as AccountsApi;
  const verifier: JwtVerifier = {
    async verify(token) {
      const [role, id] = token.split(":");
      if ((role !== "user" && role !== "admin") || !id) throw new ConnectError("invalid token", Code.Unauthenticated);
      return { userId: id, role, tokenId: "t" };
    },
  };
  const transport = createRouterTransport(
    routes({ accounts, policy: { minLength: 8, maxLength: 256, common: loadCommonPasswords() }, openSignUp: opts.openSignUp ?? false }),
    { router: { interceptors: [serverResolvedAddress, authInterceptor({ verifier, rules: authRules })] } },
  );
  return { calls, auth: createClient(AuthService, transport), admin: createClient(AuthAdminService, transport) };
}

const as = (who: string) => ({ headers: { authorization: `Bearer ${who}` } });

async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

async function expectInvalid(calls: unknown[], p: Promise<unknown>, field: string, text?: string) {
  const err = await rejection(p);
  expect(err.code, err.message).toBe(Code.InvalidArgument);
  expect(err.rawMessage.startsWith(`${field}: `), err.rawMessage).toBe(true);
  if (text) expect(err.rawMessage).toContain(text);
  expect(calls).toHaveLength(0);
}

describe("AuthService.SignUp validation", () => {
  it.each([
    ["email", { email: "" }, "is required"],
    ["email", { email: "not-an-email" }, "not a valid email"],
    ["email", { email: "a".repeat(5000) + "@x.io" }, "at most 254"],
    ["password", { password: "" }, "is required"],
    ["password", { password: "short" }, "at least 8"],
    ["password", { password: "p".repeat(257) }, "at most 256"],
    ["password", { password: "p".repeat(100_000) }, "at most 256"],
    ["password", { password: "password123" }, "most commonly used"],
    ["invite_code", { inviteCode: "" }, "is required"],
    ["invite_code", { inviteCode: "NOT-A-CODE" }, "is not an invite code"],
    ["invite_code", { inviteCode: "../../etc/passwd" }, "is not an invite code"],
    ["display_name", { displayName: "" }, "is required"],
    ["display_name", { displayName: "x".repeat(65) }, "at most 64"],
    ["display_name", { displayName: "bad\u0000name" }, "control"],
  ])("%s: %j → INVALID_ARGUMENT", async (field, patch, text) => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.signUp({ ...GOOD, ...patch }), field, text);
  });

  it("passes normalised input to the use case", async () => {
    const { calls, auth } = setup();
    const res = await auth.signUp({ ...GOOD, email: " Ann@Example.COM ", inviteCode: "7kq2m xd9rt oa1bc defgh", displayName: "  Ann " });
    expect(calls).toEqual([{ method: "signUp", args: [{ email: "ann@example.com", password: GOOD.password, inviteCode: "7KQ2MXD9RT0A1BCDEFGH", displayName: "Ann" }, { ip: "unknown" }] }]);
    expect(res.user?.email).toBe("ann@example.com");
    expect(res.tokens?.tokenType).toBe("Bearer");
  });

  it("takes the client IP the kit's server resolved (clientAddressKey), not the raw x-forwarded-for", async () => {
    const { calls, auth } = setup();
    await auth.signUp(GOOD, { headers: { "x-forwarded-for": "198.51.100.4", "x-test-client-address": "203.0.113.9" } });
    expect(calls[0]!.args[1]).toEqual({ ip: "203.0.113.9" });
  });

  it("does not require an invite code with open sign-up", async () => {
    const { calls, auth } = setup({ openSignUp: true });
    await auth.signUp({ ...GOOD, inviteCode: "" });
    expect((calls[0]!.args[0] as { inviteCode?: string }).inviteCode).toBeUndefined();
  });
});

describe("AuthService validation of the other RPCs", () => {
  it("SignIn: email and password", async () => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.signIn({ email: "", password: "x" }), "email");
    await expectInvalid(calls, auth.signIn({ email: "a@b", password: "x" }), "email");
    await expectInvalid(calls, auth.signIn({ email: "a@b.io", password: "" }), "password", "is required");
    await expectInvalid(calls, auth.signIn({ email: "a@b.io", password: "x".repeat(600) }), "password", "at most");
  });
  it("Refresh and SignOut: the refresh token", async () => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.refresh({ refreshToken: "" }), "refresh_token", "is required");
    await expectInvalid(calls, auth.refresh({ refreshToken: "eyJhbGciOiJFZERTQSJ9.e30.x" }), "refresh_token", "not a refresh token");
    await expectInvalid(calls, auth.signOut({ refreshToken: "" }), "refresh_token", "is required");
    await expectInvalid(calls, auth.signOut({ refreshToken: "luna_rt_short" }), "refresh_token");
    const token = generateRefreshToken();
    await auth.refresh({ refreshToken: token });
    expect(calls).toEqual([{ method: "refresh", args: [token, { ip: "unknown" }] }]);
  });
  it("UpdateProfile: display_name", async () => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.updateProfile({ displayName: " " }, as(`user:${USER}`)), "display_name");
    await expectInvalid(calls, auth.updateProfile({ displayName: "a\u202eb" }, as(`user:${USER}`)), "display_name");
  });
  it("ChangePassword: current_password and new_password", async () => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.changePassword({ currentPassword: "", newPassword: GOOD.password }, as(`user:${USER}`)), "current_password");
    await expectInvalid(calls, auth.changePassword({ currentPassword: "old-password", newPassword: "1234567" }, as(`user:${USER}`)), "new_password", "at least 8");
    await expectInvalid(calls, auth.changePassword({ currentPassword: "old-password", newPassword: "iloveyou" }, as(`user:${USER}`)), "new_password", "most commonly used");
  });
  it("DeleteAccount: password", async () => {
    const { calls, auth } = setup();
    await expectInvalid(calls, auth.deleteAccount({ password: "" }, as(`user:${USER}`)), "password");
  });
});

describe("access rules", () => {
  it("public RPCs need no token; the rest of AuthService needs one", async () => {
    const { calls, auth } = setup();
    expect((await rejection(auth.getMe({}))).code).toBe(Code.Unauthenticated);
    expect((await rejection(auth.updateProfile({ displayName: "x" }))).code).toBe(Code.Unauthenticated);
    expect(calls).toHaveLength(0);
    await auth.getMe({}, as(`user:${USER}`));
    expect(calls).toEqual([{ method: "getMe", args: [USER] }]);
  });
  it("AuthAdminService admits admins only", async () => {
    const { calls, admin } = setup();
    expect((await rejection(admin.listUsers({}))).code).toBe(Code.Unauthenticated);
    expect((await rejection(admin.listUsers({}, as(`user:${USER}`)))).code).toBe(Code.PermissionDenied);
    expect(calls).toHaveLength(0);
    await admin.listUsers({}, as(`admin:${USER}`));
    expect(calls).toHaveLength(1);
  });
});

describe("AuthAdminService validation", () => {
  const admin = as(`admin:${USER}`);
  let c: ReturnType<typeof setup>;
  const fresh = () => (c = setup());
  it("CreateInvites: count, uses_per_code, expires_in, note", async () => {
    fresh();
    const ok = { count: 1, usesPerCode: 1, note: "" };
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, count: 0 }, admin), "count");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, count: -5 }, admin), "count");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, count: 101 }, admin), "count");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, usesPerCode: 0 }, admin), "uses_per_code");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, usesPerCode: 10_001 }, admin), "uses_per_code");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, expiresIn: { seconds: -60n } }, admin), "expires_in", "negative");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, expiresIn: { seconds: 5n } }, admin), "expires_in");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, expiresIn: { seconds: 400n * 86_400n } }, admin), "expires_in");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, note: "n".repeat(201) }, admin), "note");
    await expectInvalid(c.calls, c.admin.createInvites({ ...ok, note: "a\u0007b" }, admin), "note");
    await c.admin.createInvites({ count: 3, usesPerCode: 2, expiresIn: { seconds: 3600n }, note: " friends " }, admin);
    expect(c.calls).toEqual([{ method: "createInvites", args: [USER, { count: 3, usesPerCode: 2, expiresInMs: 3_600_000, note: "friends" }, { ip: "unknown" }] }]);
  });
  it("ListInvites and ListUsers: page and email_prefix", async () => {
    fresh();
    // The kit's wording, as in every service's lists.
    await expectInvalid(c.calls, c.admin.listInvites({ page: { pageSize: -1 } }, admin), "page.page_size", invalidPageSize("page.page_size", -1).rawMessage);
    await expectInvalid(c.calls, c.admin.listInvites({ page: { pageToken: "garbage" } }, admin), "page.page_token", invalidPageToken("page.page_token").rawMessage);
    await expectInvalid(c.calls, c.admin.listUsers({ page: { pageToken: "garbage" } }, admin), "page.page_token");
    await expectInvalid(c.calls, c.admin.listUsers({ emailPrefix: "x".repeat(300) }, admin), "email_prefix");
    const token = encodePageToken({ createdAt: now, id: OTHER });
    await c.admin.listUsers({ page: { pageSize: 1000, pageToken: token }, emailPrefix: " Ann" }, admin);
    expect(c.calls).toEqual([{ method: "listUsers", args: [{ limit: 200, cursor: { createdAt: now, id: OTHER }, emailPrefix: "ann" }] }]);
  });
  it("RevokeInvite, SetUserRole, DisableUser: ids and role", async () => {
    fresh();
    await expectInvalid(c.calls, c.admin.revokeInvite({ inviteId: "" }, admin), "invite_id");
    await expectInvalid(c.calls, c.admin.revokeInvite({ inviteId: "1; DROP TABLE invites" }, admin), "invite_id");
    await expectInvalid(c.calls, c.admin.setUserRole({ userId: "nope", role: Role.ADMIN }, admin), "user_id");
    await expectInvalid(c.calls, c.admin.setUserRole({ userId: OTHER, role: Role.UNSPECIFIED }, admin), "role");
    await expectInvalid(c.calls, c.admin.setUserRole({ userId: OTHER, role: 7 as Role }, admin), "role");
    await expectInvalid(c.calls, c.admin.disableUser({ userId: "", disabled: true }, admin), "user_id");
    await c.admin.setUserRole(create(AuthAdminService.method.setUserRole.input, { userId: OTHER.toUpperCase(), role: Role.ADMIN }), admin);
    expect(c.calls).toEqual([{ method: "setUserRole", args: [USER, OTHER, "admin", { ip: "unknown" }] }]);
  });
});
