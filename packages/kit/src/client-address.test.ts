import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema, HealthListResponseSchema } from "@luna/contracts/grpc/health/v1/health_pb.js";
import { describe, expect, it } from "vitest";
import { clientAddressKey, clientAddressResolver, trustedProxiesOf, trustedProxyConfigSchema } from "./client-address.js";
import { ConfigError, loadConfig } from "./config.js";
import { createLogger } from "./log.js";
import { createServer } from "./server.js";
import { runtimeConfigSchema } from "./service.js";

describe("clientAddressResolver", () => {
  it("one hop (the gateway): the rightmost x-forwarded-for entry, whatever the client prepended", () => {
    const resolve = clientAddressResolver({ hops: 1, cidrs: [] });
    expect(resolve("10.0.0.2", "203.0.113.7")).toBe("203.0.113.7");
    expect(resolve("10.0.0.2", "1.1.1.1, 203.0.113.7")).toBe("203.0.113.7");
    expect(resolve("10.0.0.2", ["1.1.1.1", "203.0.113.7"])).toBe("203.0.113.7"); // repeated headers
  });
  it("n hops: the n-th from the right (a balancer in front of the gateway)", () => {
    const resolve = clientAddressResolver({ hops: 2, cidrs: [] });
    expect(resolve("10.0.0.2", "1.1.1.1, 203.0.113.7, 10.0.0.9")).toBe("203.0.113.7");
    expect(resolve("10.0.0.2", "203.0.113.7")).toBe("203.0.113.7"); // fewer entries than hops: the leftmost
  });
  it("CIDRs: skips the peer and entries inside them, stops at the first outside", () => {
    const resolve = clientAddressResolver({ hops: 0, cidrs: ["10.0.0.0/8", "fd00::/8"] });
    expect(resolve("10.0.0.2", "1.1.1.1, 203.0.113.7, 10.4.0.9")).toBe("203.0.113.7");
    expect(resolve("fd00::5", "[2001:DB8::1]:443")).toBe("2001:db8::1");
    // the peer is not a proxy: the header is the client's own and is ignored
    expect(resolve("198.51.100.2", "203.0.113.7")).toBe("198.51.100.2");
  });
  it("0 hops and no CIDRs ignore the header; garbage or nothing fall back to the peer", () => {
    expect(clientAddressResolver({ hops: 0, cidrs: [] })("10.0.0.2", "203.0.113.7")).toBe("10.0.0.2");
    const resolve = clientAddressResolver({ hops: 1, cidrs: [] });
    expect(resolve("::ffff:127.0.0.1", undefined)).toBe("127.0.0.1");
    expect(resolve("10.0.0.2", "not-an-ip")).toBe("10.0.0.2");
    expect(resolve(undefined, undefined)).toBeUndefined();
    expect(resolve(undefined, "203.0.113.7:5000")).toBe("203.0.113.7");
  });
  it("refuses a malformed CIDR", () => {
    expect(() => clientAddressResolver({ hops: 0, cidrs: ["10.0.0.0/33"] })).toThrow(/not a CIDR/);
  });
});

describe("configuration", () => {
  it("is part of every service's runtime configuration; default one hop", () => {
    expect(trustedProxiesOf(loadConfig(runtimeConfigSchema, {}))).toEqual({ hops: 1, cidrs: [] });
    expect(trustedProxiesOf(loadConfig(runtimeConfigSchema, {}), 0)).toEqual({ hops: 0, cidrs: [] });
    expect(trustedProxiesOf(loadConfig(runtimeConfigSchema, { LUNA_TRUSTED_PROXY_HOPS: "2", LUNA_TRUSTED_PROXIES: "10.0.0.0/8, 192.168.1.1" })))
      .toEqual({ hops: 2, cidrs: ["10.0.0.0/8", "192.168.1.1"] });
  });
  it("rejects bad values, naming the variable", () => {
    for (const env of [{ LUNA_TRUSTED_PROXY_HOPS: "-1" }, { LUNA_TRUSTED_PROXY_HOPS: "one" }, { LUNA_TRUSTED_PROXIES: "10.0.0.0/8,gateway" }, { LUNA_TRUSTED_PROXIES: "10.0.0.0/40" }]) {
      const err = (() => { try { loadConfig(trustedProxyConfigSchema, env); } catch (e) { return e; } return undefined; })();
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).issues[0]!.variable).toBe(Object.keys(env)[0]);
    }
  });
});

describe("the server applies it to every call", () => {
  it("puts the resolved address in the call's context values", async () => {
    const seen: Array<string | undefined> = [];
    const routes = (router: ConnectRouter) => router.service(Health, {
      check(_req, ctx) {
        seen.push(ctx.values.get(clientAddressKey));
        return create(HealthCheckResponseSchema, { status: Status.SERVING });
      },
      list: () => create(HealthListResponseSchema, {}),
      async *watch() {},
    });
    const log = createLogger({ service: "test", level: "silent" });
    const call = async (port: number, xff?: string) => {
      const res = await fetch(`http://127.0.0.1:${port}/grpc.health.v1.Health/Check`, {
        method: "POST", headers: { "content-type": "application/json", ...(xff ? { "x-forwarded-for": xff } : {}) }, body: "{}",
      });
      expect(res.status).toBe(200);
    };
    for (const [trustedProxies, xff, want] of [
      [undefined, "1.1.1.1, 203.0.113.7", "203.0.113.7"], // default: one hop
      [{ hops: 0, cidrs: [] }, "203.0.113.7", "127.0.0.1"],
      [{ hops: 0, cidrs: ["127.0.0.1/32", "10.0.0.0/8"] }, "1.1.1.1, 203.0.113.7, 10.9.9.9", "203.0.113.7"],
    ] as const) {
      const server = createServer({ routes, log, shutdownGraceMs: 10, trustedProxies: trustedProxies && { hops: trustedProxies.hops, cidrs: [...trustedProxies.cidrs] } });
      const { port } = await server.listen(0, "127.0.0.1");
      try {
        seen.length = 0;
        await call(port, xff);
        expect(seen).toEqual([want]);
      } finally {
        await server.close();
      }
    }
  });
});
