import { createRouterTransport, createClient, Code, ConnectError } from "@connectrpc/connect";
import { Health } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { generateSigningKey, signAccessToken, toJwks, type JwtVerifier, type Principal } from "./auth.js";
import { createHealth } from "./health.js";
import { cachingVerifier, createServiceVerifier, parseServiceUrls, publicJwkOf } from "./service.js";

async function setup() {
  const userKey = await generateSigningKey({ kid: "user-1" });
  const internalKey = await generateSigningKey({ kid: "internal-1" });
  const verifier = createServiceVerifier({
    userIssuer: "luna-auth",
    audience: "luna",
    userKeys: { keys: async () => toJwks(userKey) },
    internalIssuer: "luna-internal",
    internalPublicKey: publicJwkOf(internalKey.privateJwk),
  });
  return { userKey, internalKey, verifier };
}

const sign = (key: { privateJwk: Parameters<typeof signAccessToken>[0]["privateKey"]; kid: string }, issuer: string,
  role: "user" | "admin" | "internal", ttlSeconds = 60) =>
  signAccessToken({ privateKey: key.privateJwk, kid: key.kid, issuer, audience: "luna", subject: "s", role, ttlSeconds });

async function rejected(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

describe("createServiceVerifier", () => {
  it("accepts user tokens signed by auth and internal tokens signed by the internal key", async () => {
    const { userKey, internalKey, verifier } = await setup();
    expect((await verifier.verify(await sign(userKey, "luna-auth", "user"))).role).toBe("user");
    expect((await verifier.verify(await sign(internalKey, "luna-internal", "internal"))).role).toBe("internal");
  });

  it("never lets a user-key token pass as internal, nor the internal key mint user tokens", async () => {
    const { userKey, internalKey, verifier } = await setup();
    expect(await rejected(verifier.verify(await sign(userKey, "luna-auth", "internal")))).toBe(Code.Unauthenticated);
    expect(await rejected(verifier.verify(await sign(userKey, "luna-internal", "internal")))).toBe(Code.Unauthenticated);
    expect(await rejected(verifier.verify(await sign(internalKey, "luna-internal", "admin")))).toBe(Code.Unauthenticated);
    expect(await rejected(verifier.verify(await sign(internalKey, "luna-auth", "admin")))).toBe(Code.Unauthenticated);
  });
});

describe("cachingVerifier", () => {
  it("verifies a token once while it is valid, and again once it expired", async () => {
    const { userKey } = await setup();
    let calls = 0;
    const inner: JwtVerifier = { async verify(): Promise<Principal> {
      calls++;
      return { userId: "u", role: "user", tokenId: "t" };
    } };
    const cached = cachingVerifier(inner);
    const token = await sign(userKey, "luna-auth", "user");
    await cached.verify(token);
    await cached.verify(token);
    expect(calls).toBe(1);
    const expired = await sign(userKey, "luna-auth", "user", -1);
    await cached.verify(expired);
    await cached.verify(expired);
    expect(calls).toBe(3);
  });

  it("does not cache rejections", async () => {
    let calls = 0;
    const inner: JwtVerifier = { async verify(): Promise<Principal> {
      calls++;
      throw new ConnectError("invalid token", Code.Unauthenticated);
    } };
    const cached = cachingVerifier(inner);
    await expect(cached.verify("x.y.z")).rejects.toThrow();
    await expect(cached.verify("x.y.z")).rejects.toThrow();
    expect(calls).toBe(2);
  });
});

describe("parseServiceUrls", () => {
  it("maps service names to URLs and rejects unknown names or URLs", () => {
    expect(parseServiceUrls(["billing=http://billing:8080"]).get("billing")).toBe("http://billing:8080");
    expect(() => parseServiceUrls(["payments=http://x:1"])).toThrow(/LUNA_SERVICE_URLS/);
    expect(() => parseServiceUrls(["billing=billing:8080"])).toThrow(/LUNA_SERVICE_URLS/);
  });
});

describe("health over an in-memory transport", () => {
  it("answers Check for the whole server", async () => {
    const health = createHealth();
    const client = createClient(Health, createRouterTransport((r) => health.routes(r)));
    expect((await client.check({ service: "" })).status).toBe(1);
  });
});
