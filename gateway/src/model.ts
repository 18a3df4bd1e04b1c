// A reader of the generated configuration for the checks: which route Envoy picks for a path, and which rate limit
// descriptors it sends for a request. It models only the subset of Envoy the generator uses and throws on anything
// else (a match kind, a rate limit action), so a config it cannot read fails the checks instead of passing them. The
// real Envoy runs the same config in the workflow (.github/workflows/gateway.yml).
import { pathOf } from "./routes.js";

type Obj = Record<string, unknown>;

export interface EnvoyRoute {
  name?: string;
  match: { prefix?: string; path?: string; safe_regex?: { regex: string } } & Obj;
  route?: { cluster?: string; timeout?: string; idle_timeout?: string; max_stream_duration?: { max_stream_duration?: string };
    rate_limits?: RateLimitConfig[] } & Obj;
  direct_response?: { status: number } & Obj;
  typed_per_filter_config?: Record<string, Obj>;
}

export interface RateLimitConfig {
  actions: Array<Record<string, Obj>>;
}

/** The parts of the bootstrap the checks read. */
export function listeners(config: Obj): Obj[] {
  return ((config.static_resources as Obj | undefined)?.listeners as Obj[] | undefined) ?? [];
}

/** The public API listeners' connection managers (`http`, and `https` when there is one; not the stats listener). */
export function connectionManagers(config: Obj): Obj[] {
  return listeners(config).filter((l) => l.name !== "stats").flatMap((l) => (l.filter_chains as Obj[] ?? []).flatMap((fc) => (fc.filters as Obj[] ?? [])
    .filter((f) => f.name === "envoy.filters.network.http_connection_manager").map((f) => f.typed_config as Obj)));
}

export function clusters(config: Obj): Obj[] {
  return ((config.static_resources as Obj | undefined)?.clusters as Obj[] | undefined) ?? [];
}

export function routesOf(hcm: Obj): EnvoyRoute[] {
  const vhosts = ((hcm.route_config as Obj | undefined)?.virtual_hosts as Obj[] | undefined) ?? [];
  if (vhosts.length !== 1) throw new Error(`expected one virtual host, got ${vhosts.length}`);
  return (vhosts[0]!.routes as EnvoyRoute[] | undefined) ?? [];
}

export function httpFiltersOf(hcm: Obj): Obj[] {
  return (hcm.http_filters as Obj[] | undefined) ?? [];
}

/** What Envoy does with a request path. */
export type Resolution =
  | { kind: "cluster"; cluster: string; route: EnvoyRoute }
  | { kind: "local"; status: number; why: "direct_response" | "no_route" | "escaped_slash"; route?: EnvoyRoute };

function regexOf(re: string): RegExp {
  // RE2's inline dot-all flag → JS's `s` flag; any other inline flag is not modelled.
  const dotAll = re.startsWith("(?s)");
  const body = dotAll ? re.slice(4) : re;
  if (/\(\?[a-zA-Z]/.test(body)) throw new Error(`regex flags not modelled: ${re}`);
  return new RegExp(`^(?:${body})$`, dotAll ? "s" : "");
}

function matches(route: EnvoyRoute, path: string): boolean {
  const m = route.match;
  const kinds = ["prefix", "path", "safe_regex"].filter((k) => k in m);
  const other = Object.keys(m).filter((k) => !["prefix", "path", "safe_regex"].includes(k));
  if (kinds.length !== 1 || other.length > 0) throw new Error(`route ${route.name ?? "?"}: match not modelled: ${JSON.stringify(m)}`);
  if (m.prefix !== undefined) return path.startsWith(m.prefix);
  if (m.path !== undefined) return path === m.path;
  return regexOf(m.safe_regex!.regex).test(path);
}

/**
 * The route Envoy picks for a request target (first match, on the path without the query), after the connection
 * manager's own path handling. Only a manager that does not rewrite paths is modelled (normalize_path and
 * merge_slashes false: the config refuses instead).
 */
export function resolve(hcm: Obj, target: string): Resolution {
  if (hcm.normalize_path === true || hcm.merge_slashes === true) throw new Error("path rewriting (normalize_path, merge_slashes) is not modelled");
  const path = pathOf(target);
  if (hcm.path_with_escaped_slashes_action === "REJECT_REQUEST" && /%(2f|5c)/i.test(path)) return { kind: "local", status: 400, why: "escaped_slash" };
  for (const route of routesOf(hcm)) {
    if (!matches(route, path)) continue;
    if (route.direct_response) return { kind: "local", status: route.direct_response.status, why: "direct_response", route };
    const cluster = route.route?.cluster;
    if (typeof cluster !== "string") throw new Error(`route ${route.name ?? "?"}: only single-cluster routes are modelled`);
    return { kind: "cluster", cluster, route };
  }
  return { kind: "local", status: 404, why: "no_route" };
}

/** What a request carries that rate limit actions read. */
export interface RequestFacts {
  /** jwt_authn's verified payload (absent without a valid token). */
  jwtPayload?: Record<string, string>;
  /** The client address Envoy trusts. */
  remoteAddress: string;
  /** Request headers, lower-case names. */
  headers: Record<string, string>;
}

export type Descriptor = Array<{ key: string; value: string }>;

/**
 * The descriptors Envoy sends for a route (RouteAction.rate_limits): one per rate limit whose actions all produce an
 * entry, as Envoy does. Metadata is read from jwt_authn's `payload_in_metadata` only.
 */
export function descriptorsFor(route: EnvoyRoute, req: RequestFacts, jwtFilter: string, payloadKey: string): Descriptor[] {
  const out: Descriptor[] = [];
  for (const rl of route.route?.rate_limits ?? []) {
    const entries: Descriptor = [];
    let complete = true;
    for (const action of rl.actions) {
      const [kind, ...more] = Object.keys(action);
      if (!kind || more.length > 0) throw new Error(`rate limit action not modelled: ${JSON.stringify(action)}`);
      const a = action[kind]!;
      if (kind === "generic_key") entries.push({ key: (a.descriptor_key as string) || "generic_key", value: a.descriptor_value as string });
      else if (kind === "remote_address") entries.push({ key: "remote_address", value: req.remoteAddress });
      else if (kind === "metadata") {
        const mk = a.metadata_key as { key: string; path: Array<{ key: string }> };
        if (a.source !== "DYNAMIC" || mk.key !== jwtFilter || mk.path.length !== 2 || mk.path[0]!.key !== payloadKey) {
          throw new Error(`metadata action not modelled: ${JSON.stringify(a)}`);
        }
        const value = req.jwtPayload?.[mk.path[1]!.key] ?? (a.default_value as string | undefined);
        if (value) entries.push({ key: a.descriptor_key as string, value });
        else if (!a.skip_if_absent) complete = false;
      } else if (kind === "header_value_match") {
        const headers = a.headers as Array<{ name: string; present_match?: boolean } & Obj>;
        const all = headers.every((h) => {
          if (Object.keys(h).some((k) => k !== "name" && k !== "present_match")) throw new Error(`header matcher not modelled: ${JSON.stringify(h)}`);
          return (h.name.toLowerCase() in req.headers) === (h.present_match ?? true);
        });
        const expect = a.expect_match === undefined ? true : Boolean(a.expect_match);
        if (all === expect) entries.push({ key: (a.descriptor_key as string) || "header_match", value: a.descriptor_value as string });
        else complete = false;
      } else throw new Error(`rate limit action ${kind} not modelled`);
    }
    if (complete) out.push(entries);
  }
  return out;
}
