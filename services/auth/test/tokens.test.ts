// Access and refresh tokens against a real server: the JWT rejection suite of RELIABILITY.md (through the kit's auth
// interceptor, with tokens this service issued and forged variants), the JWKS endpoint, key rotation, and
// refresh-token rotation with replay detection and the documented concurrent-refresh behaviour.
import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rejection, startAuth, type Harness } from "./harness.js";
import { AuthStore } from "../src/data/store.js";
import { KeyStore } from "../src/keys/key-store.js";
import { parseKek } from "../src/domain/key-encryption.js";
import { createHash, randomBytes } from "node:crypto";
import { createJwtVerifier, createLogger } from "@luna/kit";
import { jetstream } from "@nats-io/jetstream";
import { createAuthModule } from "../src/index.js";

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

describe("access tokens (JWT rejection suite through the kit interceptor)", () => {
  let h: Harness;
  let access: string;
  let refresh: string;
  let serviceKey: { kid: string; privateKey: KeyObject };

  beforeAll(async () => {
    h = await startAuth();
    const res = await h.signUp();
    access = res.tokens!.accessToken;
    refresh = res.tokens!.refreshToken;
    // The service's own signing key, read the way the service reads it (same database, same KEK), to forge tokens
    // with a *valid* signature but wrong claims.
    const kek = parseKek(h.config.AUTH_KEY_ENCRYPTION_KEY!);
    const keys = new KeyStore(new AuthStore(h.db), kek, { rotationIntervalMs: 1e12, prepublishMs: 0, retainAfterSupersededMs: 1e9, checkIntervalMs: 60_000 }, createLogger({ service: "t", level: "silent" }));
    serviceKey = await keys.signingKey();
  });
  afterAll(() => h?.close());

  const claims = () => {
    const now = Math.floor(Date.now() / 1000);
    return { sub: decodeJwt(access).sub!, role: "user", token_use: "access", iss: h.config.LUNA_JWT_ISSUER, aud: h.config.LUNA_JWT_AUDIENCE, iat: now, exp: now + 600, jti: "forged-1" };
  };
  const sign = (payload: Record<string, unknown>, key: KeyObject = serviceKey.privateKey, kid = serviceKey.kid) =>
    new SignJWT(payload).setProtectedHeader({ alg: "EdDSA", kid, typ: "JWT" }).sign(key);
  const getMe = (token: string) => h.auth.getMe({}, h.bearer(token));
  async function expectRejected(token: string, why: string) {
    const err = await rejection(getMe(token));
    expect(err.code, `${why}: ${err.message}`).toBe(Code.Unauthenticated);
  }

  it("issues EdDSA tokens with sub, role, iss, aud, exp, iat, jti, token_use and kid that the verifier accepts", async () => {
    const header = decodeProtectedHeader(access);
    const payload = decodeJwt(access);
    expect(header.alg).toBe("EdDSA");
    expect(header.kid).toBe(serviceKey.kid);
    expect(payload).toMatchObject({ role: "user", token_use: "access", iss: "luna-auth", aud: "luna" });
    expect(typeof payload.sub).toBe("string");
    expect(typeof payload.jti).toBe("string");
    expect(payload.exp! - payload.iat!).toBe(15 * 60);
    const me = await getMe(access);
    expect(me.user?.id).toBe(payload.sub);
    // A token forged with the real key and correct claims passes too: the rejections below are caused by the one
    // thing each of them changes.
    expect((await getMe(await sign(claims()))).user?.id).toBe(payload.sub);
  });

  it("rejects alg none", async () => {
    await expectRejected(`${b64({ alg: "none", typ: "JWT", kid: serviceKey.kid })}.${b64(claims())}.`, "alg none");
  });

  it("rejects HS256 signed with the public key", async () => {
    const pub = createPublicKey(serviceKey.privateKey);
    for (const secret of [pub.export({ format: "pem", type: "spki" }), Buffer.from(pub.export({ format: "jwk" }).x!, "base64url")]) {
      const input = `${b64({ alg: "HS256", typ: "JWT", kid: serviceKey.kid })}.${b64(claims())}`;
      const sig = createHmac("sha256", secret).update(input).digest("base64url");
      await expectRejected(`${input}.${sig}`, "HS256 with the public key");
    }
  });

  it("rejects an unknown kid (signed by a key the JWKS does not have)", async () => {
    const { privateKey } = generateKeyPairSync("ed25519");
    await expectRejected(await sign(claims(), privateKey, "not-a-luna-key"), "unknown kid");
    await expectRejected(await sign(claims(), privateKey, serviceKey.kid), "right kid, wrong key");
  });

  it("rejects a tampered payload", async () => {
    const [header, payload, sig] = access.split(".");
    const tampered = { ...decodeJwt(access), role: "admin" };
    await expectRejected(`${header}.${b64(tampered)}.${sig}`, "tampered payload");
    expect(payload).not.toBe(b64(tampered));
  });

  it("rejects expired tokens and tokens not valid yet", async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectRejected(await sign({ ...claims(), iat: now - 3600, exp: now - 120 }), "expired");
    await expectRejected(await sign({ ...claims(), nbf: now + 3600 }), "future nbf");
  });

  it("rejects a wrong audience or issuer", async () => {
    await expectRejected(await sign({ ...claims(), aud: "someone-else" }), "wrong aud");
    await expectRejected(await sign({ ...claims(), iss: "https://evil.example" }), "wrong iss");
  });

  it("rejects a refresh token used as an access token", async () => {
    await expectRejected(refresh, "opaque refresh token as bearer");
    await expectRejected(await sign({ ...claims(), token_use: "refresh" }), "token_use refresh");
    const { token_use: _omit, ...noUse } = claims();
    await expectRejected(await sign(noUse), "no token_use");
  });

  it("rejects a role the verifier does not know and a missing sub", async () => {
    await expectRejected(await sign({ ...claims(), role: "root" }), "unknown role");
    const { sub: _sub, ...noSub } = claims();
    await expectRejected(await sign(noSub), "no sub");
  });
});

describe("JWKS and key rotation", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startAuth({ AUTH_KEY_ROTATION_INTERVAL: "2h", AUTH_KEY_PREPUBLISH: "10m", AUTH_ACCESS_TOKEN_TTL: "15m", AUTH_CLOCK_SKEW: "60s" });
  });
  afterAll(() => h?.close());

  async function jwks(): Promise<{ status: number; cacheControl: string | null; kids: string[]; body: Record<string, unknown> }> {
    const res = await fetch(`${h.baseUrl}/.well-known/jwks.json`);
    const body = (await res.json()) as { keys: Array<Record<string, unknown>> };
    return { status: res.status, cacheControl: res.headers.get("cache-control"), kids: body.keys.map((k) => k.kid as string), body };
  }

  it("serves the public signing keys at /.well-known/jwks.json, without private parts", async () => {
    const r = await jwks();
    expect(r.status).toBe(200);
    expect(r.cacheControl).toBe("public, max-age=300");
    expect(r.kids).toHaveLength(1);
    const key = (r.body.keys as Array<Record<string, unknown>>)[0]!;
    expect(key).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig" });
    expect(key.d).toBeUndefined();
    expect((await fetch(`${h.baseUrl}/.well-known/jwks.json`, { method: "POST" })).status).toBe(405);
  });

  it("stores private keys sealed, never in the clear", async () => {
    const rows = await h.db.signingKey.findMany();
    for (const row of rows) {
      const sealed = Buffer.from(row.privateKeySealed);
      expect(sealed[0]).toBe(1); // format version of the sealed blob
      expect(sealed.includes(Buffer.from("MC4CAQAwBQYDK2Vw", "base64"))).toBe(false); // PKCS#8 Ed25519 prefix
    }
  });

  it("publishes the next key before it signs, signs with the newest, keeps the old one until its tokens expired", async () => {
    const first = (await jwks()).kids[0]!;
    const tokenA = (await h.signUp()).tokens!.accessToken;
    expect(decodeProtectedHeader(tokenA).kid).toBe(first);

    h.clock.advance(2 * 3_600_000 - 9 * 60_000); // within the prepublish window: a successor appears
    await h.module.rotateKeysNow();
    const published = (await jwks()).kids;
    expect(published).toHaveLength(2);
    const second = published.find((k) => k !== first)!;
    expect(decodeProtectedHeader((await h.signUp()).tokens!.accessToken).kid).toBe(first); // not active yet

    h.clock.advance(10 * 60_000); // past activation
    await h.module.rotateKeysNow();
    const tokenB = (await h.signUp()).tokens!.accessToken;
    expect(decodeProtectedHeader(tokenB).kid).toBe(second);
    expect((await jwks()).kids.sort()).toEqual([first, second].sort());
    // A token signed by the retired key still verifies (this one is real-time valid).
    expect((await h.auth.getMe({}, h.bearer(tokenA))).user).toBeDefined();

    h.clock.advance(16 * 60_000 + 1000); // access TTL + skew after the switch
    await h.module.rotateKeysNow();
    expect((await jwks()).kids).toEqual([second]);
    expect(await h.db.signingKey.count()).toBe(1);
  });

  it("signs with a new key at once when the active key cannot be decrypted (KEK changed); old keys stay published", async () => {
    const before = (await jwks()).kids;
    const log = createLogger({ service: "auth-test", level: "silent" });
    const other = await createAuthModule({ ...h.config, AUTH_KEY_ENCRYPTION_KEY: randomBytes(32).toString("hex") },
      { log, redis: h.redis, js: jetstream(h.nc), databaseUrl: h.database.url }, { clock: h.clock.now });
    try {
      const email = (await h.signUp()).user!.email;
      const res = await other.accounts.signIn({ email, password: "correct horse battery staple" }, { ip: "10.1.2.3" });
      const kid = decodeProtectedHeader(res.tokens.accessToken).kid!;
      expect(before).not.toContain(kid);
      await h.module.rotateKeysNow();
      expect((await jwks()).kids).toEqual(expect.arrayContaining([...before, kid]));
      const fresh = createJwtVerifier({ jwksUrl: `${h.baseUrl}/.well-known/jwks.json`, issuer: h.config.LUNA_JWT_ISSUER, audience: h.config.LUNA_JWT_AUDIENCE });
      expect((await fresh.verify(res.tokens.accessToken)).userId).toBe(res.user.id);
    } finally {
      await other.stop();
    }
  });
});

describe("refresh tokens", () => {
  let h: Harness;
  let noGrace: Harness;
  beforeAll(async () => {
    [h, noGrace] = await Promise.all([startAuth({ AUTH_REFRESH_GRACE: "30s" }), startAuth({ AUTH_REFRESH_GRACE: "0s" })]);
  });
  afterAll(async () => {
    await h?.close();
    await noGrace?.close();
  });

  it("rotates on every use: a new refresh token and a new access token", async () => {
    const r1 = (await h.signUp()).tokens!;
    const r2 = (await h.auth.refresh({ refreshToken: r1.refreshToken })).tokens!;
    expect(r2.refreshToken).not.toBe(r1.refreshToken);
    expect(r2.refreshToken).toMatch(/^luna_rt_/);
    expect(decodeJwt(r2.accessToken).jti).not.toBe(decodeJwt(r1.accessToken).jti);
    const r3 = (await h.auth.refresh({ refreshToken: r2.refreshToken })).tokens!;
    expect((await h.auth.getMe({}, h.bearer(r3.accessToken))).user).toBeDefined();
  });

  it("stores only hashes of refresh tokens", async () => {
    const t = (await h.signUp()).tokens!;
    const rows = await h.db.refreshToken.findMany({ select: { tokenHash: true } });
    expect(rows.some((r) => r.tokenHash === createHash("sha256").update(t.refreshToken).digest("hex"))).toBe(true);
    expect(rows.some((r) => r.tokenHash.includes(t.refreshToken.slice(8)))).toBe(false);
  });

  it("replaying a rotated token after the grace window revokes the whole family", async () => {
    const r1 = (await h.signUp()).tokens!;
    const r2 = (await h.auth.refresh({ refreshToken: r1.refreshToken })).tokens!;
    h.clock.advance(31_000);
    const replays = await h.counter("luna_auth_refreshes_total", "replayed");
    const err = await rejection(h.auth.refresh({ refreshToken: r1.refreshToken }));
    expect(await h.counter("luna_auth_refreshes_total", "replayed")).toBe(replays + 1);
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toContain("already used");
    // The legitimate successor dies with the family.
    expect((await rejection(h.auth.refresh({ refreshToken: r2.refreshToken }))).code).toBe(Code.Unauthenticated);
  });

  it("within the grace window a retry gets a fresh successor, and both successors work", async () => {
    const r1 = (await h.signUp()).tokens!;
    const lost = (await h.auth.refresh({ refreshToken: r1.refreshToken })).tokens!; // response "lost"
    const retry = (await h.auth.refresh({ refreshToken: r1.refreshToken })).tokens!;
    expect(retry.refreshToken).not.toBe(lost.refreshToken);
    expect((await h.auth.refresh({ refreshToken: retry.refreshToken })).tokens).toBeDefined();
    expect((await h.auth.refresh({ refreshToken: lost.refreshToken })).tokens).toBeDefined();
  });

  it("two concurrent refreshes (grace 30 s): both succeed with different tokens, the session lives on", async () => {
    const r1 = (await h.signUp()).tokens!;
    const results = await Promise.allSettled([h.auth.refresh({ refreshToken: r1.refreshToken }), h.auth.refresh({ refreshToken: r1.refreshToken })]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled"]);
    const [a, b] = results.map((r) => (r as PromiseFulfilledResult<{ tokens?: { refreshToken: string } }>).value.tokens!.refreshToken);
    expect(a).not.toBe(b);
    await h.auth.refresh({ refreshToken: a! });
    await h.auth.refresh({ refreshToken: b! });
  });

  it("two concurrent refreshes (grace 0): exactly one succeeds, the other is a replay and ends the session", async () => {
    const r1 = (await noGrace.signUp()).tokens!;
    const results = await Promise.allSettled([noGrace.auth.refresh({ refreshToken: r1.refreshToken }), noGrace.auth.refresh({ refreshToken: r1.refreshToken })]);
    const won = results.filter((r) => r.status === "fulfilled");
    expect(won).toHaveLength(1);
    const winner = (won[0] as PromiseFulfilledResult<{ tokens?: { refreshToken: string } }>).value.tokens!.refreshToken;
    expect((await rejection(noGrace.auth.refresh({ refreshToken: winner }))).code).toBe(Code.Unauthenticated);
  });

  it("expired refresh tokens and ended sessions are refused", async () => {
    const r1 = (await h.signUp()).tokens!;
    h.clock.advance(h.config.AUTH_REFRESH_TOKEN_TTL + 1000);
    expect((await rejection(h.auth.refresh({ refreshToken: r1.refreshToken }))).rawMessage).toMatch(/expired|ended/);
    h.clock.advance(-(h.config.AUTH_REFRESH_TOKEN_TTL + 1000));
    const unknown = "luna_rt_" + "A".repeat(43);
    expect((await rejection(h.auth.refresh({ refreshToken: unknown }))).code).toBe(Code.Unauthenticated);
  });

  it("SignOut revokes the session: its refresh tokens stop working; signing out twice is fine", async () => {
    const r1 = (await h.signUp()).tokens!;
    await h.auth.signOut({ refreshToken: r1.refreshToken });
    await h.auth.signOut({ refreshToken: r1.refreshToken });
    const err = await rejection(h.auth.refresh({ refreshToken: r1.refreshToken }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.rawMessage).toContain("session has ended");
  });
});
