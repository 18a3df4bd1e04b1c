import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

/**
 * Envelope encryption of signing keys at rest: AES-256-GCM with the key-encryption key (KEK) from
 * `AUTH_KEY_ENCRYPTION_KEY`. A sealed blob is `version(1) | kekId(8) | iv(12) | tag(16) | ciphertext`; the KEK id
 * (first 8 bytes of SHA-256 of the KEK) lets a service tell "wrong KEK" from "corrupt data". The key id (`kid`) is
 * bound as associated data, so a blob cannot be swapped onto another key's row.
 */
const VERSION = 1;
const KEK_ID_BYTES = 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class KeyEncryptionError extends Error {}

export type Kek = { key: Buffer; id: Buffer };

/** Parses a 32-byte key given as base64 (standard or url-safe) or 64 hex characters. */
export function parseKek(text: string): Kek {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, "hex") : Buffer.from(t, "base64");
  if (key.length !== 32) throw new KeyEncryptionError("the key-encryption key must be 32 bytes (base64 or hex)");
  return kekFromBytes(key);
}

export function kekFromBytes(key: Buffer): Kek {
  return { key, id: createHash("sha256").update(key).digest().subarray(0, KEK_ID_BYTES) };
}

export function seal(kek: Kek, plaintext: Uint8Array, associatedData: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", kek.key, iv);
  cipher.setAAD(Buffer.from(associatedData, "utf8"));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), kek.id, iv, cipher.getAuthTag(), ciphertext]);
}

export function open(kek: Kek, sealed: Uint8Array, associatedData: string): Buffer {
  const blob = Buffer.from(sealed);
  if (blob.length < 1 + KEK_ID_BYTES + IV_BYTES + TAG_BYTES || blob[0] !== VERSION) {
    throw new KeyEncryptionError("sealed key has an unknown format");
  }
  const kekId = blob.subarray(1, 1 + KEK_ID_BYTES);
  if (!kekId.equals(kek.id)) throw new KeyEncryptionError("sealed key was encrypted with a different key-encryption key");
  const iv = blob.subarray(1 + KEK_ID_BYTES, 1 + KEK_ID_BYTES + IV_BYTES);
  const tag = blob.subarray(1 + KEK_ID_BYTES + IV_BYTES, 1 + KEK_ID_BYTES + IV_BYTES + TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", kek.key, iv);
  decipher.setAAD(Buffer.from(associatedData, "utf8"));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(blob.subarray(1 + KEK_ID_BYTES + IV_BYTES + TAG_BYTES)), decipher.final()]);
  } catch {
    throw new KeyEncryptionError("sealed key failed authentication (corrupt, or bound to another key id)");
  }
}
