import { describe, expect, it } from "vitest";
import { clientIp } from "./client-ip.js";

describe("clientIp", () => {
  it("takes the gateway-set entry of x-forwarded-for", () => {
    expect(clientIp({ forwardedFor: "203.0.113.7", peerAddress: "10.0.0.2", trustedHops: 1 })).toBe("203.0.113.7");
  });
  it("ignores entries a client prepended (N-th from the right)", () => {
    expect(clientIp({ forwardedFor: "1.1.1.1, 203.0.113.7", peerAddress: "10.0.0.2", trustedHops: 1 })).toBe("203.0.113.7");
    expect(clientIp({ forwardedFor: "1.1.1.1, 203.0.113.7, 10.0.0.9", peerAddress: "10.0.0.2", trustedHops: 2 })).toBe("203.0.113.7");
  });
  it("falls back to the peer address without the header, with trustedHops 0, or with garbage", () => {
    expect(clientIp({ forwardedFor: null, peerAddress: "::ffff:127.0.0.1", trustedHops: 1 })).toBe("127.0.0.1");
    expect(clientIp({ forwardedFor: "203.0.113.7", peerAddress: "10.0.0.2", trustedHops: 0 })).toBe("10.0.0.2");
    expect(clientIp({ forwardedFor: "not-an-ip", peerAddress: "10.0.0.2", trustedHops: 1 })).toBe("10.0.0.2");
    expect(clientIp({ forwardedFor: undefined, peerAddress: undefined, trustedHops: 1 })).toBe("unknown");
  });
  it("strips ports and brackets", () => {
    expect(clientIp({ forwardedFor: "[2001:DB8::1]:443", peerAddress: undefined, trustedHops: 1 })).toBe("2001:db8::1");
    expect(clientIp({ forwardedFor: "203.0.113.7:5000", peerAddress: undefined, trustedHops: 1 })).toBe("203.0.113.7");
  });
});
