// Talking to Luna from the browser: Connect over HTTP/1.1 to this page's own origin, with the signed-in user's
// access token, refreshed with the refresh token before it expires (and once after an UNAUTHENTICATED answer).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import type { Tokens } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { watchCalls, type Connectivity } from "./connectivity.js";

/** Where the session is kept (localStorage); other tabs watch it to follow a sign-out. */
export const SESSION_STORAGE_KEY = "luna.session";
const STORAGE_KEY = SESSION_STORAGE_KEY;
/** Access tokens are refreshed this long before they expire. */
const REFRESH_SKEW_MS = 30_000;
// These AuthService methods never carry an access token (a stale one would be rejected before Refresh runs).
const TOKENLESS = new Set(["SignUp", "SignIn", "Refresh", "SignOut"]);

export interface Session {
  accessToken: string;
  accessTokenExpiresAt: number;
  refreshToken: string;
  email: string;
}

export function loadSession(): Session | undefined {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    return raw ? (JSON.parse(raw) as Session) : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(tokens: Tokens | undefined, email: string): Session {
  if (!tokens) throw new Error("the server returned no tokens");
  const s: Session = {
    accessToken: tokens.accessToken,
    accessTokenExpiresAt: tokens.accessTokenExpiresAt ? timestampMs(tokens.accessTokenExpiresAt) : 0,
    refreshToken: tokens.refreshToken,
    email,
  };
  localStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  return s;
}

export function clearSession(): void {
  localStorage.removeItem(STORAGE_KEY);
}

const plain = createConnectTransport({ baseUrl: location.origin });
const authPlain = createClient(AuthService, plain);
let refreshing: Promise<string> | undefined;
/** Called when the session ended on the server (refresh refused): the page goes back to sign-in. */
let onSessionEnded: () => void = () => {};

export function whenSessionEnds(fn: () => void): void {
  onSessionEnded = fn;
}

function refresh(): Promise<string> {
  refreshing ??= (async () => {
    const s = loadSession();
    if (!s) throw new ConnectError("not signed in", Code.Unauthenticated);
    try {
      const res = await authPlain.refresh({ refreshToken: s.refreshToken });
      return saveSession(res.tokens, s.email).accessToken;
    } catch (err) {
      if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) {
        clearSession();
        onSessionEnded();
      }
      throw err;
    }
  })().finally(() => (refreshing = undefined));
  return refreshing;
}

const bearer: Interceptor = (next) => async (req) => {
  if (req.service.typeName === AuthService.typeName && TOKENLESS.has(req.method.name)) return next(req);
  const s = loadSession();
  if (!s) return next(req);
  const token = s.accessTokenExpiresAt - Date.now() < REFRESH_SKEW_MS ? await refresh() : s.accessToken;
  req.header.set("authorization", `Bearer ${token}`);
  if (req.stream) return next(req); // streams refresh ahead of time only: their request cannot be replayed
  try {
    return await next(req);
  } catch (err) {
    if (!(err instanceof ConnectError) || err.code !== Code.Unauthenticated) throw err;
    req.header.set("authorization", `Bearer ${await refresh()}`);
    return next(req);
  }
};

let connectivity: Connectivity | undefined;

/** Where calls report whether Luna answered (the "can't be reached — retrying" banner). */
export function useConnectivity(c: Connectivity): void {
  connectivity = c;
}

/** A failure seen outside a call's start (a reply stream that broke mid-way) counts as well. */
export function reportFailure(err: unknown): void {
  connectivity?.failed(err);
}

const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [watchCalls(() => connectivity), bearer] });
const clients = new Map<string, unknown>();

/** A Connect client for one Luna service. */
export function client<S extends DescService>(service: S): Client<S> {
  let c = clients.get(service.typeName) as Client<S> | undefined;
  if (!c) clients.set(service.typeName, (c = createClient(service, transport)));
  return c;
}

export { errorMessage } from "./errors.js";
