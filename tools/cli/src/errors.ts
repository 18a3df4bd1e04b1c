// How failures reach a person: one line on stderr (`luna: <message>`), exit code 1, or 2 for usage mistakes.
import { Code, ConnectError } from "@connectrpc/connect";

/** Exit codes of the `luna` command. */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** Stopped with Ctrl-C (128 + SIGINT), as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** The command line itself is wrong (unknown flag, missing argument, bad value): exit code 2. */
export class UsageError extends Error {
  /** The command whose `--help` explains the right usage, e.g. "admin invites create". */
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A failure with a message already fit for a person (no code prefix is added). */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** Facts that make a server error clearer, e.g. where the CLI was trying to connect. */
export interface ErrorContext {
  url: string;
  signedIn: boolean;
  /** What to say when the server wants a session and there is none (names the servers that have one). */
  notSignedIn?: string;
}

/** Turns any error into the one line printed after `luna: `. */
export function describeError(err: unknown, ctx: ErrorContext): string {
  if (err instanceof UsageError || err instanceof CliError) return oneLine(err.message);
  // Connect wraps what an interceptor throws (e.g. a refused refresh) into a ConnectError with it as the cause.
  if (err instanceof ConnectError && (err.cause instanceof CliError || err.cause instanceof UsageError)) return oneLine(err.cause.message);
  if (err instanceof ConnectError) return oneLine(describeConnectError(err, ctx));
  if (err instanceof Error) {
    const sys = networkCause(err);
    if (sys) return oneLine(`cannot reach Luna at ${ctx.url} (${sys}); is it running? (set LUNA_URL or --url)`);
    return oneLine(err.message);
  }
  return oneLine(String(err));
}

function describeConnectError(err: ConnectError, ctx: ErrorContext): string {
  const message = err.rawMessage;
  switch (err.code) {
    case Code.Unauthenticated:
      return ctx.signedIn ? `${message} (sign in again with \`luna login\`)` : (ctx.notSignedIn ?? "not signed in: run `luna login` (or `luna signup`)");
    case Code.Unavailable: {
      const sys = networkCause(err);
      if (sys || /fetch failed|ECONNREFUSED|ENOTFOUND|socket hang up/i.test(message)) {
        return `cannot reach Luna at ${ctx.url} (${sys ?? message}); is it running? (set LUNA_URL or --url)`;
      }
      return `service unavailable: ${message}`;
    }
    case Code.Unimplemented:
      return `the server at ${ctx.url} does not offer this yet (${message})`;
    case Code.DeadlineExceeded:
      return `the server at ${ctx.url} did not answer in time`;
    case Code.Canceled:
      return "cancelled";
    case Code.Internal:
    case Code.Unknown:
      return `server error: ${message}`;
    default:
      return message;
  }
}

/** The system error code (ECONNREFUSED, ENOTFOUND, ...) somewhere in an error's cause chain. */
function networkCause(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 6; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return code;
    if (e instanceof AggregateError) {
      for (const inner of e.errors) {
        const c = networkCause(inner);
        if (c) return c;
      }
    }
  }
  return undefined;
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line || "unknown error";
}

/** True for a Connect error with this code. */
export function hasCode(err: unknown, code: Code): boolean {
  return err instanceof ConnectError && err.code === code;
}
