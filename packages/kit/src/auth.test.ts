import { generateKeyPairSync } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import type { HandlerContext } from "@connectrpc/connect";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import {
  authInterceptor, createInternalTokenMinter, createJwtVerifier, generateSigningKey, principalKey, requirePrincipal,
  signAccessToken, toJwks,
} from "./auth.js";
import type { Principal, Role } from "./auth.js";

const ISS = "luna-auth";
const AUD = "luna";

async function rejection(p: Promise<unknown>): Promise<ConnectError & { cause: Error }> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConnectError)) throw new Error(`expected a ConnectError, got ${String(err)}`);
  return err as ConnectError & { cause: Error };
}

describe("createJwtVerifier", () => {
  it("accepts a Luna access token and returns its principal", async () => {
    const key = await generateSigningKey();
    const verifier = createJwtVerifier({ keys: toJwks(key), issuer: ISS, audience: AUD });
    const token = await signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: ISS, audience: AUD,
      subject: "u1", role: "user", ttlSeconds: 60, tokenId: "t1" });
    const principal = await verifier.verify(token);
    expect(principal).toEqual({ userId: "u1", role: "user", tokenId: "t1", issuedAt: decodeJwt(token).iat_ms });
    expect(Math.floor(principal.issuedAt! / 1000)).toBe(decodeJwt(token).iat);
  });

  it("rejects tokens without exp, sub or jti, and with an empty sub", async () => {
    const key = await generateSigningKey();
    const verifier = createJwtVerifier({ keys: toJwks(key), issuer: ISS, audience: AUD });
    const base = { role: "user", token_use: "access" };
    const sign = (payload: Record<string, unknown>, build: (j: SignJWT) => SignJWT) =>
      build(new SignJWT(payload).setProtectedHeader({ alg: "EdDSA", kid: key.kid }).setIssuer(ISS).setAudience(AUD))
        .sign(key.privateKey);
    const noExp = await sign(base, (j) => j.setSubject("u").setJti("j"));
    const noSub = await sign(base, (j) => j.setJti("j").setExpirationTime("1m"));
    const noJti = await sign(base, (j) => j.setSubject("u").setExpirationTime("1m"));
    const emptySub = await sign(base, (j) => j.setSubject("").setJti("j").setExpirationTime("1m"));
    for (const token of [noExp, noSub, noJti, emptySub]) {
      const err = await rejection(verifier.verify(token));
      expect(err.code).toBe(Code.Unauthenticated);
      expect(err.rawMessage).toBe("invalid token");
    }
  });

  it("says 'token expired' for expired tokens (clients refresh on it) and explains other rejections only in cause", async () => {
    const key = await generateSigningKey();
    const verifier = createJwtVerifier({ keys: toJwks(key), issuer: ISS, audience: AUD, clockToleranceSec: 0 });
    const expired = await new SignJWT({ role: "user", token_use: "access" }).setProtectedHeader({ alg: "EdDSA", kid: key.kid })
      .setIssuer(ISS).setAudience(AUD).setSubject("u").setJti("j").setExpirationTime(Math.floor(Date.now() / 1000) - 5)
      .sign(key.privateKey);
    expect((await rejection(verifier.verify(expired))).rawMessage).toBe("token expired");
    const refresh = await new SignJWT({ role: "user", token_use: "refresh" }).setProtectedHeader({ alg: "EdDSA", kid: key.kid })
      .setIssuer(ISS).setAudience(AUD).setSubject("u").setJti("j").setExpirationTime("1h").sign(key.privateKey);
    const err = await rejection(verifier.verify(refresh));
    expect(err.rawMessage).toBe("invalid token");
    expect(err.cause.message).toContain("token_use");
  });

  it("refuses unsafe algorithm configuration and ambiguous key sources", () => {
    expect(() => createJwtVerifier({ keys: { keys: [] }, issuer: ISS, audience: AUD, algorithms: ["HS256"] })).toThrow(/not allowed/);
    expect(() => createJwtVerifier({ keys: { keys: [] }, issuer: ISS, audience: AUD, algorithms: ["none"] })).toThrow(/not allowed/);
    expect(() => createJwtVerifier({ issuer: ISS, audience: AUD })).toThrow(/exactly one/);
  });

  it("answers UNAVAILABLE, not UNAUTHENTICATED, when the key set cannot be fetched or loaded", async () => {
    const key = await generateSigningKey();
    const token = await signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: ISS, audience: AUD, subject: "u", role: "user", ttlSeconds: 60 });
    const failing = http.createServer((_req, res) => res.writeHead(500).end("oops"));
    await new Promise<void>((resolve) => failing.listen(0, "127.0.0.1", resolve));
    const port = (failing.address() as AddressInfo).port;
    try {
      const verifiers = [
        createJwtVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks.json`, issuer: ISS, audience: AUD }),
        createJwtVerifier({ keys: async () => { throw new Error("secret store down"); }, issuer: ISS, audience: AUD }),
      ];
      for (const verifier of verifiers) {
        expect((await rejection(verifier.verify(token))).code).toBe(Code.Unavailable);
      }
    } finally {
      await new Promise((resolve) => failing.close(resolve));
    }
    const closed = createJwtVerifier({ jwksUrl: `http://127.0.0.1:${port}/jwks.json`, issuer: ISS, audience: AUD });
    expect((await rejection(closed.verify(token))).code).toBe(Code.Unavailable);
  });

  it("reloads a key loader on an unknown kid, at most once per cooldown", async () => {
    const a = await generateSigningKey();
    const b = await generateSigningKey();
    let current = toJwks(a);
    let loads = 0;
    const verifier = createJwtVerifier({ keys: async () => { loads++; return current; }, issuer: ISS, audience: AUD,
      jwksCooldownMs: 60_000 });
    const tokenA = await signAccessToken({ privateKey: a.privateKey, kid: a.kid, issuer: ISS, audience: AUD, subject: "u", role: "user", ttlSeconds: 60 });
    const tokenB = await signAccessToken({ privateKey: b.privateKey, kid: b.kid, issuer: ISS, audience: AUD, subject: "u", role: "user", ttlSeconds: 60 });
    await verifier.verify(tokenA);
    expect(loads).toBe(1);
    current = toJwks(a, b);
    // inside the cooldown an unknown kid does not reload
    await expect(verifier.verify(tokenB)).rejects.toMatchObject({ code: Code.Unauthenticated });
    expect(loads).toBe(1);

    const eager = createJwtVerifier({ keys: async () => { loads++; return current; }, issuer: ISS, audience: AUD, jwksCooldownMs: 0 });
    current = toJwks(a);
    await eager.verify(tokenA);
    current = toJwks(a, b);
    expect((await eager.verify(tokenB)).userId).toBe("u");
    expect(loads).toBe(3);
  });
});

describe("signAccessToken", () => {
  it("signs with an Ed25519 KeyObject, a P-256 private JWK, and puts Luna's claims in", async () => {
    const ed = generateKeyPairSync("ed25519");
    const edToken = await signAccessToken({ privateKey: ed.privateKey, kid: "k1", issuer: ISS, audience: AUD, subject: "u", role: "admin", ttlSeconds: 30 });
    expect(decodeProtectedHeader(edToken)).toMatchObject({ alg: "EdDSA", kid: "k1" });
    const claims = decodeJwt(edToken);
    expect(claims).toMatchObject({ iss: ISS, aud: AUD, sub: "u", role: "admin", token_use: "access" });
    expect(claims.exp! - claims.iat!).toBe(30);

    const es = await generateSigningKey({ alg: "ES256" });
    const { alg: _alg, ...jwkWithoutAlg } = es.privateJwk;
    const esToken = await signAccessToken({ privateKey: jwkWithoutAlg, kid: es.kid, issuer: ISS, audience: AUD, subject: "u", role: "user", ttlSeconds: 30 });
    expect(decodeProtectedHeader(esToken).alg).toBe("ES256");
    const verifier = createJwtVerifier({ keys: toJwks(es), issuer: ISS, audience: AUD });
    expect((await verifier.verify(esToken)).role).toBe("user");
  });

  it("does not let extra claims override Luna's", async () => {
    const key = await generateSigningKey();
    const token = await signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: ISS, audience: AUD, subject: "u",
      role: "user", ttlSeconds: 30, claims: { role: "admin", token_use: "refresh", sid: "s1" } });
    expect(decodeJwt(token)).toMatchObject({ role: "user", token_use: "access", sid: "s1" });
  });
});

describe("toJwks", () => {
  it("publishes only public key members", async () => {
    const key = await generateSigningKey();
    const jwks = toJwks(key, key.privateJwk);
    for (const jwk of jwks.keys) expect(jwk).not.toHaveProperty("d");
    expect(jwks.keys[0]).toMatchObject({ kty: "OKP", crv: "Ed25519", kid: key.kid, alg: "EdDSA", use: "sig" });
  });
});

describe("createInternalTokenMinter", () => {
  it("mints internal tokens and reuses one until close to expiry", async () => {
    const key = await generateSigningKey();
    const minter = createInternalTokenMinter({ privateKey: key.privateKey, kid: key.kid, issuer: "luna-internal",
      audience: AUD, subject: "chat-router", ttlSeconds: 60 });
    const [t1, t2] = await Promise.all([minter.token(), minter.token()]);
    expect(t1).toBe(t2);
    expect(await minter.token()).toBe(t1);
    const verifier = createJwtVerifier({ keys: toJwks(key), issuer: "luna-internal", audience: AUD });
    expect(await verifier.verify(t1)).toMatchObject({ userId: "chat-router", role: "internal" });
  });

  it("mints a new token once less than the renewal margin is left", async () => {
    const key = await generateSigningKey();
    // ttl 4 s is below the 5 s minimum margin, so every call must mint a fresh token
    const minter = createInternalTokenMinter({ privateKey: key.privateKey, kid: key.kid, issuer: "i", audience: AUD, ttlSeconds: 4 });
    const t1 = await minter.token();
    const t2 = await minter.token();
    expect(decodeJwt(t1).jti).not.toBe(decodeJwt(t2).jti);
  });
});

describe("requirePrincipal and rule validation", () => {
  const ctx = (principal?: Principal) => {
    const values = createContextValues();
    if (principal) values.set(principalKey, principal);
    return { values } as HandlerContext;
  };
  const as = (role: Role): Principal => ({ userId: "u", role, tokenId: "t" });

  it("requires a principal and admits roles like the rules do", () => {
    expect(() => requirePrincipal(ctx())).toThrow(expect.objectContaining({ code: Code.Unauthenticated }));
    expect(requirePrincipal(ctx(as("user"))).userId).toBe("u");
    expect(requirePrincipal(ctx(as("admin")), "user").role).toBe("admin");
    expect(() => requirePrincipal(ctx(as("user")), "admin")).toThrow(expect.objectContaining({ code: Code.PermissionDenied }));
    expect(() => requirePrincipal(ctx(as("internal")), "user")).toThrow(expect.objectContaining({ code: Code.PermissionDenied }));
    expect(() => requirePrincipal(ctx(as("admin")), "internal")).toThrow(expect.objectContaining({ code: Code.PermissionDenied }));
  });

  it("rejects unknown rule names at construction", () => {
    const verifier = { verify: async () => as("user") };
    expect(() => authInterceptor({ verifier, rules: { "x.Y": "everyone" as never } })).toThrow(/expected one of/);
  });
});
