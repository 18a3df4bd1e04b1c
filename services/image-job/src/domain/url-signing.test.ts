import { describe, expect, it } from "vitest";
import { isSafeKey, signImageUrl, verifyImageUrl } from "./url-signing.js";

const secret = "s".repeat(32);
const key = "images/u1/0190a6c4-1234-4abc-8def-0123456789ab/0.png";
const now = new Date("2026-01-01T00:00:00Z");

function pathOf(url: string): string {
  const u = new URL(url, "http://x");
  return `${u.pathname}${u.search}`;
}

describe("signed image URLs", () => {
  it("accepts a fresh URL and returns its key", () => {
    const url = signImageUrl({ secret, baseUrl: "", key, expiresAt: new Date(now.getTime() + 60_000) });
    expect(url.startsWith("/images/images/u1/")).toBe(true);
    expect(verifyImageUrl({ secret, pathAndQuery: url, now })).toMatchObject({ ok: true, key });
    const abs = signImageUrl({ secret, baseUrl: "https://api.example.com/", key, expiresAt: new Date(now.getTime() + 60_000) });
    expect(abs.startsWith("https://api.example.com/images/")).toBe(true);
  });

  it("refuses expired, tampered, foreign-secret and unsigned URLs with 403", () => {
    const fresh = signImageUrl({ secret, baseUrl: "", key, expiresAt: new Date(now.getTime() + 60_000) });
    const expired = signImageUrl({ secret, baseUrl: "", key, expiresAt: new Date(now.getTime() - 1000) });
    expect(verifyImageUrl({ secret, pathAndQuery: expired, now })).toMatchObject({ ok: false, status: 403, reason: "URL expired" });
    const later = fresh.replace(/exp=(\d+)/, (_m, e: string) => `exp=${Number(e) + 1}`);
    expect(verifyImageUrl({ secret, pathAndQuery: later, now })).toMatchObject({ ok: false, status: 403 });
    const otherKey = fresh.replace("/0.png", "/1.png");
    expect(verifyImageUrl({ secret, pathAndQuery: otherKey, now })).toMatchObject({ ok: false, status: 403 });
    expect(verifyImageUrl({ secret: "t".repeat(32), pathAndQuery: fresh, now })).toMatchObject({ ok: false, status: 403 });
    expect(verifyImageUrl({ secret, pathAndQuery: pathOf(fresh).split("?")[0]!, now })).toMatchObject({ ok: false, status: 403 });
  });

  it("refuses every other spelling of the signature, even ones that decode to the same bytes", () => {
    const fresh = signImageUrl({ secret, baseUrl: "", key, expiresAt: new Date(now.getTime() + 60_000) });
    const sig = new URL(fresh, "http://x").searchParams.get("sig")!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (const last of alphabet) {
      if (last === sig.at(-1)) continue;
      const tampered = fresh.replace(`sig=${sig}`, `sig=${sig.slice(0, -1)}${last}`);
      expect(verifyImageUrl({ secret, pathAndQuery: tampered, now })).toMatchObject({ ok: false, status: 403 });
    }
  });

  it("refuses unsafe keys", () => {
    for (const bad of ["", "../x", "a/../b", "/abs", "a//b", "a/./b", "a b", "a\\b"]) expect(isSafeKey(bad)).toBe(false);
    expect(() => signImageUrl({ secret, baseUrl: "", key: "../x", expiresAt: now })).toThrow(/unsafe/);
    expect(verifyImageUrl({ secret, pathAndQuery: "/images/..%2Fsecret?exp=1&sig=x", now })).toMatchObject({ ok: false, status: 400 });
    expect(verifyImageUrl({ secret, pathAndQuery: "/images/%E0%A4%A?exp=1", now })).toMatchObject({ ok: false, status: 400 });
  });
});
