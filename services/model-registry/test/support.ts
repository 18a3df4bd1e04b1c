// Test helpers shared by the handler and integration tests: signing keys, tokens per role, and an auth interceptor
// configured like the runtime's.
import { authInterceptor, createJwtVerifier, generateSigningKey, signAccessToken, toJwks, type Role } from "@luna/kit";
import { authRules } from "../src/server/routes.js";

export const ISSUER = "https://auth.luna.test";
export const AUDIENCE = "luna";

export interface TestAuth {
  interceptor: ReturnType<typeof authInterceptor>;
  token(role: Role, subject?: string): Promise<string>;
  /** Call options carrying a bearer token for `role`. */
  as(role: Role): Promise<{ headers: { authorization: string } }>;
}

export async function createTestAuth(): Promise<TestAuth> {
  const key = await generateSigningKey();
  const verifier = createJwtVerifier({ keys: toJwks(key), issuer: ISSUER, audience: AUDIENCE });
  const token = (role: Role, subject = `${role}-1`) =>
    signAccessToken({ privateKey: key.privateKey, kid: key.kid, issuer: ISSUER, audience: AUDIENCE, subject, role, ttlSeconds: 300 });
  return {
    interceptor: authInterceptor({ verifier, rules: authRules }),
    token,
    as: async (role) => ({ headers: { authorization: `Bearer ${await token(role)}` } }),
  };
}
