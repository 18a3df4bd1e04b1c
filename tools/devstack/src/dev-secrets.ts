// Local development credentials and secrets, kept under the data dir (.luna) so that `make dev` and
// `make dev-split` can take turns on one data dir and a restart keeps working sessions and signed URLs.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The dev admin's credentials: from AUTH_ADMIN_EMAIL / AUTH_ADMIN_PASSWORD, else generated once and kept in
 * `<dataDir>/admin.txt` (0600) as "email password".
 */
export function devAdmin(env: NodeJS.ProcessEnv, dataDir: string): { email: string; password: string; file?: string } {
  const email = env.AUTH_ADMIN_EMAIL ?? "admin@luna.local";
  if (env.AUTH_ADMIN_PASSWORD) return { email, password: env.AUTH_ADMIN_PASSWORD };
  const file = join(dataDir, "admin.txt");
  if (existsSync(file)) {
    const [, password] = readFileSync(file, "utf8").trim().split(/\s+/);
    if (password) return { email, password, file };
  }
  const password = randomBytes(12).toString("base64url");
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, `${email} ${password}\n`, { mode: 0o600 });
  return { email, password, file };
}

/** A random 32-byte secret (base64) kept in `<dataDir>/<name>` (0600), created on first use. */
export function devSecret(dataDir: string, name: string): string {
  const file = join(dataDir, name);
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const secret = randomBytes(32).toString("base64");
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}
