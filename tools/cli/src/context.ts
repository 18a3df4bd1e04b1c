// Everything a command needs for one run: settings from the environment, output, the session and the clients.
import { createClients, type Clients } from "./client.js";
import { configDir, CredentialStore, type StoredSession } from "./credentials.js";
import { CliError, UsageError } from "./errors.js";
import { writeLine, type Io } from "./io.js";

/** Settings read from the environment (and `--url`), with their defaults. */
export interface Settings {
  /** `LUNA_URL` (default http://localhost:8080); `--url` overrides it. */
  url: string;
  /** `LUNA_HTTP_VERSION`: "1.1" (default) or "2" (HTTP/2 cleartext). */
  httpVersion: "1.1" | "2";
  /** `LUNA_TIMEOUT_SECONDS`: deadline of each unary call (default 30). Streams have none. */
  timeoutMs: number;
  /** Config dir holding credentials.json (`LUNA_CONFIG_DIR`, `$XDG_CONFIG_HOME/luna`, `~/.config/luna`). */
  configDir: string;
}

export const DEFAULT_URL = "http://localhost:8080";
const DEFAULT_TIMEOUT_SECONDS = 30;
/** Access tokens are refreshed this long before they expire, so a call never races the expiry. */
const REFRESH_SKEW_MS = 30_000;

export function loadSettings(env: NodeJS.ProcessEnv, urlFlag?: string): Settings {
  const raw = urlFlag ?? (env.LUNA_URL || DEFAULT_URL);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${urlFlag ? "--url" : "LUNA_URL"} must be an http(s) URL, got "${raw}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${urlFlag ? "--url" : "LUNA_URL"} must be an http(s) URL, got "${raw}"`);
  }
  const httpVersion = env.LUNA_HTTP_VERSION || "1.1";
  if (httpVersion !== "1.1" && httpVersion !== "2") throw new CliError(`LUNA_HTTP_VERSION must be 1.1 or 2, got "${httpVersion}"`);
  const timeout = env.LUNA_TIMEOUT_SECONDS ? Number(env.LUNA_TIMEOUT_SECONDS) : DEFAULT_TIMEOUT_SECONDS;
  if (!Number.isFinite(timeout) || timeout <= 0) throw new CliError(`LUNA_TIMEOUT_SECONDS must be a positive number, got "${env.LUNA_TIMEOUT_SECONDS}"`);
  return { url: url.href.replace(/\/+$/, ""), httpVersion, timeoutMs: timeout * 1000, configDir: configDir(env) };
}

/** What a command runs with. */
export interface Context {
  io: Io;
  settings: Settings;
  store: CredentialStore;
  clients: Clients;
  /** One line to stdout (results) / stderr (progress, notes). */
  out(line?: string): void;
  note(line?: string): void;
  /** The stored session, or a clear "not signed in" error. */
  requireSession(): StoredSession;
}

/** "not signed in", naming the servers this machine does have a session for (a typo'd or other URL is the usual cause). */
export function notSignedIn(url: string, store: CredentialStore): string {
  let others: string[] = [];
  try {
    others = store.servers();
  } catch {
    others = []; // an unreadable file is reported when it is used
  }
  const hint = others.length > 0 ? ` (this machine is signed in to ${others.join(", ")}: pass --url or set LUNA_URL to use it)` : "";
  return `not signed in to ${url}: run \`luna login\` (or \`luna signup\`)${hint}`;
}

export function createContext(io: Io, settings: Settings): Context {
  const store = new CredentialStore(settings.configDir);
  const clients = createClients(store, { url: settings.url, httpVersion: settings.httpVersion, timeoutMs: settings.timeoutMs,
    refreshSkewMs: REFRESH_SKEW_MS });
  return {
    io,
    settings,
    store,
    clients,
    out: (line) => writeLine(io.stdout, line),
    note: (line) => writeLine(io.stderr, line),
    requireSession() {
      const s = clients.session.current;
      if (!s) throw new CliError(notSignedIn(settings.url, store));
      return s;
    },
  };
}
