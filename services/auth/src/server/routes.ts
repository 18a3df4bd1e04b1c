import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { clientAddressKey, permissionDenied, requirePrincipal, type MethodRules, type Principal } from "@luna/kit";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { AuthAdminService } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { AuthInternalService } from "@luna/contracts/luna/auth/v1/auth_internal_service_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Accounts, RequestOrigin } from "../accounts.js";
import { UNKNOWN_IP } from "../throttle/throttle.js";
import { encodePageToken } from "../domain/page-token.js";
import type { PasswordPolicy } from "../domain/password-policy.js";
import { apiKeyMessage, auditEventMessage, inviteMessage, tokensMessage, userMessage } from "./convert.js";
import * as v from "./validate.js";

/** Who may call what (the kit's auth interceptor enforces it; handlers check again). */
export const authRules: MethodRules = {
  [AuthService.typeName]: "user",
  [`${AuthService.typeName}/SignUp`]: "public",
  [`${AuthService.typeName}/SignIn`]: "public",
  [`${AuthService.typeName}/Refresh`]: "public",
  [`${AuthService.typeName}/SignOut`]: "public",
  [AuthAdminService.typeName]: "admin",
  [AuthInternalService.typeName]: "internal",
};

/** The use cases the handlers call (a subset of Accounts, so tests can pass fakes). */
export type AccountsApi = Pick<Accounts,
  "signUp" | "signIn" | "refresh" | "signOut" | "signOutEverywhere" | "getMe" | "updateProfile" | "changePassword" | "deleteAccount" |
  "createInvites" | "listInvites" | "revokeInvite" | "listUsers" | "setUserRole" | "setUserDisabled" |
  "createApiKey" | "listApiKeys" | "revokeApiKey" | "verifyApiKey" | "listAuditEvents">;

export type RouteDeps = {
  accounts: AccountsApi;
  policy: PasswordPolicy;
  openSignUp: boolean;
};

/** Registers AuthService and AuthAdminService: validation → use case → response. */
export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  const { accounts, policy } = deps;
  const origin = (ctx: HandlerContext): RequestOrigin => ({
    // The kit's server resolves it once for every service (LUNA_TRUSTED_PROXY_HOPS, LUNA_TRUSTED_PROXIES).
    ip: ctx.values.get(clientAddressKey) ?? UNKNOWN_IP,
  });

  /** Key management needs a session: a leaked API key must not mint or hide keys. */
  const withSession = (ctx: HandlerContext): Principal => {
    const me = requirePrincipal(ctx, "user");
    if (me.apiKeyId) throw permissionDenied("API keys cannot manage API keys; sign in");
    return me;
  };

  return (router) => {
    router.service(AuthService, {
      async signUp(req, ctx) {
        const input = {
          email: v.email("email", req.email),
          password: v.newPassword("password", req.password, policy),
          inviteCode: v.inviteCode("invite_code", req.inviteCode, !deps.openSignUp),
          displayName: v.displayName("display_name", req.displayName),
        };
        const { user, tokens } = await accounts.signUp(input, origin(ctx));
        return { user: userMessage(user), tokens: tokensMessage(tokens) };
      },
      async signIn(req, ctx) {
        const input = { email: v.email("email", req.email), password: v.existingPassword("password", req.password, policy) };
        const { user, tokens } = await accounts.signIn(input, origin(ctx));
        return { user: userMessage(user), tokens: tokensMessage(tokens) };
      },
      async refresh(req, ctx) {
        return { tokens: tokensMessage(await accounts.refresh(v.refreshToken("refresh_token", req.refreshToken), origin(ctx))) };
      },
      async signOut(req) {
        await accounts.signOut(v.refreshToken("refresh_token", req.refreshToken));
        return {};
      },
      async getMe(_req, ctx) {
        const me = requirePrincipal(ctx, "user");
        return { user: userMessage(await accounts.getMe(me.userId)) };
      },
      async updateProfile(req, ctx) {
        const me = requirePrincipal(ctx, "user");
        const name = v.displayName("display_name", req.displayName);
        return { user: userMessage(await accounts.updateProfile(me.userId, name)) };
      },
      async changePassword(req, ctx) {
        const me = requirePrincipal(ctx, "user");
        const current = v.existingPassword("current_password", req.currentPassword, policy);
        const next = v.newPassword("new_password", req.newPassword, policy);
        return { tokens: tokensMessage(await accounts.changePassword(me.userId, current, next, origin(ctx))) };
      },
      async deleteAccount(req, ctx) {
        const me = requirePrincipal(ctx, "user");
        await accounts.deleteAccount(me.userId, v.existingPassword("password", req.password, policy), origin(ctx));
        return {};
      },
      async signOutEverywhere(_req, ctx) {
        const me = requirePrincipal(ctx, "user");
        // Sessions are a signed-in person's: a leaked API key must not be able to sign its owner out.
        if (me.apiKeyId) throw permissionDenied("API keys cannot end sessions; sign in");
        return { sessionsEnded: await accounts.signOutEverywhere(me.userId, origin(ctx)) };
      },
      async createApiKey(req, ctx) {
        const me = withSession(ctx);
        const spec = { name: v.apiKeyName("name", req.name), expiresInMs: v.expiresIn("expires_in", req.expiresIn, v.MAX_API_KEY_EXPIRY_MS) };
        const { apiKey, key } = await accounts.createApiKey(me.userId, spec, origin(ctx));
        return { apiKey: apiKeyMessage(apiKey, key) };
      },
      async listApiKeys(req, ctx) {
        const me = withSession(ctx);
        return { apiKeys: (await accounts.listApiKeys(me.userId, req.includeInactive)).map((k) => apiKeyMessage(k)) };
      },
      async revokeApiKey(req, ctx) {
        const me = withSession(ctx);
        return { apiKey: apiKeyMessage(await accounts.revokeApiKey(me.userId, v.uuid("api_key_id", req.apiKeyId), me.userId, origin(ctx))) };
      },
    });

    router.service(AuthInternalService, {
      async verifyApiKey(req, ctx) {
        requirePrincipal(ctx, "internal");
        const r = await accounts.verifyApiKey(req.key);
        return { userId: r.userId, apiKeyId: r.apiKeyId, expiresAt: r.expiresAtMs !== undefined ? timestampFromMs(r.expiresAtMs) : undefined };
      },
    });

    router.service(AuthAdminService, {
      async createInvites(req, ctx) {
        const admin = requirePrincipal(ctx, "admin");
        const spec = {
          count: v.intInRange("count", req.count, 1, 100),
          usesPerCode: v.intInRange("uses_per_code", req.usesPerCode, 1, 10_000),
          expiresInMs: v.expiresIn("expires_in", req.expiresIn),
          note: v.note("note", req.note),
        };
        const created = await accounts.createInvites(admin.userId, spec, origin(ctx));
        return { invites: created.map((c) => inviteMessage(c.invite, c.code)) };
      },
      async listInvites(req, ctx) {
        requirePrincipal(ctx, "admin");
        const p = v.page("page", req.page);
        const r = await accounts.listInvites({ ...p, includeInactive: req.includeInactive });
        return { invites: r.items.map((i) => inviteMessage(i)), page: { nextPageToken: r.next ? encodePageToken(r.next) : "" } };
      },
      async revokeInvite(req, ctx) {
        const admin = requirePrincipal(ctx, "admin");
        return { invite: inviteMessage(await accounts.revokeInvite(v.uuid("invite_id", req.inviteId), admin.userId, origin(ctx))) };
      },
      async listUsers(req, ctx) {
        requirePrincipal(ctx, "admin");
        const p = v.page("page", req.page);
        const r = await accounts.listUsers({ ...p, emailPrefix: v.emailPrefix("email_prefix", req.emailPrefix) });
        return { users: r.items.map(userMessage), page: { nextPageToken: r.next ? encodePageToken(r.next) : "" } };
      },
      async setUserRole(req, ctx) {
        const admin = requirePrincipal(ctx, "admin");
        const userId = v.uuid("user_id", req.userId);
        const role = v.role("role", req.role);
        return { user: userMessage(await accounts.setUserRole(admin.userId, userId, role, origin(ctx))) };
      },
      async disableUser(req, ctx) {
        const admin = requirePrincipal(ctx, "admin");
        const userId = v.uuid("user_id", req.userId);
        return { user: userMessage(await accounts.setUserDisabled(admin.userId, userId, req.disabled, origin(ctx))) };
      },
      async listUserApiKeys(req, ctx) {
        requirePrincipal(ctx, "admin");
        const userId = v.uuid("user_id", req.userId);
        return { apiKeys: (await accounts.listApiKeys(userId, req.includeInactive)).map((k) => apiKeyMessage(k)) };
      },
      async revokeUserApiKey(req, ctx) {
        const admin = requirePrincipal(ctx, "admin");
        return { apiKey: apiKeyMessage(await accounts.revokeApiKey(admin.userId, v.uuid("api_key_id", req.apiKeyId), undefined, origin(ctx))) };
      },
      async listAuditEvents(req, ctx) {
        requirePrincipal(ctx, "admin");
        const p = v.page("page", req.page);
        const userId = req.userId === "" ? undefined : v.uuid("user_id", req.userId);
        const r = await accounts.listAuditEvents({ ...p, userId, kinds: v.auditKinds("kinds", req.kinds) });
        return { events: r.items.map(auditEventMessage), page: { nextPageToken: r.next ? encodePageToken(r.next) : "" } };
      },
    });
  };
}
