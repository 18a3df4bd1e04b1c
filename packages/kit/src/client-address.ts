// The client's own address, for per-client limits (auth's sign-in and invite throttles). Behind a proxy the TCP peer
// is the proxy; each proxy appends the address it received the request from to `x-forwarded-for`, so the client is
// found by walking that chain from the right past the proxies we trust. Entries further left are whatever the client
// chose to send and are never believed. Applied once, in the kit's server, for every service (LUNA_TRUSTED_PROXY_HOPS,
// LUNA_TRUSTED_PROXIES).
import { BlockList, isIP } from "node:net";
import * as z from "zod";
import { createContextKey } from "@connectrpc/connect";

/** Which proxies in front of a service are trusted to append the client's address to `x-forwarded-for`. */
export type TrustedProxies = {
  /**
   * How many proxies always sit in front of the service (the Envoy gateway: 1). The peer counts as the first, so
   * with 1 the client is the rightmost `x-forwarded-for` entry; 0 ignores the header (clients connect directly).
   */
  hops: number;
  /**
   * CIDRs ("10.0.0.0/8", "fd00::/8", or a single address) of proxies: after `hops`, the peer and entries from the
   * right that lie inside one of them are skipped too (for a varying number of load balancers).
   */
  cidrs: string[];
};

/** The default: one trusted hop (the gateway in front of every service in a deployment). */
export const DEFAULT_TRUSTED_PROXIES: TrustedProxies = { hops: 1, cidrs: [] };

/**
 * The client address of the call as the server resolved it (`ctx.values.get(clientAddressKey)`): a normalised IP
 * ("203.0.113.7", "2001:db8::1"), or undefined when neither the header nor the peer gives one.
 */
export const clientAddressKey = createContextKey<string | undefined>(undefined, { description: "luna client address" });

/** "[::1]:443" → "::1", "1.2.3.4:5678" → "1.2.3.4", "::ffff:1.2.3.4" → "1.2.3.4"; undefined when not an IP. */
export function normalizeIp(raw: string): string | undefined {
  let s = raw.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracketed) s = bracketed[1]!;
  else if (/^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(":"));
  if (s.toLowerCase().startsWith("::ffff:") && isIP(s.slice(7)) === 4) s = s.slice(7); // IPv4-mapped IPv6
  return isIP(s) ? s.toLowerCase() : undefined;
}

/** Parses "10.0.0.0/8", "fd00::/8" or a single address into [address, prefix, family]; undefined when malformed. */
function parseCidr(value: string): [string, number, "ipv4" | "ipv6"] | undefined {
  const [addr, prefixText, extra] = value.trim().split("/");
  if (extra !== undefined || addr === undefined) return undefined;
  const ip = normalizeIp(addr);
  const family = ip === undefined ? 0 : isIP(ip);
  if (ip === undefined || family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText ?? String(max)) || prefix > max) return undefined;
  return [ip, prefix, family === 4 ? "ipv4" : "ipv6"];
}

/** Validates a CIDR list; returns the first malformed entry, if any. */
export function invalidCidr(cidrs: string[]): string | undefined {
  return cidrs.find((c) => parseCidr(c) === undefined);
}

/** Returns the resolver the server applies to every call: (TCP peer, `x-forwarded-for`) → client address. */
export function clientAddressResolver(trusted: TrustedProxies): (peer: string | undefined, forwardedFor: string | string[] | undefined) => string | undefined {
  const bad = invalidCidr(trusted.cidrs);
  if (bad !== undefined) throw new Error(`trusted proxies: not a CIDR: ${JSON.stringify(bad)}`);
  const list = new BlockList();
  for (const c of trusted.cidrs) {
    const [ip, prefix, family] = parseCidr(c)!;
    list.addSubnet(ip, prefix, family);
  }
  const isProxy = (ip: string): boolean => list.check(ip, isIP(ip) === 4 ? "ipv4" : "ipv6");
  return (peer, forwardedFor) => {
    const header = Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor ?? "";
    // Rightmost last: the chain of addresses as the request travelled, ending with the TCP peer.
    const chain = [...header.split(",").map((s) => s.trim()).filter((s) => s.length > 0), peer ?? ""];
    let i = chain.length - 1;
    for (let skipped = 0; i > 0; skipped++, i--) {
      if (skipped < trusted.hops) continue;
      const ip = normalizeIp(chain[i]!);
      if (ip === undefined || !isProxy(ip)) break;
    }
    // An entry in a trusted position that is not an address (a client that bypassed the proxy, say): the peer.
    return normalizeIp(chain[i]!) ?? (peer === undefined ? undefined : normalizeIp(peer));
  };
}

const hopCount = z.coerce.number().int().min(0).max(10);

/** The environment variables every service reads for this (part of the kit's runtime configuration). */
export const trustedProxyConfigSchema = z.object({
  /** Proxies always in front of the service (unset: `defaultHops` of {@link trustedProxiesOf}, 1 in a deployment). */
  LUNA_TRUSTED_PROXY_HOPS: hopCount.optional(),
  /** Comma-separated CIDRs of further proxies (load balancers) whose `x-forwarded-for` entries are skipped. */
  LUNA_TRUSTED_PROXIES: z.string().optional().transform((v, ctx) => {
    const cidrs = (v ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0);
    const bad = invalidCidr(cidrs);
    if (bad !== undefined) {
      ctx.addIssue({ code: "custom", message: `expected CIDRs like 10.0.0.0/8 or fd00::/8, got ${JSON.stringify(bad.slice(0, 40))}` });
      return z.NEVER;
    }
    return cidrs;
  }),
});

/** The trusted proxies a loaded configuration describes; `defaultHops` applies when LUNA_TRUSTED_PROXY_HOPS is unset. */
export function trustedProxiesOf(config: z.infer<typeof trustedProxyConfigSchema>, defaultHops = DEFAULT_TRUSTED_PROXIES.hops): TrustedProxies {
  return { hops: config.LUNA_TRUSTED_PROXY_HOPS ?? defaultHops, cidrs: config.LUNA_TRUSTED_PROXIES };
}
