import { randomBytes, randomUUID } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  alreadyExists, apiKeyHint, apiKeyRevocationId, failedPrecondition, generateApiKey, hashApiKey, isWellFormedApiKey, notFound,
  permissionDenied, resourceExhausted, unauthenticated, type ApiKeyLookupResult, type Logger, type RevocationList,
} from "@luna/kit";
import { canonicalInviteCode, formatInviteCode, generateInviteCode, hashInviteCode, inviteCodeHint } from "./domain/invite-code.js";
import { generateRefreshToken, hashRefreshToken } from "./domain/refresh-token.js";
import { passwordProblem, type PasswordPolicy } from "./domain/password-policy.js";
import { normalizeEmail } from "./domain/email.js";
import type { PasswordHasher } from "./domain/password-hasher.js";
import type { Cursor } from "./domain/page-token.js";
import { EmailTakenError, type ApiKey, type AuthStore, type Invite, type Tx, type User } from "./data/store.js";
import { enqueueUserCreated, enqueueUserDeleted } from "./events/user-events.js";
import { forgetAuditEmail, listAuditEvents, recordAudit, type AuditEvent } from "./data/audit.js";
import { UNKNOWN_IP } from "./throttle/throttle.js";
import type { AccessTokenIssuer } from "./keys/access-token.js";
import type { Throttle, ThrottleDecision } from "./throttle/throttle.js";
import { noopAuthMetrics, type AuthMetrics } from "./metrics.js";

export type Role = "user" | "admin";

/** A token pair as returned to clients. */
export type IssuedTokens = { accessToken: string; accessTokenExpiresAt: Date; refreshToken: string; refreshTokenExpiresAt: Date };

export type AccountsConfig = {
  openSignUp: boolean;
  refreshTokenTtlMs: number;
  sessionMaxLifetimeMs: number;
  refreshGraceMs: number;
  /** How long a token revocation must be kept: the access-token TTL plus the verifiers' clock skew. */
  revocationTtlMs?: number;
  /** Active API keys per account; default 100. */
  apiKeyMaxActive?: number;
  /** How long a key's revocation must be kept: the services' API-key cache TTL plus skew; default 10 min. */
  apiKeyRevocationTtlMs?: number;
  /** `last_used_at` is written at most this often; default 1 min. */
  apiKeyTouchIntervalMs?: number;
};

export type AccountsDeps = {
  store: AuthStore;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  tokens: AccessTokenIssuer;
  throttle: Throttle;
  /** Publish outbox rows now (called after a commit that enqueued events). */
  kickOutbox: () => void;
  config: AccountsConfig;
  log: Logger;
  metrics?: AuthMetrics;
  clock?: () => Date;
  /** The kit's revocation list: every service refuses a user's access tokens issued before a revocation. */
  revocations?: Pick<RevocationList, "revokeUser">;
};

/** Where a request came from, for throttling and the audit log. */
export type RequestOrigin = { ip: string };

/** Calls without a request (bootstrap, tests). */
const NO_ORIGIN: RequestOrigin = { ip: UNKNOWN_IP };

export type Page<T> = { items: T[]; next?: Cursor };

const WRONG_CREDENTIALS = "email or password is incorrect";

function throttled(d: Extract<ThrottleDecision, { allowed: false }>, what: string): ConnectError {
  const seconds = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
  return new ConnectError(`too many ${what}; try again in ${seconds} s`, Code.ResourceExhausted, { "retry-after": String(seconds) });
}

/**
 * Auth's use cases. Callers (the Connect handlers) pass already-validated, normalised input; this layer enforces
 * the rules that need state: invites, throttles, credentials, sessions, and the admin safety rules.
 */
export class Accounts {
  private readonly clock: () => Date;
  private readonly metrics: AuthMetrics;

  constructor(private readonly d: AccountsDeps) {
    this.clock = d.clock ?? (() => new Date());
    this.metrics = d.metrics ?? noopAuthMetrics;
  }

  // ---- sign-up, sign-in, sessions ----------------------------------------------------------------------------------

  /**
   * Creates an account, redeeming the invite code (required unless open sign-up), and signs it in. The user row,
   * the invite redemption, the `user.created` outbox row and the first session commit together or not at all.
   */
  async signUp(input: { email: string; password: string; inviteCode?: string; displayName: string }, origin: RequestOrigin): Promise<{ user: User; tokens: IssuedTokens }> {
    let attempt: ThrottleDecision | undefined;
    if (input.inviteCode !== undefined) {
      attempt = await this.d.throttle.beginInviteRedemption(origin.ip);
      if (!attempt.allowed) {
        this.metrics.signUp("throttled");
        throw throttled(attempt, "invite code attempts");
      }
    } else if (!this.d.config.openSignUp) {
      throw permissionDenied("an invite code is required to sign up");
    }
    const passwordHash = await this.d.hasher.hash(input.password);
    const now = this.clock();
    const refresh = this.newRefreshToken(now, new Date(now.getTime() + this.d.config.sessionMaxLifetimeMs));
    let user: User;
    try {
      user = await this.d.store.transaction(async (tx) => {
        let inviteId: string | undefined;
        if (input.inviteCode !== undefined) {
          inviteId = await this.d.store.redeemInvite(tx, hashInviteCode(input.inviteCode), now);
          if (!inviteId) {
            this.metrics.signUp("invite_rejected");
            throw permissionDenied("invite code is not valid (unknown, expired, revoked or used up)");
          }
        }
        const created = await this.d.store.insertUser(tx, { id: randomUUID(), email: input.email, displayName: input.displayName, passwordHash, role: "user", inviteId, now });
        await enqueueUserCreated(tx, { id: created.id, email: input.email, role: created.role }, now);
        await this.d.store.createSession(tx, created.id, refresh.session, now);
        await recordAudit(tx, { kind: "sign_up", actorId: created.id, subjectId: created.id, subjectEmail: input.email, source: origin.ip, details: { inviteId: inviteId ?? null }, now });
        return created;
      });
    } catch (err) {
      if (err instanceof EmailTakenError) {
        this.metrics.signUp("email_taken");
        throw alreadyExists("an account with this email already exists");
      }
      throw err;
    }
    this.metrics.signUp("success");
    if (attempt?.allowed) await this.d.throttle.inviteRedeemed(origin.ip, attempt.attemptId);
    this.d.kickOutbox();
    this.d.log.info({ userId: user.id, inviteId: user.inviteId }, "account created");
    return { user, tokens: await this.tokensFor(user, refresh) };
  }

  /**
   * Unknown email, deleted account and wrong password all answer UNAUTHENTICATED with the same message after the
   * same argon2 work (a dummy hash for unknown emails). A disabled account is reported only after its password
   * checked out, so it reveals nothing to a guesser.
   */
  async signIn(input: { email: string; password: string }, origin: RequestOrigin): Promise<{ user: User; tokens: IssuedTokens }> {
    const user = await this.checkPassword(input.email, input.password, origin, WRONG_CREDENTIALS, Code.Unauthenticated, true);
    if (user.disabledAt) {
      this.metrics.signIn("disabled");
      throw permissionDenied("this account is disabled");
    }
    this.metrics.signIn("success");
    await this.upgradeHashIfNeeded(user, input.password);
    const now = this.clock();
    const refresh = this.newRefreshToken(now, new Date(now.getTime() + this.d.config.sessionMaxLifetimeMs));
    await this.d.store.transaction((tx) => this.d.store.createSession(tx, user.id, refresh.session, now));
    return { user, tokens: await this.tokensFor(user, refresh) };
  }

  /**
   * Rotates a refresh token. Concurrent or repeated use of one token within the grace window each gets a fresh
   * successor (both callers keep working sessions); after the window it is a replay and the whole family is revoked.
   */
  async refresh(refreshToken: string, origin: RequestOrigin = NO_ORIGIN): Promise<IssuedTokens> {
    const now = this.clock();
    let next: ReturnType<Accounts["newRefreshToken"]> | undefined;
    const result = await this.d.store.rotateRefreshToken(hashRefreshToken(refreshToken), {
      now,
      graceMs: this.d.config.refreshGraceMs,
      successor: (sessionExpiresAt) => (next = this.newRefreshToken(now, sessionExpiresAt)).session.refreshToken,
      onReplay: (tx, userId, sessionId) =>
        recordAudit(tx, { kind: "session.revoked", subjectId: userId, source: origin.ip, details: { reason: "replay", sessionId }, now }),
    });
    this.metrics.refresh(result.kind === "rotated" && result.grace ? "grace" : result.kind);
    switch (result.kind) {
      case "rotated":
        if (result.grace) this.d.log.info({ sessionId: result.sessionId }, "refresh token reused within the grace window");
        return this.tokensFor(result.user, next!);
      case "replayed":
        this.d.log.warn({}, "refresh token replayed after rotation; session revoked");
        throw unauthenticated("refresh token was already used; the session has been ended, sign in again");
      case "session_ended":
        throw unauthenticated("the session has ended; sign in again");
      case "expired":
        throw unauthenticated("refresh token has expired; sign in again");
      case "user_inactive":
        throw permissionDenied(result.user.deletedAt ? "this account has been deleted" : "this account is disabled");
      case "unknown":
        throw unauthenticated("refresh token is not valid");
    }
  }

  /** Ends the session of a refresh token (current or already rotated). Unknown tokens succeed too: nothing to end. */
  async signOut(refreshToken: string): Promise<void> {
    await this.d.store.revokeSessionByToken(hashRefreshToken(refreshToken), "sign_out", this.clock());
  }

  // ---- the caller's own account ------------------------------------------------------------------------------------

  async getMe(userId: string): Promise<User> {
    const user = await this.d.store.findUser(userId);
    if (!user) throw notFound("account");
    return user;
  }

  async updateProfile(userId: string, displayName: string): Promise<User> {
    await this.getMe(userId);
    return this.d.store.updateUser(userId, { displayName, updatedAt: this.clock() });
  }

  /** Verifies the current password (throttled like sign-in), ends every session, and starts a new one. */
  async changePassword(userId: string, currentPassword: string, newPassword: string, origin: RequestOrigin): Promise<IssuedTokens> {
    const me = await this.getMe(userId);
    const user = await this.checkPassword(me.email!, currentPassword, origin, "current password is incorrect", Code.PermissionDenied);
    const passwordHash = await this.d.hasher.hash(newPassword);
    const now = this.clock();
    const refresh = this.newRefreshToken(now, new Date(now.getTime() + this.d.config.sessionMaxLifetimeMs));
    await this.d.store.transaction(async (tx) => {
      await this.d.store.replacePassword(tx, user.id, passwordHash, now);
      await this.d.store.createSession(tx, user.id, refresh.session, now);
      await recordAudit(tx, { kind: "password.changed", actorId: user.id, subjectId: user.id, source: origin.ip, now });
    });
    // Signed out everywhere: older access tokens too (the new ones issued below stay valid).
    await this.revokeAccessTokens(user.id, "password_changed");
    this.d.log.info({ userId }, "password changed; other sessions revoked");
    return this.tokensFor(user, refresh);
  }

  /**
   * Ends every session of the caller (each device's refresh token) and voids the access tokens issued until now in
   * every service, the caller's own included (kit revocation list). Returns how many sessions were still active.
   */
  async signOutEverywhere(userId: string, origin: RequestOrigin = NO_ORIGIN): Promise<number> {
    await this.getMe(userId);
    const now = this.clock();
    const ended = await this.d.store.transaction(async (tx) => {
      const n = await this.d.store.revokeUserSessions(tx, userId, "sign_out_everywhere", now);
      await recordAudit(tx, { kind: "session.revoked", actorId: userId, subjectId: userId, source: origin.ip, details: { reason: "sign_out_everywhere", sessions: n }, now });
      return n;
    });
    await this.revokeAccessTokens(userId, "sign_out_everywhere");
    this.d.log.info({ userId, sessions: ended }, "signed out everywhere");
    return ended;
  }

  /**
   * Deletes the caller's account after checking the password: personal data scrubbed, sessions deleted and
   * `user.deleted` enqueued, in one transaction. The last active admin cannot delete itself.
   */
  async deleteAccount(userId: string, password: string, origin: RequestOrigin): Promise<void> {
    const me = await this.getMe(userId);
    const user = await this.checkPassword(me.email!, password, origin, "password is incorrect", Code.PermissionDenied);
    const now = this.clock();
    await this.d.store.transaction(async (tx) => {
      if (user.role === "admin" && (await this.d.store.countOtherActiveAdmins(tx, user.id)) === 0) {
        throw failedPrecondition("the last admin cannot delete their account; make another account admin first");
      }
      await this.d.store.scrubUser(tx, user.id, now);
      await forgetAuditEmail(tx, user.id, user.email);
      await recordAudit(tx, { kind: "account.deleted", actorId: user.id, subjectId: user.id, source: origin.ip, now });
      await enqueueUserDeleted(tx, user.id, now);
    });
    this.d.kickOutbox();
    await this.revokeAccessTokens(user.id, "deleted");
    this.d.log.info({ userId }, "account deleted");
  }

  // ---- API keys ----------------------------------------------------------------------------------------------------

  /** Creates a personal API key; the plain key exists only in the result (the database keeps its hash). Audited. */
  async createApiKey(userId: string, spec: { name: string; expiresInMs?: number }, origin: RequestOrigin = NO_ORIGIN): Promise<{ apiKey: ApiKey; key: string }> {
    await this.getMe(userId);
    const now = this.clock();
    const key = generateApiKey();
    const max = this.d.config.apiKeyMaxActive ?? 100;
    const row = await this.d.store.insertApiKey({
      userId, name: spec.name, keyHash: hashApiKey(key), keyHint: apiKeyHint(key),
      expiresAt: spec.expiresInMs ? new Date(now.getTime() + spec.expiresInMs) : null, now,
    }, max, (tx, k) => recordAudit(tx, { kind: "api_key.created", actorId: userId, subjectId: userId, source: origin.ip, details: { apiKeyId: k.id, keyHint: k.keyHint }, now }));
    if (row === "limit") throw resourceExhausted(`at most ${max} active API keys per account; revoke one first`);
    this.d.log.info({ audit: "api_key.created", userId, apiKeyId: row.id, keyHint: row.keyHint, expiresAt: row.expiresAt }, "API key created");
    return { apiKey: row, key };
  }

  /** The account's keys, newest first (at most 200). */
  listApiKeys(userId: string, includeInactive: boolean): Promise<ApiKey[]> {
    return this.d.store.listApiKeys(userId, { includeInactive, now: this.clock(), limit: 200 });
  }

  /**
   * Revokes a key: the owner's own (`ownerId`), or any key when `ownerId` is undefined (admins). NOT_FOUND for
   * someone else's key, so ids cannot be probed. Every service stops accepting it within seconds (the revocation
   * list cuts their caches short). Audited; revoking twice keeps the first time.
   */
  async revokeApiKey(actorId: string, id: string, ownerId: string | undefined, origin: RequestOrigin = NO_ORIGIN): Promise<ApiKey> {
    const existing = await this.d.store.getApiKey(id);
    if (!existing || (ownerId !== undefined && existing.userId !== ownerId)) throw notFound(`API key ${id}`);
    const now = this.clock();
    const revoked = await this.d.store.revokeApiKey(id, now, (tx) =>
      recordAudit(tx, { kind: "api_key.revoked", actorId, subjectId: existing.userId, source: origin.ip, details: { apiKeyId: id, keyHint: existing.keyHint }, now }));
    if (!revoked) throw notFound(`API key ${id}`);
    try {
      await this.d.revocations?.revokeUser(apiKeyRevocationId(id), { ttlMs: this.d.config.apiKeyRevocationTtlMs ?? 600_000, at: new Date() });
    } catch (err) {
      this.d.log.error({ err, apiKeyId: id }, "could not record the key revocation; services may accept the key until their cache expires");
    }
    this.d.log.info({ audit: "api_key.revoked", actorId, userId: existing.userId, apiKeyId: id, keyHint: existing.keyHint }, "API key revoked");
    return revoked;
  }

  /**
   * The owner of a valid key (AuthInternalService.VerifyApiKey). One error for every reason (unknown, revoked,
   * expired, account disabled or deleted), so a caller learns nothing about keys it does not hold.
   */
  async verifyApiKey(key: string): Promise<ApiKeyLookupResult> {
    const invalid = () => unauthenticated("invalid API key (unknown, revoked or expired)");
    if (!isWellFormedApiKey(key)) throw invalid();
    const row = await this.d.store.findApiKeyByHash(hashApiKey(key));
    const now = this.clock();
    if (!row || row.revokedAt !== null || (row.expiresAt !== null && row.expiresAt <= now) || row.user.deletedAt !== null || row.user.disabledAt !== null) {
      throw invalid();
    }
    void this.d.store.touchApiKey(row.id, now, this.d.config.apiKeyTouchIntervalMs ?? 60_000)
      .catch((err: unknown) => this.d.log.warn({ err, apiKeyId: row.id }, "could not record the key's last use"));
    return { userId: row.userId, apiKeyId: row.id, expiresAtMs: row.expiresAt?.getTime() };
  }

  // ---- admin -------------------------------------------------------------------------------------------------------

  /** Creates invite codes; the plain codes exist only in the returned list (the database keeps hashes). */
  async createInvites(createdBy: string | null, spec: { count: number; usesPerCode: number; expiresInMs?: number; note: string }, origin: RequestOrigin = NO_ORIGIN): Promise<Array<{ invite: Invite; code: string }>> {
    const now = this.clock();
    const expiresAt = spec.expiresInMs ? new Date(now.getTime() + spec.expiresInMs) : null;
    const codes = Array.from({ length: spec.count }, generateInviteCode);
    const rows = codes.map((code) => {
      const canonical = canonicalInviteCode(code)!;
      return { codeHash: hashInviteCode(canonical), codeHint: inviteCodeHint(canonical), uses: spec.usesPerCode, expiresAt, note: spec.note, createdByUserId: createdBy };
    });
    const invites = await this.d.store.insertInvites(rows, now, (tx, created) =>
      recordAudit(tx, { kind: "invites.created", actorId: createdBy, source: origin.ip, details: { inviteIds: created.map((i) => i.id), usesPerCode: spec.usesPerCode }, now }));
    this.d.log.info({ count: invites.length, createdBy }, "invites created");
    return invites.map((invite, i) => ({ invite, code: codes[i]! }));
  }

  async listInvites(q: { limit: number; cursor?: Cursor; includeInactive: boolean }): Promise<Page<Invite>> {
    const rows = await this.d.store.listInvites({ includeInactive: q.includeInactive, limit: q.limit + 1, before: q.cursor, now: this.clock() });
    return page(rows, q.limit);
  }

  async revokeInvite(id: string, actorId: string | null = null, origin: RequestOrigin = NO_ORIGIN): Promise<Invite> {
    const now = this.clock();
    const invite = await this.d.store.revokeInvite(id, now, (tx) => recordAudit(tx, { kind: "invite.revoked", actorId, source: origin.ip, details: { inviteId: id }, now }));
    if (!invite) throw notFound(`invite ${id}`);
    return invite;
  }

  /** The audit log, newest first; `userId` matches the actor or the subject. */
  async listAuditEvents(q: { limit: number; cursor?: Cursor; userId?: string; kinds: string[] }): Promise<Page<AuditEvent>> {
    const rows = await listAuditEvents(this.d.store.db, { userId: q.userId, kinds: q.kinds, limit: q.limit + 1, before: q.cursor });
    return page(rows, q.limit);
  }

  async listUsers(q: { limit: number; cursor?: Cursor; emailPrefix: string }): Promise<Page<User>> {
    const rows = await this.d.store.listUsers({ emailPrefix: q.emailPrefix, limit: q.limit + 1, before: q.cursor });
    return page(rows, q.limit);
  }

  /** Changes another account's role. New access tokens carry it; tokens already issued keep the old role until they expire. */
  async setUserRole(adminId: string, userId: string, role: Role, origin: RequestOrigin = NO_ORIGIN): Promise<User> {
    if (adminId === userId) throw failedPrecondition("you cannot change your own role");
    const before = await this.getTarget(userId);
    const now = this.clock();
    return this.d.store.transaction(async (tx) => {
      const user = await tx.user.update({ where: { id: userId }, data: { role, updatedAt: now } });
      if (before.role !== role) await recordAudit(tx, { kind: "role.changed", actorId: adminId, subjectId: userId, source: origin.ip, details: { from: before.role, to: role }, now });
      return user;
    });
  }

  /** Disables (ending every session) or re-enables another account. */
  async setUserDisabled(adminId: string, userId: string, disabled: boolean, origin: RequestOrigin = NO_ORIGIN): Promise<User> {
    if (adminId === userId) throw failedPrecondition("you cannot disable your own account");
    await this.getTarget(userId);
    const now = this.clock();
    const updated = await this.d.store.transaction(async (tx) => {
      const user = await tx.user.update({ where: { id: userId }, data: { disabledAt: disabled ? now : null, updatedAt: now } });
      const sessionsRevoked = disabled ? await this.d.store.revokeUserSessions(tx, userId, "disabled", now) : 0;
      await recordAudit(tx, { kind: disabled ? "account.disabled" : "account.enabled", actorId: adminId, subjectId: userId, source: origin.ip, details: { sessionsRevoked }, now });
      return user;
    });
    if (disabled) await this.revokeAccessTokens(userId, "disabled");
    return updated;
  }

  // ---- bootstrap ---------------------------------------------------------------------------------------------------

  /**
   * Creates the first admin from configuration when the service has no admin yet. Without a configured password a
   * random one is generated and logged once (it is not stored anywhere else). Returns the account, or undefined when
   * nothing was created.
   */
  async ensureFirstAdmin(spec: { email?: string; password?: string }): Promise<User | undefined> {
    if (await this.d.store.anyAdminExists()) return undefined;
    if (!spec.email) {
      this.d.log.warn("no admin account exists; set AUTH_ADMIN_EMAIL (and AUTH_ADMIN_PASSWORD) to create one on start");
      return undefined;
    }
    const email = normalizeEmail(spec.email);
    if (!email.ok) throw new Error(`AUTH_ADMIN_EMAIL ${email.reason}`);
    const existing = await this.d.store.findUserByEmail(email.email);
    if (existing) {
      // Never promote an existing account from configuration: whoever registered that email first would become admin.
      this.d.log.error({ email: email.email }, "AUTH_ADMIN_EMAIL belongs to an existing non-admin account; no admin created");
      return undefined;
    }
    const generated = spec.password === undefined;
    const password = spec.password ?? randomBytes(18).toString("base64url");
    const problem = passwordProblem(password, this.d.policy);
    if (problem) throw new Error(`AUTH_ADMIN_PASSWORD ${problem}`);
    const passwordHash = await this.d.hasher.hash(password);
    const now = this.clock();
    let user: User;
    try {
      user = await this.d.store.transaction(async (tx: Tx) => {
        const created = await this.d.store.insertUser(tx, { id: randomUUID(), email: email.email, displayName: "Admin", passwordHash, role: "admin", now });
        await enqueueUserCreated(tx, { id: created.id, email: email.email, role: "admin" }, now);
        return created;
      });
    } catch (err) {
      if (err instanceof EmailTakenError) return undefined; // another replica created it a moment ago
      throw err;
    }
    this.d.kickOutbox();
    if (generated) {
      this.d.log.warn({ email: email.email, password }, "created the first admin with a generated password (shown only this once; change it after signing in)");
    } else {
      this.d.log.info({ email: email.email }, "created the first admin from configuration");
    }
    return user;
  }

  /**
   * Development bootstrap for `make dev`: makes sure usable invite codes exist and are listed in `invitesFile`, one
   * per line. Idempotent: when the file already lists codes that can still be redeemed, those are kept and printed
   * again; new codes are created only when none is left. Returns the usable codes.
   */
  async bootstrapDevInvites(opts: { inviteCount: number; invitesFile: string; usesPerCode?: number }): Promise<string[]> {
    const now = this.clock();
    const listed = await readFile(opts.invitesFile, "utf8").then((t) => t.split("\n").map((l) => l.trim()).filter((l) => l.length > 0), () => [] as string[]);
    const byHash = new Map<string, string>();
    for (const line of listed) {
      const canonical = canonicalInviteCode(line);
      if (canonical) byHash.set(hashInviteCode(canonical), formatInviteCode(canonical));
    }
    const stored = await this.d.store.findInvitesByHash([...byHash.keys()]);
    let codes = stored.filter((i) => isRedeemable(i, now)).map((i) => byHash.get(i.codeHash)!);
    if (codes.length === 0) {
      const created = await this.createInvites(null, { count: opts.inviteCount, usesPerCode: opts.usesPerCode ?? 1, note: "development bootstrap" });
      codes = created.map((c) => c.code);
    }
    await mkdir(dirname(opts.invitesFile), { recursive: true });
    await writeFile(opts.invitesFile, codes.join("\n") + "\n", { mode: 0o600 });
    this.d.log.info({ invitesFile: opts.invitesFile, codes }, `invite codes for sign-up (also in ${opts.invitesFile})`);
    return codes;
  }

  // ---- helpers -----------------------------------------------------------------------------------------------------

  /**
   * Voids the user's access tokens issued until now, in every service (kit: revocation.ts), after the change is
   * committed. Redis unreachable: logged, and those tokens live until they expire (like every Redis use, fail open).
   */
  private async revokeAccessTokens(userId: string, reason: string): Promise<void> {
    if (!this.d.revocations) return;
    try {
      // The wall clock, not this.clock(): it is compared with the tokens' iat, which the wall clock stamps.
      await this.d.revocations.revokeUser(userId, { ttlMs: this.d.config.revocationTtlMs ?? 3_600_000, at: new Date() });
    } catch (err) {
      this.d.log.error({ err, userId, reason }, "could not record the token revocation; issued access tokens stay valid until they expire");
    }
  }

  /**
   * The sign-in check shared by SignIn, ChangePassword and DeleteAccount: throttled per account and IP, constant
   * argon2 work for unknown accounts, failures counted. Returns the live account whose password matched.
   */
  private async checkPassword(email: string, password: string, origin: RequestOrigin, wrongMessage: string, wrongCode = Code.Unauthenticated, isSignIn = false): Promise<User> {
    const attempt = await this.d.throttle.beginSignIn(email, origin.ip);
    if (!attempt.allowed) {
      if (isSignIn) this.metrics.signIn("throttled");
      // Not looked up: a locked-out guesser must not cost a query per attempt beyond this one insert.
      await recordAudit(this.d.store.db, { kind: "sign_in.locked", subjectEmail: email, source: origin.ip, details: { retryAfterMs: attempt.retryAfterMs }, now: this.clock() });
      throw throttled(attempt, "failed sign-in attempts");
    }
    const user = await this.d.store.findUserByEmail(email);
    const ok = await this.d.hasher.verify(user?.passwordHash ?? undefined, password);
    if (!ok || !user) {
      if (isSignIn) this.metrics.signIn("wrong_credentials");
      await recordAudit(this.d.store.db, { kind: "sign_in.failed", subjectId: user?.id ?? null, subjectEmail: email, source: origin.ip, details: { during: isSignIn ? "sign_in" : "reauthentication" }, now: this.clock() });
      await this.d.throttle.signInFailed(email, origin.ip, attempt.attemptId);
      throw new ConnectError(wrongMessage, wrongCode);
    }
    await this.d.throttle.signInSucceeded(email, origin.ip, attempt.attemptId);
    return user;
  }

  private async upgradeHashIfNeeded(user: User, password: string): Promise<void> {
    if (!user.passwordHash || !this.d.hasher.needsRehash(user.passwordHash)) return;
    const passwordHash = await this.d.hasher.hash(password);
    await this.d.store.updateUser(user.id, { passwordHash });
    this.d.log.info({ userId: user.id }, "password hash upgraded to the current argon2 parameters");
  }

  private async getTarget(userId: string): Promise<User> {
    const user = await this.d.store.findUser(userId);
    if (!user) throw notFound(`user ${userId}`);
    return user;
  }

  /** A new refresh token: its lifetime slides with each refresh but never passes the session's absolute end. */
  private newRefreshToken(now: Date, sessionExpiresAt: Date) {
    const token = generateRefreshToken();
    const expiresAt = new Date(Math.min(now.getTime() + this.d.config.refreshTokenTtlMs, sessionExpiresAt.getTime()));
    return { token, session: { expiresAt: sessionExpiresAt, refreshToken: { tokenHash: hashRefreshToken(token), expiresAt } } };
  }

  private async tokensFor(user: User, refresh: ReturnType<Accounts["newRefreshToken"]>): Promise<IssuedTokens> {
    const access = await this.d.tokens.issue({ userId: user.id, role: user.role as Role });
    return { accessToken: access.token, accessTokenExpiresAt: access.expiresAt, refreshToken: refresh.token, refreshTokenExpiresAt: refresh.session.refreshToken.expiresAt };
  }
}

function isRedeemable(i: Invite, now: Date): boolean {
  return i.revokedAt === null && i.usesLeft > 0 && (i.expiresAt === null || i.expiresAt > now);
}

function page<T extends { createdAt: Date; id: string }>(rows: T[], limit: number): Page<T> {
  if (rows.length <= limit) return { items: rows };
  const items = rows.slice(0, limit);
  const last = items[items.length - 1]!;
  return { items, next: { createdAt: last.createdAt, id: last.id } };
}
