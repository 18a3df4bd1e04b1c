// Errors as a person reads them: one sentence saying what happened and what to do.
import { Code, ConnectError } from "@connectrpc/connect";
import { isUnreachable } from "./connectivity.js";

/** Seconds until a retry is allowed, from a rate-limited answer's `retry-after` (or its message). */
function retryAfterSeconds(err: ConnectError): number | undefined {
  const header = Number(err.metadata.get("retry-after"));
  if (Number.isFinite(header) && header > 0) return Math.ceil(header);
  const m = /(\d+)\s*(?:s\b|seconds?)/i.exec(err.rawMessage);
  return m ? Number(m[1]) : undefined;
}

/**
 * A message for people: one sentence saying what happened and what to do, never the "[code]" prefix or an HTTP
 * status name ("Too Many Requests").
 */
export function errorMessage(err: unknown): string {
  // No answer from Luna (network down, or the gateway's own 502/503/504).
  if (isUnreachable(err)) return "Luna can't be reached — check your connection and try again.";
  if (err instanceof ConnectError) {
    const msg = err.rawMessage;
    if (err.code === Code.ResourceExhausted) {
      if (/credit|balance/i.test(msg)) {
        const first = msg.replace(/^not enough credits:?\s*/i, "");
        return `Not enough credits${first ? ` — ${first}` : ""}. Ask an admin for more.`;
      }
      const wait = retryAfterSeconds(err);
      return `Too many requests right now — try again ${wait ? `in ${wait} s` : "in a moment"}.`;
    }
    if (err.code === Code.Unavailable) return `The model or service is unavailable right now (${msg}) — try again shortly.`;
    if (err.code === Code.Unimplemented) return "This server does not offer that yet.";
    return msg;
  }
  return err instanceof Error ? err.message : String(err);
}
