// Where the CLI keeps its sessions: `credentials.json` in the config dir, readable by the owner only (0600), one
// session per server URL so a person can be signed in to a local and a remote Luna at once.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { CliError } from "./errors.js";

/** A signed-in session as stored on disk (times are epoch milliseconds). */
export interface StoredSession {
  accessToken: string;
  accessTokenExpiresAt: number;
  refreshToken: string;
  refreshTokenExpiresAt: number;
  userId: string;
  email: string;
  role: string;
}

interface CredentialsFile {
  version: 1;
  /** By server base URL (no trailing slash). */
  sessions: Record<string, StoredSession>;
}

export const CREDENTIALS_FILE = "credentials.json";

/**
 * The config dir: `LUNA_CONFIG_DIR`, else `$XDG_CONFIG_HOME/luna`, else `~/.config/luna`.
 */
export function configDir(env: NodeJS.ProcessEnv): string {
  if (env.LUNA_CONFIG_DIR) return env.LUNA_CONFIG_DIR;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), ".config");
  return join(base, "luna");
}

/** Reads and writes the sessions file. Writes are atomic (temp file + rename) and always mode 0600. */
export class CredentialStore {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, CREDENTIALS_FILE);
  }

  get(url: string): StoredSession | undefined {
    return this.read().sessions[url];
  }

  set(url: string, session: StoredSession): void {
    const file = this.read();
    file.sessions[url] = session;
    this.write(file);
  }

  /** Forgets the session for `url`; true when there was one. */
  delete(url: string): boolean {
    const file = this.read();
    if (!(url in file.sessions)) return false;
    delete file.sessions[url];
    this.write(file);
    return true;
  }

  private read(): CredentialsFile {
    if (!existsSync(this.path)) return { version: 1, sessions: {} };
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(this.path, "utf8"));
    } catch (err) {
      throw new CliError(`cannot read ${this.path}: ${err instanceof Error ? err.message : String(err)} (delete it and sign in again)`);
    }
    const sessions = (parsed as Partial<CredentialsFile> | null)?.sessions;
    if (typeof sessions !== "object" || sessions === null) {
      throw new CliError(`${this.path} is not a Luna credentials file (delete it and sign in again)`);
    }
    return { version: 1, sessions: sessions as Record<string, StoredSession> };
  }

  private write(file: CredentialsFile): void {
    if (Object.keys(file.sessions).length === 0) {
      rmSync(this.path, { force: true });
      return;
    }
    if (!existsSync(this.dir)) mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
    chmodSync(tmp, 0o600); // the umask may have narrowed the mode further, never widened; make it exact
    renameSync(tmp, this.path);
  }
}
