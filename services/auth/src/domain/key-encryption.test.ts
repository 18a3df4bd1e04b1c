import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { kekFromBytes, KeyEncryptionError, open, parseKek, seal } from "./key-encryption.js";

describe("key encryption", () => {
  const kek = kekFromBytes(randomBytes(32));
  it("round-trips", () => {
    const secret = randomBytes(48);
    expect(open(kek, seal(kek, secret, "kid-1"), "kid-1").equals(secret)).toBe(true);
  });
  it("refuses another KEK, another key id and tampering", () => {
    const sealed = seal(kek, Buffer.from("secret"), "kid-1");
    expect(() => open(kekFromBytes(randomBytes(32)), sealed, "kid-1")).toThrow(/different key-encryption key/);
    expect(() => open(kek, sealed, "kid-2")).toThrow(KeyEncryptionError);
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1]! ^= 1;
    expect(() => open(kek, tampered, "kid-1")).toThrow(/failed authentication/);
    expect(() => open(kek, Buffer.from([9, 9]), "kid-1")).toThrow(/unknown format/);
  });
  it("parses 32-byte keys as base64 or hex, and refuses other lengths", () => {
    const raw = randomBytes(32);
    expect(parseKek(raw.toString("base64")).key.equals(raw)).toBe(true);
    expect(parseKek(raw.toString("hex")).key.equals(raw)).toBe(true);
    expect(() => parseKek("c2hvcnQ=")).toThrow(/32 bytes/);
  });
});
