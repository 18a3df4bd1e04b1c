import { isIP } from "node:net";

/**
 * The client's address for per-IP throttling. Behind the gateway the peer is the gateway itself, so the address comes
 * from `x-forwarded-for`. Each proxy appends the address it received the request from, so with N trusted proxies in
 * front of the service the client is the N-th entry from the right; entries further left are whatever the client
 * chose to send and must not be trusted. The gateway in front of Luna sets a single entry, so with one trusted hop
 * the "first hop" and "N-th from the right" coincide. With `trustedHops = 0` the header is ignored. Neither known:
 * "unknown" (the throttle then applies no per-IP limit, only per-account ones).
 */
export function clientIp(opts: { forwardedFor: string | null | undefined; peerAddress: string | undefined; trustedHops: number }): string {
  if (opts.trustedHops > 0 && opts.forwardedFor) {
    const hops = opts.forwardedFor.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
    const candidate = hops[hops.length - opts.trustedHops] ?? hops[0];
    const ip = candidate ? normalizeIp(candidate) : undefined;
    if (ip) return ip;
  }
  return (opts.peerAddress && normalizeIp(opts.peerAddress)) || "unknown";
}

function normalizeIp(raw: string): string | undefined {
  let s = raw.trim();
  // "[::1]:1234" or "1.2.3.4:5678" (some proxies include the port)
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(":"));
  if (s.startsWith("::ffff:") && isIP(s.slice(7)) === 4) s = s.slice(7); // IPv4-mapped IPv6
  return isIP(s) ? s.toLowerCase() : undefined;
}
