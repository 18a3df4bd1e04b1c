import type { Db } from "./db.js";
import { Prisma, type ApiKey, type Invite, type SigningKey, type User } from "../generated/prisma/client.js";

/**
 * Auth's Postgres access. Every multi-row change is one transaction; the conditional UPDATEs (invite redemption,
 * refresh-token rotation) are what make concurrent requests safe, not application locks. Timestamps come from the
 * caller's clock so that the service's notion of "now" is one thing (and testable).
 */
export type Tx = Prisma.TransactionClient;
export type { ApiKey, Invite, SigningKey, User };

export type NewRefreshToken = { tokenHash: string; expiresAt: Date };
export type SessionSpec = { expiresAt: Date; refreshToken: NewRefreshToken };

/** Outcome of presenting a refresh token (see AuthStore.rotateRefreshToken). */
export type RotationResult =
  | { kind: "rotated"; user: User; sessionId: string; sessionExpiresAt: Date; grace: boolean }
  | { kind: "unknown" }
  | { kind: "expired" }
  | { kind: "session_ended"; reason: string }
  | { kind: "replayed" }
  | { kind: "user_inactive"; user: User };

export type UserListFilter = { emailPrefix?: string; limit: number; before?: { createdAt: Date; id: string } };
export type InviteListFilter = { includeInactive: boolean; limit: number; before?: { createdAt: Date; id: string }; now: Date };

export class EmailTakenError extends Error {
  constructor() {
    super("email already registered");
  }
}

export class AuthStore {
  constructor(readonly db: Db) {}

  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.db.$transaction(fn, { maxWait: 10_000, timeout: 20_000 });
  }

  // ---- users -------------------------------------------------------------------------------------------------------

  /** A live (not deleted) account by normalised email. */
  findUserByEmail(email: string): Promise<User | null> {
    return this.db.user.findFirst({ where: { email, deletedAt: null } });
  }

  findUser(id: string): Promise<User | null> {
    return this.db.user.findFirst({ where: { id, deletedAt: null } });
  }

  /**
   * Redeems an invite atomically: decrements `uses_left` only while it is positive and the invite is neither revoked
   * nor expired. Of N concurrent redemptions of a code with one use left, exactly one gets the row back: Postgres
   * serialises the UPDATEs on the row lock and re-checks the WHERE clause against the committed row.
   */
  async redeemInvite(tx: Tx, codeHash: string, now: Date): Promise<string | undefined> {
    const rows = await tx.$queryRaw<{ id: string }[]>`
      UPDATE invites SET uses_left = uses_left - 1
      WHERE code_hash = ${codeHash} AND uses_left > 0 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${now})
      RETURNING id`;
    return rows[0]?.id;
  }

  /** Inserts an account; throws EmailTakenError when the email belongs to a live account. */
  async insertUser(tx: Tx, u: { id: string; email: string; displayName: string; passwordHash: string; role: string; inviteId?: string; now: Date }): Promise<User> {
    try {
      // A nested savepoint is not needed: the unique violation aborts the transaction and the caller rolls it back.
      return await tx.user.create({
        data: { id: u.id, email: u.email, displayName: u.displayName, passwordHash: u.passwordHash, role: u.role, inviteId: u.inviteId ?? null, createdAt: u.now, updatedAt: u.now },
      });
    } catch (err) {
      if (err instanceof Prisma.PrismaClientKnownRequestError && err.code === "P2002") throw new EmailTakenError();
      throw err;
    }
  }

  updateUser(id: string, data: Prisma.UserUpdateInput): Promise<User> {
    return this.db.user.update({ where: { id }, data });
  }

  /** Sets a new password hash and ends every session of the account, in one transaction. */
  async replacePassword(tx: Tx, userId: string, passwordHash: string, now: Date): Promise<void> {
    await tx.user.update({ where: { id: userId }, data: { passwordHash, updatedAt: now } });
    await this.revokeUserSessions(tx, userId, "password_changed", now);
  }

  /**
   * Scrubs an account's personal data and deletes its sessions (with their refresh tokens). The row stays, marked
   * deleted, so its id is never reused.
   */
  async scrubUser(tx: Tx, userId: string, now: Date): Promise<void> {
    await tx.user.update({
      where: { id: userId },
      data: { email: null, displayName: "", passwordHash: null, deletedAt: now, disabledAt: now, updatedAt: now },
    });
    await tx.session.deleteMany({ where: { userId } });
    await tx.apiKey.deleteMany({ where: { userId } });
  }

  /** Live admins other than `exceptUserId` that are not disabled. */
  countOtherActiveAdmins(tx: Tx, exceptUserId: string): Promise<number> {
    return tx.user.count({ where: { role: "admin", deletedAt: null, disabledAt: null, id: { not: exceptUserId } } });
  }

  anyAdminExists(): Promise<boolean> {
    return this.db.user.count({ where: { role: "admin", deletedAt: null } }).then((n) => n > 0);
  }

  /** Newest first; keyset pagination on (created_at, id). Deleted accounts are not listed. */
  async listUsers(f: UserListFilter): Promise<User[]> {
    const prefix = f.emailPrefix ?? "";
    const before = f.before;
    const ids = await this.db.$queryRaw<{ id: string }[]>`
      SELECT id FROM users
      WHERE deleted_at IS NULL
        AND (${prefix} = '' OR starts_with(email, ${prefix}))
        AND (${before?.createdAt ?? null}::timestamptz IS NULL OR (created_at, id) < (${before?.createdAt ?? null}::timestamptz, ${before?.id ?? null}::uuid))
      ORDER BY created_at DESC, id DESC
      LIMIT ${f.limit}`;
    if (ids.length === 0) return [];
    const users = await this.db.user.findMany({ where: { id: { in: ids.map((r) => r.id) } } });
    const byId = new Map(users.map((u) => [u.id, u]));
    return ids.map((r) => byId.get(r.id)).filter((u): u is User => u !== undefined);
  }

  // ---- sessions and refresh tokens ---------------------------------------------------------------------------------

  /** Starts a session (a new refresh-token family) with its first refresh token. Returns the session id. */
  async createSession(tx: Tx, userId: string, spec: SessionSpec, now: Date): Promise<string> {
    const session = await tx.session.create({ data: { userId, createdAt: now, lastUsedAt: now, expiresAt: spec.expiresAt } });
    await tx.refreshToken.create({ data: { sessionId: session.id, tokenHash: spec.refreshToken.tokenHash, createdAt: now, expiresAt: spec.refreshToken.expiresAt } });
    return session.id;
  }

  /**
   * Exchanges a refresh token for a successor (single use). The winner of concurrent exchanges is decided by a
   * conditional UPDATE (`rotated_at IS NULL`). A token already rotated is accepted again only within `graceMs` of
   * its rotation (an honest retry after a lost response, or a second tab racing the first): it gets a *fresh*
   * successor, since only hashes are stored and the first successor cannot be returned. Past the grace window it
   * is a replay: the whole family (session) is revoked, and that revocation commits even though the call fails.
   * `successor(sessionExpiresAt)` supplies the new token's hash and expiry.
   */
  async rotateRefreshToken(
    tokenHash: string,
    opts: { now: Date; graceMs: number; successor: (sessionExpiresAt: Date) => NewRefreshToken; onReplay?: (tx: Tx, userId: string, sessionId: string) => Promise<void> },
  ): Promise<RotationResult> {
    const { now } = opts;
    return this.transaction(async (tx) => {
      const won = await tx.$queryRaw<{ id: string }[]>`
        UPDATE refresh_tokens SET rotated_at = ${now}
        WHERE token_hash = ${tokenHash} AND rotated_at IS NULL AND expires_at > ${now}
        RETURNING id`;
      const token = await tx.refreshToken.findUnique({ where: { tokenHash }, include: { session: { include: { user: true } } } });
      if (!token) return { kind: "unknown" };
      const { session } = token;
      if (session.revokedAt) return { kind: "session_ended", reason: session.revokedReason ?? "revoked" };
      if (session.expiresAt <= now) return { kind: "session_ended", reason: "expired" };
      let grace = false;
      if (won.length === 0) {
        if (token.expiresAt <= now) return { kind: "expired" };
        const rotatedAt = token.rotatedAt ?? now;
        if (now.getTime() - rotatedAt.getTime() > opts.graceMs) {
          await tx.session.update({ where: { id: session.id }, data: { revokedAt: now, revokedReason: "replay" } });
          await opts.onReplay?.(tx, session.userId, session.id);
          return { kind: "replayed" };
        }
        grace = true;
      }
      const user = session.user;
      if (user.deletedAt || user.disabledAt) return { kind: "user_inactive", user };
      const next = opts.successor(session.expiresAt);
      await tx.refreshToken.create({ data: { sessionId: session.id, tokenHash: next.tokenHash, createdAt: now, expiresAt: next.expiresAt } });
      await tx.session.update({ where: { id: session.id }, data: { lastUsedAt: now } });
      return { kind: "rotated", user, sessionId: session.id, sessionExpiresAt: session.expiresAt, grace };
    });
  }

  /** Revokes the session a refresh token (current or already rotated) belongs to; false when the token is unknown. */
  async revokeSessionByToken(tokenHash: string, reason: string, now: Date): Promise<boolean> {
    const token = await this.db.refreshToken.findUnique({ where: { tokenHash }, select: { sessionId: true } });
    if (!token) return false;
    await this.db.session.updateMany({ where: { id: token.sessionId, revokedAt: null }, data: { revokedAt: now, revokedReason: reason } });
    return true;
  }

  async revokeUserSessions(tx: Tx, userId: string, reason: string, now: Date): Promise<number> {
    const r = await tx.session.updateMany({ where: { userId, revokedAt: null }, data: { revokedAt: now, revokedReason: reason } });
    return r.count;
  }

  // ---- invites -----------------------------------------------------------------------------------------------------

  /** `audit` runs in the same transaction (the audit log: src/data/audit.ts). */
  async insertInvites(rows: Array<{ codeHash: string; codeHint: string; uses: number; expiresAt: Date | null; note: string; createdByUserId: string | null }>, now: Date,
    audit?: (tx: Tx, invites: Invite[]) => Promise<void>): Promise<Invite[]> {
    return this.transaction(async (tx) => {
      const invites = await Promise.all(rows.map((r) => tx.invite.create({
        data: { codeHash: r.codeHash, codeHint: r.codeHint, usesTotal: r.uses, usesLeft: r.uses, expiresAt: r.expiresAt, note: r.note, createdByUserId: r.createdByUserId, createdAt: now },
      })));
      await audit?.(tx, invites);
      return invites;
    });
  }

  findInvitesByHash(codeHashes: string[]): Promise<Invite[]> {
    return this.db.invite.findMany({ where: { codeHash: { in: codeHashes } } });
  }

  /** Newest first; keyset pagination on (created_at, id). */
  listInvites(f: InviteListFilter): Promise<Invite[]> {
    const active: Prisma.InviteWhereInput = { revokedAt: null, usesLeft: { gt: 0 }, OR: [{ expiresAt: null }, { expiresAt: { gt: f.now } }] };
    const page: Prisma.InviteWhereInput = f.before
      ? { OR: [{ createdAt: { lt: f.before.createdAt } }, { createdAt: f.before.createdAt, id: { lt: f.before.id } }] }
      : {};
    return this.db.invite.findMany({
      where: { AND: [f.includeInactive ? {} : active, page] },
      orderBy: [{ createdAt: "desc" }, { id: "desc" }],
      take: f.limit,
    });
  }

  /** Marks an invite revoked (idempotent); undefined when it does not exist. `audit` runs, in the transaction, only when this call revoked it. */
  async revokeInvite(id: string, now: Date, audit?: (tx: Tx) => Promise<void>): Promise<Invite | undefined> {
    return this.transaction(async (tx) => {
      const r = await tx.invite.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: now } });
      if (r.count > 0) await audit?.(tx);
      return (await tx.invite.findUnique({ where: { id } })) ?? undefined;
    });
  }

  // ---- signing keys ------------------------------------------------------------------------------------------------

  listSigningKeys(): Promise<SigningKey[]> {
    return this.db.signingKey.findMany({ orderBy: { activatesAt: "asc" } });
  }

  /**
   * Runs `fn` under a transaction-scoped advisory lock so that only one instance at a time decides whether to create
   * a key (several replicas start together; without the lock each would create its own "next" key).
   */
  withKeyRotationLock<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return this.transaction(async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('luna.auth.signing_keys'))`;
      return fn(tx);
    });
  }

  deleteSigningKeys(kids: string[]): Promise<unknown> {
    return this.db.signingKey.deleteMany({ where: { kid: { in: kids } } });
  }

  // ---- API keys ----------------------------------------------------------------------------------------------------

  /** Inserts a key unless the user already has `maxActive` active ones (checked under a lock on the user's row). */
  async insertApiKey(k: { userId: string; name: string; keyHash: string; keyHint: string; expiresAt: Date | null; now: Date },
    maxActive: number, audit?: (tx: Tx, key: ApiKey) => Promise<void>): Promise<ApiKey | "limit"> {
    return this.transaction(async (tx) => {
      await tx.$queryRaw`SELECT id FROM users WHERE id = ${k.userId}::uuid FOR UPDATE`;
      const active = await tx.apiKey.count({
        where: { userId: k.userId, revokedAt: null, OR: [{ expiresAt: null }, { expiresAt: { gt: k.now } }] },
      });
      if (active >= maxActive) return "limit";
      const key = await tx.apiKey.create({
        data: { userId: k.userId, name: k.name, keyHash: k.keyHash, keyHint: k.keyHint, expiresAt: k.expiresAt, createdAt: k.now },
      });
      await audit?.(tx, key);
      return key;
    });
  }

  /** A user's keys, newest first; inactive (revoked or expired) ones only when asked. */
  listApiKeys(userId: string, q: { includeInactive: boolean; now: Date; limit: number }): Promise<ApiKey[]> {
    return this.db.apiKey.findMany({
      where: q.includeInactive ? { userId } : { userId, revokedAt: null, OR: [{ expiresAt: null }, { expiresAt: { gt: q.now } }] },
      orderBy: [{ createdAt: "desc" }, { id: "desc" }],
      take: q.limit,
    });
  }

  getApiKey(id: string): Promise<ApiKey | null> {
    return this.db.apiKey.findUnique({ where: { id } });
  }

  /** Sets `revoked_at` once (a second revocation keeps the first time); undefined when there is no such key. `audit` as for revokeInvite. */
  async revokeApiKey(id: string, now: Date, audit?: (tx: Tx) => Promise<void>): Promise<ApiKey | undefined> {
    return this.transaction(async (tx) => {
      const r = await tx.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: now } });
      if (r.count > 0) await audit?.(tx);
      return (await tx.apiKey.findUnique({ where: { id } })) ?? undefined;
    });
  }

  /** The key with its account, by hash. */
  findApiKeyByHash(keyHash: string): Promise<(ApiKey & { user: User }) | null> {
    return this.db.apiKey.findUnique({ where: { keyHash }, include: { user: true } });
  }

  /** Stamps `last_used_at` unless it was stamped within `minIntervalMs` (one write a minute, not one per call). */
  async touchApiKey(id: string, now: Date, minIntervalMs: number): Promise<void> {
    const cutoff = new Date(now.getTime() - minIntervalMs);
    await this.db.apiKey.updateMany({ where: { id, OR: [{ lastUsedAt: null }, { lastUsedAt: { lt: cutoff } }] }, data: { lastUsedAt: now } });
  }
}
