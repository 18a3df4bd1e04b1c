// Every service verifies the bearer JWT itself (the gateway checks it too, but nothing inside the cluster trusts an
// unauthenticated header). Access tokens are EdDSA/ES256 JWTs with iss, aud, exp, sub, jti, role and
// token_use: "access"; a refresh token or any other token type never passes. Service-to-service calls carry a
// short-lived token with role "internal", minted with the cluster's internal key.
import { randomUUID } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { Code, ConnectError, createContextKey } from "@connectrpc/connect";
import type { ContextKey, HandlerContext, Interceptor } from "@connectrpc/connect";
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  exportJWK,
  generateKeyPair,
  importJWK,
  jwtVerify,
  SignJWT,
} from "jose";
import type { CryptoKey, JSONWebKeySet, JWK, JWTVerifyGetKey } from "jose";

export type Role = "user" | "admin" | "internal";
export const ROLES: readonly Role[] = ["user", "admin", "internal"];
/** Who may call a method: anyone, a signed-in user (user or admin), an admin, or another Luna service. */
export type AccessRule = "public" | "user" | "admin" | "internal";
/** Keyed by "pkg.Service" or "pkg.Service/Method"; the method's rule wins; a method with no rule is denied. */
export type MethodRules = Record<string, AccessRule>;
/**
 * The verified caller. For internal tokens `userId` is the calling service's name. `issuedAt`: when the token was
 * issued (ms since the epoch), checked against the user's revocation cut-off (revocation.ts).
 */
export type Principal = {
  userId: string;
  role: Role;
  tokenId: string;
  issuedAt?: number;
  /** Set when the caller used a personal API key (api-keys.ts) instead of an access token: its id. */
  apiKeyId?: string;
};

/** Claim with the issue time in milliseconds (`iat` has whole seconds). */
export const ISSUED_AT_MS_CLAIM = "iat_ms";

/** The value of the `token_use` claim every access token carries (refresh tokens carry "refresh"). */
export const ACCESS_TOKEN_USE = "access";

/** The verified caller of the current RPC: `ctx.values.get(principalKey)`; undefined on public calls without token. */
export const principalKey: ContextKey<Principal | undefined> = createContextKey<Principal | undefined>(undefined, {
  description: "luna principal",
});

const RULES: readonly AccessRule[] = ["public", "user", "admin", "internal"];

function admits(rule: AccessRule, role: Role): boolean {
  switch (rule) {
    case "public":
      return true;
    case "user":
      return role === "user" || role === "admin";
    case "admin":
      return role === "admin";
    case "internal":
      return role === "internal";
  }
}

/**
 * The caller of the current RPC, or throws: `Unauthenticated` without a verified token, `PermissionDenied` when its
 * role is not admitted by any of `roles` (same meaning as rules: "user" admits admins too). No roles = any caller.
 */
export function requirePrincipal(ctx: HandlerContext, ...roles: Role[]): Principal {
  const principal = ctx.values.get(principalKey);
  if (!principal) throw new ConnectError("authentication required", Code.Unauthenticated);
  if (roles.length > 0 && !roles.some((r) => admits(r, principal.role))) {
    throw new ConnectError(`requires role ${roles.join(" or ")}`, Code.PermissionDenied);
  }
  return principal;
}

/** Options for {@link createJwtVerifier}. Exactly one of `jwksUrl` and `keys`. */
export type JwtVerifierOptions = {
  /** Remote JWKS (auth's `/.well-known/jwks.json`): cached, refetched on an unknown `kid` (at most once per cooldown). */
  jwksUrl?: string;
  /** A local key set, or a loader that is called again (at most once per cooldown) when a `kid` is unknown. */
  keys?: JSONWebKeySet | (() => Promise<JSONWebKeySet>);
  issuer: string | string[];
  audience: string;
  /** Accepted `alg` values; default ["EdDSA", "ES256"]. Never add "none" or HMAC algorithms. */
  algorithms?: string[];
  /** Clock skew allowed on exp/nbf/iat; default 30 s. */
  clockToleranceSec?: number;
  /** Minimum time between two JWKS fetches caused by unknown kids; default 30 000 ms. */
  jwksCooldownMs?: number;
  /** A fetched JWKS is refetched after this long even without unknown kids; default 600 000 ms (10 min). */
  jwksCacheMaxAgeMs?: number;
  /** Timeout of one JWKS HTTP fetch; default 5000 ms. */
  jwksTimeoutMs?: number;
};

/** Verifies access tokens; rejects with a ConnectError `Unauthenticated` (the reason is in its `cause`). */
export type JwtVerifier = { verify(token: string): Promise<Principal> };

function refetchingKeySet(load: () => Promise<JSONWebKeySet>, cooldownMs: number): JWTVerifyGetKey {
  let keySet: ReturnType<typeof createLocalJWKSet> | undefined;
  let loadedAt = 0;
  let loading: Promise<void> | undefined;
  const reload = (): Promise<void> => {
    loading ??= load()
      .then((jwks) => {
        keySet = createLocalJWKSet(jwks);
        loadedAt = Date.now();
      })
      .finally(() => {
        loading = undefined;
      });
    return loading;
  };
  return async (header, token) => {
    if (!keySet) await reload();
    try {
      return await keySet!(header, token);
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey) || Date.now() - loadedAt < cooldownMs) throw err;
      await reload();
      return await keySet!(header, token);
    }
  };
}

/** JWKS fetch failures (network, timeout, non-200, unparsable) and loader errors, as opposed to token faults. */
function isKeySetFailure(err: unknown): boolean {
  if (!(err instanceof joseErrors.JOSEError)) return true;
  return err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid
    || err.constructor === joseErrors.JOSEError;
}

function rejected(message: string, cause: unknown): ConnectError {
  return new ConnectError(message, Code.Unauthenticated, undefined, undefined, cause);
}

/** Creates a verifier of Luna access tokens (signature, alg allow-list, iss, aud, exp, nbf, and Luna's claims). */
export function createJwtVerifier(opts: JwtVerifierOptions): JwtVerifier {
  if ((opts.jwksUrl === undefined) === (opts.keys === undefined)) {
    throw new Error("createJwtVerifier: pass exactly one of jwksUrl and keys");
  }
  const cooldownMs = opts.jwksCooldownMs ?? 30_000;
  const getKey: JWTVerifyGetKey = opts.jwksUrl !== undefined
    ? createRemoteJWKSet(new URL(opts.jwksUrl), {
      cooldownDuration: cooldownMs,
      cacheMaxAge: opts.jwksCacheMaxAgeMs ?? 600_000,
      timeoutDuration: opts.jwksTimeoutMs ?? 5000,
    })
    : typeof opts.keys === "function"
      ? refetchingKeySet(opts.keys, cooldownMs)
      : createLocalJWKSet(opts.keys!);
  const algorithms = opts.algorithms ?? ["EdDSA", "ES256"];
  for (const alg of algorithms) {
    if (alg === "none" || alg.startsWith("HS")) throw new Error(`createJwtVerifier: algorithm ${alg} is not allowed`);
  }

  return {
    async verify(token) {
      let payload;
      try {
        ({ payload } = await jwtVerify(token, getKey, {
          issuer: opts.issuer,
          audience: opts.audience,
          algorithms,
          clockTolerance: opts.clockToleranceSec ?? 30,
          requiredClaims: ["exp", "sub", "jti"],
        }));
      } catch (err) {
        if (err instanceof joseErrors.JWTExpired) throw rejected("token expired", err);
        // The key set could not be fetched or loaded: that is our outage, not a bad token. Unauthenticated would make
        // clients drop their session; Unavailable makes them retry.
        if (isKeySetFailure(err)) {
          throw new ConnectError("cannot verify tokens right now", Code.Unavailable, undefined, undefined, err);
        }
        throw rejected("invalid token", err);
      }
      if (payload.token_use !== ACCESS_TOKEN_USE) {
        throw rejected("invalid token", new Error(`token_use is ${JSON.stringify(payload.token_use)}, expected "access"`));
      }
      const role = payload.role;
      if (typeof role !== "string" || !ROLES.includes(role as Role)) {
        throw rejected("invalid token", new Error(`role claim ${JSON.stringify(role)} is not one of ${ROLES.join(", ")}`));
      }
      if (typeof payload.sub !== "string" || payload.sub === "" || typeof payload.jti !== "string" || payload.jti === "") {
        throw rejected("invalid token", new Error("sub and jti must be non-empty strings"));
      }
      // Issue time in ms: iat_ms, else iat; a token with neither counts as issued at the epoch (any revocation of its
      // user voids it). iat_ms is only believed within iat's second, so it cannot move a token past a revocation.
      const iatMs = typeof payload.iat === "number" ? payload.iat * 1000 : 0;
      const precise = payload[ISSUED_AT_MS_CLAIM];
      const issuedAt = typeof precise === "number" && precise >= iatMs && precise < iatMs + 1000 ? precise : iatMs;
      return { userId: payload.sub, role: role as Role, tokenId: payload.jti, issuedAt };
    },
  };
}

/**
 * Enforces per-method access rules and puts the verified {@link Principal} in `ctx.values` ({@link principalKey}).
 * A token is always verified when present, also on public methods (so the caller is known there); an invalid token
 * is rejected even on a public method rather than silently ignored.
 */
export function authInterceptor(opts: { verifier: JwtVerifier; rules: MethodRules }): Interceptor {
  for (const [key, rule] of Object.entries(opts.rules)) {
    if (!RULES.includes(rule)) throw new Error(`authInterceptor: rule for ${key} is ${JSON.stringify(rule)}, expected one of ${RULES.join(", ")}`);
  }
  return (next) => async (req) => {
    const rule = ruleOf(opts.rules, req.service.typeName, req.method.name);
    let principal: Principal | undefined;
    const header = req.header.get("authorization");
    if (header !== null) {
      const match = /^Bearer[ ]+(\S+)$/i.exec(header.trim());
      if (!match) throw new ConnectError('malformed authorization header, expected "Bearer <token>"', Code.Unauthenticated);
      principal = await opts.verifier.verify(match[1]!);
    }
    checkAccess(rule, `${req.service.typeName}/${req.method.name}`, principal);
    if (principal) req.contextValues.set(principalKey, principal);
    return next(req);
  };
}

/** The rule of a method (its own, else its service's); `PermissionDenied` when there is none. */
export function ruleOf(rules: MethodRules, serviceTypeName: string, methodName: string): AccessRule {
  const rule = rules[`${serviceTypeName}/${methodName}`] ?? rules[serviceTypeName];
  if (rule === undefined) throw new ConnectError(`no access rule for ${serviceTypeName}/${methodName}`, Code.PermissionDenied);
  return rule;
}

/** Throws unless `principal` may call a method with `rule` (the check {@link authInterceptor} makes). */
export function checkAccess(rule: AccessRule, procedure: string, principal: Principal | undefined): void {
  if (rule === "public") return;
  if (!principal) throw new ConnectError("missing bearer token", Code.Unauthenticated);
  if (!admits(rule, principal.role)) throw new ConnectError(`${procedure} requires role ${rule}`, Code.PermissionDenied);
}

/** A private signing key: a CryptoKey or KeyObject, or a private JWK (alg from `alg`, else derived from kty/crv). */
export type SigningKeyInput = CryptoKey | KeyObject | JWK;

function algorithmOf(key: SigningKeyInput): string {
  if ("kty" in key) {
    if (typeof key.alg === "string") return key.alg;
    if (key.kty === "OKP" && key.crv === "Ed25519") return "EdDSA";
    if (key.kty === "EC" && key.crv === "P-256") return "ES256";
  } else if ("asymmetricKeyType" in key) {
    if (key.asymmetricKeyType === "ed25519") return "EdDSA";
    if (key.asymmetricKeyType === "ec") return "ES256";
  } else if ("algorithm" in key) {
    if (key.algorithm.name === "Ed25519" || key.algorithm.name === "EdDSA") return "EdDSA";
    if (key.algorithm.name === "ECDSA") return "ES256";
  }
  throw new Error("unsupported signing key: expected an Ed25519 or P-256 private key");
}

/** Options for {@link signAccessToken}. */
export type AccessTokenOptions = {
  privateKey: SigningKeyInput;
  kid: string;
  issuer: string;
  audience: string | string[];
  /** The user id, or the calling service's name for internal tokens. */
  subject: string;
  role: Role;
  ttlSeconds: number;
  /** `jti`; default a random UUID. */
  tokenId?: string;
  /** Extra claims (e.g. a session id); cannot override the claims above. */
  claims?: Record<string, unknown>;
};

/** Signs a Luna access token (the auth service, the internal minter and tests all use this one shape). */
export async function signAccessToken(opts: AccessTokenOptions): Promise<string> {
  const alg = algorithmOf(opts.privateKey);
  const key = "kty" in opts.privateKey ? await importJWK(opts.privateKey, alg) : opts.privateKey;
  const nowMs = Date.now();
  const iat = Math.floor(nowMs / 1000);
  // iat_ms: the issue time to the millisecond, so a revocation (revocation.ts) can void the tokens issued before it
  // and keep the one a sign-out-everywhere hands out in the same second.
  return new SignJWT({ ...opts.claims, role: opts.role, token_use: ACCESS_TOKEN_USE, [ISSUED_AT_MS_CLAIM]: nowMs })
    .setProtectedHeader({ alg, kid: opts.kid, typ: "JWT" })
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setSubject(opts.subject)
    .setJti(opts.tokenId ?? randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + opts.ttlSeconds)
    .sign(key);
}

/** Options for {@link createInternalTokenMinter}. */
export type InternalTokenMinterOptions = {
  privateKey: SigningKeyInput;
  kid: string;
  issuer: string;
  audience: string;
  /** Token lifetime; default 60 s. A cached token is replaced once less than a fifth of it (min 5 s) is left. */
  ttlSeconds?: number;
  /** `sub` of the tokens: the calling service's name; default the issuer. */
  subject?: string;
};

/** Mints short-lived `internal` tokens for service-to-service calls, reusing one until it is close to expiry. */
export function createInternalTokenMinter(opts: InternalTokenMinterOptions): { token(): Promise<string> } {
  const ttl = opts.ttlSeconds ?? 60;
  const renewBeforeMs = Math.max(5, ttl / 5) * 1000;
  let cached: { token: string; expiresAt: number } | undefined;
  let minting: Promise<string> | undefined;
  return {
    token() {
      if (cached && cached.expiresAt - Date.now() > renewBeforeMs) return Promise.resolve(cached.token);
      minting ??= (async () => {
        const expiresAt = Date.now() + ttl * 1000;
        const token = await signAccessToken({ privateKey: opts.privateKey, kid: opts.kid, issuer: opts.issuer,
          audience: opts.audience, subject: opts.subject ?? opts.issuer, role: "internal", ttlSeconds: ttl });
        cached = { token, expiresAt };
        return token;
      })().finally(() => {
        minting = undefined;
      });
      return minting;
    },
  };
}

/** Client interceptor adding `authorization: Bearer <internal JWT>` to every call of a Connect transport. */
export function internalCallInterceptor(minter: { token(): Promise<string> }): Interceptor {
  return (next) => async (req) => {
    req.header.set("authorization", `Bearer ${await minter.token()}`);
    return next(req);
  };
}

/** A generated signing key pair with its JWKs. */
export type SigningKey = {
  kid: string;
  alg: "EdDSA" | "ES256";
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** Private JWK (with kid and alg), e.g. for a Kubernetes Secret. */
  privateJwk: JWK;
  /** Public JWK (with kid, alg, use "sig") to publish in a JWKS. */
  publicJwk: JWK;
};

/** Generates an Ed25519 (default) or P-256 key pair; `kid` defaults to the RFC 7638 thumbprint of the public key. */
export async function generateSigningKey(opts: { kid?: string; alg?: "EdDSA" | "ES256" } = {}): Promise<SigningKey> {
  const alg = opts.alg ?? "EdDSA";
  const { privateKey, publicKey } = await generateKeyPair(alg === "EdDSA" ? "Ed25519" : "ES256", { extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = opts.kid ?? (await calculateJwkThumbprint(pub));
  return {
    kid,
    alg,
    privateKey,
    publicKey,
    privateJwk: { ...(await exportJWK(privateKey)), kid, alg },
    publicJwk: { ...pub, kid, alg, use: "sig" },
  };
}

const PRIVATE_JWK_MEMBERS = new Set(["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"]);

/** The JWKS document (`/.well-known/jwks.json`) publishing the public halves of `keys` (private members stripped). */
export function toJwks(...keys: Array<SigningKey | JWK>): JSONWebKeySet {
  const publicOnly = (jwk: JWK): JWK =>
    Object.fromEntries(Object.entries(jwk).filter(([member]) => !PRIVATE_JWK_MEMBERS.has(member))) as JWK;
  return { keys: keys.map((k) => publicOnly("publicJwk" in k ? k.publicJwk : k)) as JSONWebKeySet["keys"] };
}
