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

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/**
 * What identifies a server for its session: the URL parsed (case, default port and trailing slash do not matter),
 * with the loopback names localhost, 127.0.0.1 and [::1] taken as one (they are this machine whichever is typed).
 */
export function serverKey(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return url;
  }
  const host = LOOPBACK.has(u.hostname) ? "localhost" : u.hostname;
  return `${u.protocol}//${host}${u.port ? `:${u.port}` : ""}${u.pathname.replace(/\/+$/, "")}`;
}

/** Reads and writes the sessions file. Writes are atomic (temp file + rename) and always mode 0600. */
export class CredentialStore {
  readonly path: string;

  constructor(readonly dir: string) {
    this.path = join(dir, CREDENTIALS_FILE);
  }

  /** The session of this server: stored under `url` itself or under another spelling of it (see `serverKey`). */
  get(url: string): StoredSession | undefined {
    const sessions = this.read().sessions;
    return sessions[url] ?? sessions[this.keyOf(sessions, url) ?? ""];
  }

  set(url: string, session: StoredSession): void {
    const file = this.read();
    // One session per server: drop one stored under another spelling of the same URL.
    for (const k of Object.keys(file.sessions)) if (serverKey(k) === serverKey(url)) delete file.sessions[k];
    file.sessions[url] = session;
    this.write(file);
  }

  /** Forgets the session for `url` (under any spelling of it); true when there was one. */
  delete(url: string): boolean {
    const file = this.read();
    const keys = Object.keys(file.sessions).filter((k) => serverKey(k) === serverKey(url));
    if (keys.length === 0) return false;
    for (const k of keys) delete file.sessions[k];
    this.write(file);
    return true;
  }

  /** The servers this machine has sessions for (to say which one when there is none for the URL asked for). */
  servers(): string[] {
    return Object.keys(this.read().sessions);
  }

  private keyOf(sessions: Record<string, StoredSession>, url: string): string | undefined {
    return Object.keys(sessions).find((k) => serverKey(k) === serverKey(url));
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
