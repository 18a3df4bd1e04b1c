import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

/**
 * Password rules, after OWASP ASVS 5.0 V6 and NIST SP 800-63B: a length range and a blocklist of the most common
 * passwords, and no composition rules. Length counts Unicode code points after NFC normalisation (the same string
 * the hash is computed from).
 */
export type PasswordPolicy = {
  minLength: number;
  maxLength: number;
  /** Lower-case common passwords; a password matches case-insensitively. */
  common: ReadonlySet<string>;
};

/** The password exactly as it is hashed and verified: NFC, so visually identical input hashes identically. */
export function canonicalPassword(password: string): string {
  return password.normalize("NFC");
}

/** Returns why the password is refused, or undefined when it is acceptable. */
export function passwordProblem(password: string, policy: PasswordPolicy): string | undefined {
  const canonical = canonicalPassword(password);
  const length = [...canonical].length;
  if (length === 0) return "is required";
  if (length < policy.minLength) return `must be at least ${policy.minLength} characters`;
  if (length > policy.maxLength) return `must be at most ${policy.maxLength} characters`;
  if (policy.common.has(canonical.toLowerCase())) return "is one of the most commonly used passwords; choose another";
  return undefined;
}

let cached: ReadonlySet<string> | undefined;

/**
 * The vendored list in `common-passwords.txt.gz` (30,000 entries; source and regeneration in
 * `scripts/generate-common-passwords.mjs`). Loaded once per process.
 */
export function loadCommonPasswords(): ReadonlySet<string> {
  if (cached) return cached;
  // Next to this module in src/; the compiled dist/ falls back to the source copy when the build did not copy it.
  const candidates = [
    new URL("./common-passwords.txt.gz", import.meta.url),
    new URL("../../src/domain/common-passwords.txt.gz", import.meta.url),
  ].map((u) => fileURLToPath(u));
  const file = candidates.find((f) => existsSync(f));
  if (!file) throw new Error(`common password list not found (looked in ${candidates.join(", ")})`);
  const lines = gunzipSync(readFileSync(file)).toString("utf8").split("\n");
  cached = new Set(lines.filter((l) => l.length > 0 && !l.startsWith("#")));
  return cached;
}
