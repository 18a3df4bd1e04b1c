// Errors that cross the wire are ConnectErrors with a human message; anything else is a bug and becomes a generic
// Internal error (the real error is logged, never sent: no stack traces or SQL to clients).
import { Code, ConnectError } from "@connectrpc/connect";
import type { Interceptor, StreamRequest, StreamResponse, UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "./log.js";
import { currentLogger, currentRequestId } from "./log.js";
import { isMalformedBinaryMessage, malformedMessageError } from "./malformed-body.js";

/** `INVALID_ARGUMENT` naming the offending field: `"<field>: <message>"`. */
export function invalidArgument(field: string, message: string): ConnectError {
  return new ConnectError(`${field}: ${message}`, Code.InvalidArgument);
}
/** `NOT_FOUND`: `"<what> not found"`, e.g. `notFound("conversation 42")`. */
export function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}
export function alreadyExists(message: string): ConnectError {
  return new ConnectError(message, Code.AlreadyExists);
}
export function permissionDenied(message: string): ConnectError {
  return new ConnectError(message, Code.PermissionDenied);
}
export function unauthenticated(message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}
/** `RESOURCE_EXHAUSTED`: out of credits, rate limited, too many concurrent streams. */
export function resourceExhausted(message: string): ConnectError {
  return new ConnectError(message, Code.ResourceExhausted);
}
export function failedPrecondition(message: string): ConnectError {
  return new ConnectError(message, Code.FailedPrecondition);
}
/** `UNAVAILABLE`: a dependency is down; the client may retry. */
export function unavailable(message: string): ConnectError {
  return new ConnectError(message, Code.Unavailable);
}
export function aborted(message: string): ConnectError {
  return new ConnectError(message, Code.Aborted);
}

// ---- Refusals every service words the same way (one wording per situation) ----------------------------------------

/** "1 credit", "50 credits". */
export function formatCredits(n: bigint | number): string {
  return `${n} ${BigInt(n) === 1n || BigInt(n) === -1n ? "credit" : "credits"}`;
}

/** The text of a credits refusal: "not enough credits: <what> needs 50 credits, 0 available". */
export function notEnoughCreditsMessage(what: string, needed: bigint | number, available: bigint | number): string {
  return `not enough credits: ${what} needs ${formatCredits(needed)}, ${available} available`;
}

/** `RESOURCE_EXHAUSTED` for credits that fall short, stating the need and what is available. */
export function notEnoughCredits(what: string, needed: bigint | number, available: bigint | number): ConnectError {
  return new ConnectError(notEnoughCreditsMessage(what, needed, available), Code.ResourceExhausted);
}

/**
 * The available credits stated in a credits refusal (undefined when the message states none). Also reads the wording
 * billing used before ("... available 42"), so a service keeps working next to an older billing during a rollout.
 */
export function availableCreditsOf(message: string): bigint | undefined {
  const m = /, (-?\d+) available$/.exec(message) ?? /\bavailable (-?\d+)/.exec(message);
  return m ? BigInt(m[1]!) : undefined;
}

/** `INVALID_ARGUMENT` for a negative page size (0 means the list's default; above its maximum is clamped). */
export function invalidPageSize(field: string, size: number): ConnectError {
  return invalidArgument(field, `must not be negative, got ${size}`);
}

/** `INVALID_ARGUMENT` for a page token this list did not hand out. */
export function invalidPageToken(field: string): ConnectError {
  return invalidArgument(field, "is not a next_page_token of this list (pass it back unchanged)");
}

function isAbortError(err: unknown): boolean {
  return err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
}

/**
 * The code a client will see for `err`: a ConnectError keeps its code, an abort is `Canceled`, anything else is
 * `Internal` (what {@link toConnectError} turns it into). Used by metrics, logs and traces so they agree.
 */
export function codeOf(err: unknown): Code {
  if (isMalformedBinaryMessage(err)) return Code.InvalidArgument;
  if (err instanceof ConnectError) return err.code;
  if (isAbortError(err)) return Code.Canceled;
  return Code.Internal;
}

const SERVER_FAULT_CODES = new Set<Code>([Code.Unknown, Code.DeadlineExceeded, Code.Unimplemented, Code.Internal,
  Code.Unavailable, Code.DataLoss]);

/** Whether a code means the server (or a dependency) failed rather than the caller (OpenTelemetry's gRPC rule). */
export function isServerFault(code: Code): boolean {
  return SERVER_FAULT_CODES.has(code);
}

/** Snake-case name of a code as used on the wire and in metric labels: "ok", "invalid_argument", ... */
export function codeName(code: Code | undefined): string {
  return code === undefined ? "ok" : codeToString(code);
}

/**
 * Turns any thrown value into something safe to send. ConnectErrors pass through unchanged (except a malformed
 * binary request message, which becomes `InvalidArgument`); an AbortError becomes
 * `Canceled`; anything else becomes `Internal` with a generic message carrying the request id (so support can find
 * the log line) while the real error, with its stack, is logged here.
 */
export function toConnectError(err: unknown, log?: Logger): ConnectError {
  // A binary request message that does not parse is the caller's fault (the library says INTERNAL).
  if (isMalformedBinaryMessage(err)) return malformedMessageError(err);
  if (err instanceof ConnectError) return err;
  if (isAbortError(err)) return new ConnectError("request canceled", Code.Canceled, undefined, undefined, err);
  const requestId = currentRequestId();
  (log ?? currentLogger()).error({ err }, "unhandled error in RPC handler");
  const message = requestId ? `internal error (request id ${requestId})` : "internal error";
  return new ConnectError(message, Code.Internal, undefined, undefined, err);
}

type AnyRequest = UnaryRequest | StreamRequest;
type AnyResponse = UnaryResponse | StreamResponse;

/** Hooks for {@link interceptCall}. */
export type CallHooks = {
  /** Runs `fn` inside the call's async context (AsyncLocalStorage / OpenTelemetry context); default: just calls it. */
  run?: <T>(fn: () => T) => T;
  /** Called exactly once when the call is over: `err` undefined = OK. A stream is over when it ends, fails, is
   * abandoned by the consumer, or its signal aborts (client cancel, deadline, server shutdown). */
  end?: (err: unknown) => void;
  /** Replaces an error before it propagates (unary rejection or mid-stream failure). */
  mapError?: (err: unknown) => unknown;
};

/**
 * The building block of Luna's server interceptors: calls `next(req)` and reports the call's outcome once, for unary
 * and streaming calls alike. A streaming handler runs lazily while its response is iterated, so every step of that
 * iteration is run through `hooks.run` to keep request-scoped context (request id, span) visible inside it.
 */
export async function interceptCall(
  next: (req: AnyRequest) => Promise<AnyResponse>,
  req: AnyRequest,
  hooks: CallHooks,
): Promise<AnyResponse> {
  const run = hooks.run ?? (<T>(fn: () => T): T => fn());
  const mapError = hooks.mapError ?? ((e: unknown) => e);
  let ended = false;
  const onAbort = (): void => finish(ConnectError.from(req.signal.reason, Code.Canceled));
  function finish(err: unknown): void {
    if (ended) return;
    ended = true;
    req.signal.removeEventListener("abort", onAbort);
    hooks.end?.(err);
  }
  if (req.signal.aborted) onAbort();
  else req.signal.addEventListener("abort", onAbort);

  let res: AnyResponse;
  try {
    res = await run(() => next(req));
  } catch (e) {
    const mapped = mapError(e);
    finish(mapped);
    throw mapped;
  }
  if (!res.stream) {
    finish(undefined);
    return res;
  }
  const source = res.message;
  const mapErrorOnce = (e: unknown): unknown => {
    const mapped = mapError(e);
    finish(mapped);
    return mapped;
  };
  const fail = (e: unknown): never => {
    throw mapErrorOnce(e);
  };
  const settle = (r: IteratorResult<unknown>): IteratorResult<unknown> => {
    if (r.done === true) finish(undefined);
    return r;
  };
  const message: AsyncIterable<unknown> = {
    [Symbol.asyncIterator]() {
      const it = run(() => source[Symbol.asyncIterator]());
      return {
        // Every streamed message passes through each interceptor's next(): a plain promise chain here, not an async
        // function awaiting one (which costs more promises and microtask turns per message and layer).
        next(): Promise<IteratorResult<unknown>> {
          let p: Promise<IteratorResult<unknown>>;
          try {
            p = run(() => it.next());
          } catch (e) {
            return Promise.reject(mapErrorOnce(e));
          }
          return p.then(settle, fail);
        },
        async return(value?: unknown) {
          finish(new ConnectError("stream abandoned", Code.Canceled));
          return it.return ? await run(() => it.return!(value)) : { done: true as const, value };
        },
        async throw(e?: unknown) {
          finish(e);
          if (it.throw) return await run(() => it.throw!(e));
          throw e;
        },
      };
    },
  };
  return { ...res, message } as StreamResponse;
}

/**
 * Maps every error leaving a handler (unary rejection or a streaming handler throwing mid-stream) through
 * {@link toConnectError}, so clients only ever see ConnectErrors with safe messages.
 */
export function errorInterceptor(log?: Logger): Interceptor {
  return (next) => (req) => interceptCall(next, req, { mapError: (e) => toConnectError(e, log) });
}
