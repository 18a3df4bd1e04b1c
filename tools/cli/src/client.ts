// The client factory: Connect clients for any Luna service over one transport that adds the signed-in user's access
// token and refreshes it (once, with the stored refresh token) when it is about to expire or the server answers
// UNAUTHENTICATED.
import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client, type Interceptor, type StreamResponse, type Transport } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { Role, type Tokens, type User } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import type { CredentialStore, StoredSession } from "./credentials.js";
import { CliError } from "./errors.js";
import { VERSION } from "./version.js";

/** Connection settings of one CLI run. */
export interface ClientOptions {
  /** Server base URL, no trailing slash. */
  url: string;
  httpVersion: "1.1" | "2";
  /** Deadline of unary calls; streams (chat replies, job watching) have none. */
  timeoutMs: number;
  /** Refresh the access token when it expires within this many milliseconds. */
  refreshSkewMs: number;
}

// Public AuthService methods never carry an access token: a stale one would be rejected before Refresh or SignOut runs.
const TOKENLESS = new Set(["SignUp", "SignIn", "Refresh", "SignOut"]);

/** The signed-in session of one server: current tokens, refreshed at most once at a time. */
export class Session {
  private refreshing: Promise<string> | undefined;

  constructor(
    private readonly store: CredentialStore,
    private readonly opts: ClientOptions,
    private readonly refreshWith: Client<typeof AuthService>,
  ) {}

  get current(): StoredSession | undefined {
    return this.store.get(this.opts.url);
  }

  /** Stores the tokens of a sign-up, sign-in or password change. */
  save(tokens: Tokens | undefined, user: User | undefined, previous?: StoredSession): StoredSession {
    if (!tokens) throw new CliError("the server returned no tokens");
    const session: StoredSession = {
      accessToken: tokens.accessToken,
      accessTokenExpiresAt: tokens.accessTokenExpiresAt ? timestampMs(tokens.accessTokenExpiresAt) : 0,
      refreshToken: tokens.refreshToken,
      refreshTokenExpiresAt: tokens.refreshTokenExpiresAt ? timestampMs(tokens.refreshTokenExpiresAt) : 0,
      userId: user?.id ?? previous?.userId ?? "",
      email: user?.email ?? previous?.email ?? "",
      role: user ? roleName(user.role) : (previous?.role ?? ""),
    };
    this.store.set(this.opts.url, session);
    return session;
  }

  forget(): boolean {
    return this.store.delete(this.opts.url);
  }

  /** An access token to send now (refreshed first when about to expire); undefined when not signed in. */
  async accessToken(): Promise<string | undefined> {
    const s = this.current;
    if (!s) return undefined;
    if (s.accessTokenExpiresAt > 0 && s.accessTokenExpiresAt - Date.now() < this.opts.refreshSkewMs) return this.refresh();
    return s.accessToken;
  }

  /** Exchanges the refresh token for new tokens; a session the server ended is forgotten. */
  refresh(): Promise<string> {
    this.refreshing ??= (async () => {
      const s = this.current;
      if (!s) throw new ConnectError("not signed in", Code.Unauthenticated);
      try {
        const res = await this.refreshWith.refresh({ refreshToken: s.refreshToken }, { timeoutMs: this.opts.timeoutMs });
        return this.save(res.tokens, undefined, s).accessToken;
      } catch (err) {
        if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) {
          this.forget();
          throw new CliError(`your session has ended (${err.rawMessage}): run \`luna login\``);
        }
        throw err;
      }
    })().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }
}

/** Clients for every service, sharing one authenticated transport. */
export interface Clients {
  session: Session;
  transport: Transport;
  client<S extends DescService>(service: S): Client<S>;
}

/** Builds the transport and session for one CLI run. */
export function createClients(store: CredentialStore, opts: ClientOptions): Clients {
  const userAgent: Interceptor = (next) => (req) => {
    req.header.set("user-agent", `luna-cli/${VERSION}`);
    return next(req);
  };
  const base = { baseUrl: opts.url, httpVersion: opts.httpVersion, defaultTimeoutMs: opts.timeoutMs } as const;
  const plain = createConnectTransport({ ...base, interceptors: [userAgent] });
  const session = new Session(store, opts, createClient(AuthService, plain));
  const transport = createConnectTransport({ ...base, interceptors: [userAgent, bearerInterceptor(session)] });
  const cache = new Map<string, unknown>();
  return {
    session,
    transport,
    client<S extends DescService>(service: S): Client<S> {
      let c = cache.get(service.typeName) as Client<S> | undefined;
      if (!c) cache.set(service.typeName, (c = createClient(service, transport)));
      return c;
    },
  };
}

/** Adds `authorization: Bearer <access token>`; on UNAUTHENTICATED refreshes once and retries the call. */
function bearerInterceptor(session: Session): Interceptor {
  return (next) => async (req) => {
    if (req.service.typeName === AuthService.typeName && TOKENLESS.has(req.method.name)) return next(req);
    const token = await session.accessToken();
    if (!token) return next(req);
    req.header.set("authorization", `Bearer ${token}`);
    const retry = async () => {
      req.header.set("authorization", `Bearer ${await session.refresh()}`);
      return next(req);
    };
    if (!req.stream) {
      try {
        return await next(req);
      } catch (err) {
        if (!isUnauthenticated(err)) throw err;
        return await retry();
      }
    }
    // A stream request's messages are a one-shot iterable: keep them to send again on retry (server streaming
    // sends exactly one).
    const sent: MessageShape<DescMessage>[] = [];
    for await (const m of req.message) sent.push(m);
    const replay = () => Object.assign(req, { message: createAsyncIterable(sent) });
    replay();
    const res = await next(req);
    // The Connect protocol reports a rejected stream as an error in place of its first message: look at it before
    // handing the stream on, so nothing has been shown to the user when the call is retried.
    const first = await peek(res as StreamResponse);
    if (first.error && isUnauthenticated(first.error)) {
      replay();
      return retry();
    }
    if (first.error) throw first.error;
    return first.response;
  };
}

async function peek(res: StreamResponse): Promise<{ error?: unknown; response: StreamResponse }> {
  const it = res.message[Symbol.asyncIterator]();
  let head: IteratorResult<unknown>;
  try {
    head = await it.next();
  } catch (error) {
    return { error, response: res };
  }
  async function* rest() {
    try {
      if (head.done) return;
      yield head.value;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await it.return?.();
    }
  }
  return { response: { ...res, message: rest() } as StreamResponse };
}

function isUnauthenticated(err: unknown): boolean {
  return err instanceof ConnectError && err.code === Code.Unauthenticated;
}

/** "user" / "admin" for the proto Role enum. */
export function roleName(role: Role): string {
  return role === Role.ADMIN ? "admin" : role === Role.USER ? "user" : "unknown";
}
