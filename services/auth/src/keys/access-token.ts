import { randomUUID } from "node:crypto";
import { signAccessToken } from "@luna/kit";
import type { KeyStore } from "./key-store.js";

/** Issues access tokens: the kit's one token shape (sub, role, token_use "access", iss, aud, iat, exp, jti; kid). */
export interface AccessTokenIssuer {
  issue(subject: { userId: string; role: "user" | "admin" }): Promise<{ token: string; expiresAt: Date; tokenId: string }>;
}

export function createAccessTokenIssuer(opts: { keys: KeyStore; issuer: string; audience: string; ttlMs: number }): AccessTokenIssuer {
  const ttlSeconds = Math.max(1, Math.round(opts.ttlMs / 1000));
  return {
    async issue({ userId, role }) {
      const { kid, privateKey } = await opts.keys.signingKey();
      const tokenId = randomUUID();
      // signAccessToken stamps iat from the wall clock in whole seconds; exp = iat + ttl.
      const iat = Math.floor(Date.now() / 1000);
      const token = await signAccessToken({ privateKey, kid, issuer: opts.issuer, audience: opts.audience, subject: userId, role, ttlSeconds, tokenId });
      return { token, tokenId, expiresAt: new Date((iat + ttlSeconds) * 1000) };
    },
  };
}
