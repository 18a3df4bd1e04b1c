// When Luna cannot be reached (no network, the server down, the gateway answering 502/503/504 without a Connect
// error), the page says so once, retries on its own with backoff, and reloads what it shows when Luna answers again,
// so nobody has to reload the page.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** Waits between reachability probes while Luna cannot be reached; the last one repeats. */
export const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 15_000];

/**
 * Whether a call failed without an answer from Luna: the request never got a response (fetch failed), or the
 * gateway answered 502/503/504 itself (connect-web then says "HTTP 503": a service's own UNAVAILABLE carries a
 * Connect error with its reason instead). A cancelled call is not an outage.
 */
export function isUnreachable(err: unknown): boolean {
  if (err instanceof ConnectError) {
    if (err.code === Code.Canceled) return false;
    if (err.code === Code.Unavailable && /^HTTP 50[234]$/.test(err.rawMessage)) return true;
    if (err.cause instanceof TypeError) return true;
    return [Code.Unknown, Code.Unavailable, Code.Internal].includes(err.code)
      && /failed to fetch|networkerror|load failed|network error|network connection was lost/i.test(err.rawMessage);
  }
  return err instanceof TypeError && /fetch|network|load failed/i.test(err.message);
}

export interface Connectivity {
  /** A call failed: an outage starts when Luna could not be reached. */
  failed(err: unknown): void;
  /** Luna answered (any answer, errors included): an outage ends. */
  answered(): void;
  readonly down: boolean;
}

export interface ConnectivityOptions {
  /** A cheap call that succeeds (or fails with an answer) once Luna is back. */
  probe(): Promise<unknown>;
  onDown(): void;
  /** Luna answers again: reload what the page shows. */
  onUp(): void;
  delays?: number[];
  /** Where the browser's `online` event comes from; default the window. */
  events?: Pick<EventTarget, "addEventListener">;
}

export function createConnectivity(opts: ConnectivityOptions): Connectivity {
  const delays = opts.delays ?? RETRY_DELAYS_MS;
  let down = false;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const schedule = (ms: number) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      opts.probe().then(up, (err: unknown) => {
        if (!down) return;
        if (!isUnreachable(err)) return up();
        attempt++;
        schedule(delays[Math.min(attempt, delays.length - 1)]!);
      });
    }, ms);
  };
  function up(): void {
    if (!down) return;
    down = false;
    clearTimeout(timer);
    opts.onUp();
  }
  // The browser says the network is back: try at once rather than at the next step of the backoff.
  const events = opts.events ?? (globalThis as Partial<Pick<EventTarget, "addEventListener">>);
  events.addEventListener?.("online", () => {
    if (down) schedule(0);
  });

  return {
    failed(err) {
      if (down || !isUnreachable(err)) return;
      down = true;
      attempt = 0;
      opts.onDown();
      schedule(delays[0]!);
    },
    answered: up,
    get down() {
      return down;
    },
  };
}

/** Reports every call's outcome to `c` (put it first, so failures of the token refresh inside are seen too). */
export function watchCalls(c: () => Connectivity | undefined): Interceptor {
  return (next) => async (req) => {
    try {
      const res = await next(req);
      c()?.answered();
      return res;
    } catch (err) {
      if (isUnreachable(err)) c()?.failed(err);
      else if (err instanceof ConnectError && err.code !== Code.Canceled) c()?.answered();
      throw err;
    }
  };
}
