// What Envoy's protos cannot say about the edge configuration, as a list of problems (empty = fine). Run by
// gateway/test/semantic.test.ts against the committed file, and against deliberately broken copies of it.
import { cors as connectCors } from "@connectrpc/connect";
import type { ServiceName } from "@luna/kit";
import { ADMIN_CLUSTER, JWT_FILTER, JWT_PAYLOAD_METADATA, OPTIONAL_TOKEN, REQUIRE_TOKEN, STATS_PATH, UPSTREAM_SERVICES } from "./envoy.js";
import { clusters, connectionManagers, httpFiltersOf, listeners, resolve, routesOf, type EnvoyRoute } from "./model.js";
import { matchRoute } from "./routes.js";
import type { Rpc } from "./sources.js";

type Obj = Record<string, unknown>;

/** The HTTP filters, in the only order that works (see README). */
export const FILTER_ORDER = [
  "envoy.filters.http.cors",
  "envoy.filters.http.grpc_web",
  "envoy.filters.http.header_mutation",
  JWT_FILTER,
  "envoy.filters.http.ratelimit",
  "envoy.filters.http.router",
] as const;

/** The descriptor entry keys billing's RateLimitService reads (services/billing/src/limits/envoy.ts). */
export const BILLING_DESCRIPTOR_KEYS = ["user_id", "remote_address", "role", "feature", "generic_key"] as const;

const secs = (d: unknown): number => {
  const m = typeof d === "string" ? /^(\d+(?:\.\d+)?)s$/.exec(d) : null;
  return m ? Number(m[1]) : Number.NaN;
};

function filter(hcm: Obj, name: string): Obj | undefined {
  return httpFiltersOf(hcm).find((f) => f.name === name)?.typed_config as Obj | undefined;
}

/** The jwt_authn requirement a route applies: a requirement name, "disabled", or undefined (no per-route config). */
export function jwtRequirement(route: EnvoyRoute): string | undefined {
  const per = route.typed_per_filter_config?.[JWT_FILTER];
  if (!per) return undefined;
  if (per.disabled === true) return "disabled";
  return per.requirement_name as string | undefined;
}

/**
 * Checks a bootstrap (the parsed YAML, snake_case as generated) against the contracts' RPCs and the services' access
 * rules. `owner` says which service serves a proto service (from the services' own access rules).
 */
export function checkEnvoyConfig(config: Obj, rpcs: readonly Rpc[], owner: (protoService: string) => ServiceName | undefined): string[] {
  const problems: string[] = [];
  const hcms = connectionManagers(config);
  if (hcms.length === 0) return ["no http_connection_manager in any listener"];
  const clusterNames = new Set(clusters(config).map((c) => c.name as string));

  // Admin on localhost only.
  const admin = ((config.admin as Obj | undefined)?.address as Obj | undefined)?.socket_address as Obj | undefined;
  if (admin?.address !== "127.0.0.1") problems.push(`admin listens on ${String(admin?.address)}, not 127.0.0.1`);

  // Overload manager: shrink the heap at 95 %, stop accepting requests at 98 %.
  const actions = ((config.overload_manager as Obj | undefined)?.actions as Obj[] | undefined) ?? [];
  const threshold = (name: string): number | undefined =>
    ((actions.find((a) => a.name === name)?.triggers as Obj[] | undefined)?.[0]?.threshold as Obj | undefined)?.value as number | undefined;
  if (threshold("envoy.overload_actions.shrink_heap") !== 0.95) problems.push("overload manager: shrink_heap is not at 95%");
  if (threshold("envoy.overload_actions.stop_accepting_requests") !== 0.98) problems.push("overload manager: stop_accepting_requests is not at 98%");

  for (const c of clusters(config)) {
    const name = c.name as string;
    if (name === ADMIN_CLUSTER) continue;
    const h2 = ((c.typed_extension_protocol_options as Obj | undefined)?.["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] as Obj | undefined)
      ?.explicit_http_config as Obj | undefined;
    if (!h2?.http2_protocol_options) problems.push(`cluster ${name}: not HTTP/2 (gRPC needs it)`);
    if (!UPSTREAM_SERVICES.includes(name as ServiceName)) continue;
    if (c.type !== "STRICT_DNS") problems.push(`cluster ${name}: type ${String(c.type)}, expected STRICT_DNS (a headless Service, every pod)`);
    const hc = (c.health_checks as Obj[] | undefined)?.[0];
    if (!hc?.grpc_health_check) problems.push(`cluster ${name}: no gRPC health check`);
    if (!c.outlier_detection) problems.push(`cluster ${name}: no outlier detection`);
    if (!c.circuit_breakers) problems.push(`cluster ${name}: no circuit breakers`);
  }

  for (const [i, hcm] of hcms.entries()) {
    const at = `listener ${i}`;
    const filters = httpFiltersOf(hcm).map((f) => f.name as string);
    if (filters.at(-1) !== "envoy.filters.http.router") problems.push(`${at}: router is not the last HTTP filter (${filters.join(", ")})`);
    if (filters.join(",") !== FILTER_ORDER.join(",")) problems.push(`${at}: HTTP filters are ${filters.join(", ")}; expected ${FILTER_ORDER.join(", ")}`);

    // Connection hardening.
    const want: Array<[string, unknown, unknown]> = [
      ["codec_type", hcm.codec_type, "AUTO"],
      ["use_remote_address", hcm.use_remote_address, true],
      ["path_with_escaped_slashes_action", hcm.path_with_escaped_slashes_action, "REJECT_REQUEST"],
      ["headers_with_underscores_action", (hcm.common_http_protocol_options as Obj | undefined)?.headers_with_underscores_action, "REJECT_REQUEST"],
      ["http2 max_concurrent_streams", (hcm.http2_protocol_options as Obj | undefined)?.max_concurrent_streams, 100],
    ];
    for (const [what, got, expected] of want) if (got !== expected) problems.push(`${at}: ${what} is ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
    if (!(secs(hcm.request_headers_timeout) > 0)) problems.push(`${at}: no request_headers_timeout`);
    if (!(secs(hcm.stream_idle_timeout) > 0)) problems.push(`${at}: no stream_idle_timeout`);

    // Every cluster a route, the JWKS fetch, the rate limit service and the tracer use exists; API routes reach
    // services only.
    const referenced = new Map<string, string>();
    for (const r of routesOf(hcm)) {
      if (!r.route?.cluster) continue;
      referenced.set(r.route.cluster, `route ${r.name ?? "?"}`);
      if (!UPSTREAM_SERVICES.includes(r.route.cluster as ServiceName)) problems.push(`${at}: route ${r.name ?? "?"} reaches ${r.route.cluster}, not a Luna service`);
    }
    const jwt = filter(hcm, JWT_FILTER);
    const provider = Object.values((jwt?.providers as Record<string, Obj> | undefined) ?? {})[0];
    const jwksCluster = ((provider?.remote_jwks as Obj | undefined)?.http_uri as Obj | undefined)?.cluster as string | undefined;
    if (jwksCluster) referenced.set(jwksCluster, "jwt_authn remote_jwks");
    const rl = filter(hcm, "envoy.filters.http.ratelimit");
    const rlCluster = (((rl?.rate_limit_service as Obj | undefined)?.grpc_service as Obj | undefined)?.envoy_grpc as Obj | undefined)?.cluster_name as string | undefined;
    if (rlCluster) referenced.set(rlCluster, "ratelimit service");
    const tracer = ((((hcm.tracing as Obj | undefined)?.provider as Obj | undefined)?.typed_config as Obj | undefined)?.grpc_service as Obj | undefined)?.envoy_grpc as Obj | undefined;
    if (tracer?.cluster_name) referenced.set(tracer.cluster_name as string, "tracing");
    for (const [c, by] of referenced) if (!clusterNames.has(c)) problems.push(`${at}: ${by} uses cluster ${c}, which does not exist`);

    // jwt_authn: issuer, audience, JWKS through auth, claims as headers and metadata, preflights bypass it.
    if (!provider) problems.push(`${at}: jwt_authn has no provider`);
    else {
      if (provider.issuer !== "luna-auth") problems.push(`${at}: jwt issuer ${String(provider.issuer)}`);
      if (JSON.stringify(provider.audiences) !== JSON.stringify(["luna"])) problems.push(`${at}: jwt audiences ${JSON.stringify(provider.audiences)}`);
      if (jwksCluster !== "auth") problems.push(`${at}: JWKS not fetched through the auth cluster`);
      if (provider.payload_in_metadata !== JWT_PAYLOAD_METADATA) problems.push(`${at}: jwt payload not in metadata ${JWT_PAYLOAD_METADATA}`);
      if (provider.forward !== true) problems.push(`${at}: the token is not forwarded (services verify it themselves)`);
      if (JSON.stringify(provider.from_headers) !== JSON.stringify([{ name: "Authorization", value_prefix: "Bearer " }]) || provider.from_params) {
        problems.push(`${at}: tokens are taken from elsewhere than the Authorization header (services read only that)`);
      }
      const claimHeaders = ((provider.claim_to_headers as Obj[] | undefined) ?? []).map((c) => (c.header_name as string).toLowerCase()).sort();
      const stripped = ((((filter(hcm, "envoy.filters.http.header_mutation")?.mutations as Obj | undefined)?.request_mutations as Obj[] | undefined) ?? [])
        .map((m) => String(m.remove).toLowerCase())).sort();
      if (claimHeaders.length === 0) problems.push(`${at}: no claims forwarded as headers`);
      for (const h of claimHeaders) if (!stripped.includes(h)) problems.push(`${at}: claim header ${h} is not stripped from client requests before jwt_authn`);
    }
    if (jwt?.bypass_cors_preflight !== true) problems.push(`${at}: CORS preflights do not bypass jwt_authn`);

    // Rate limit: fail open, RESOURCE_EXHAUSTED, headers; descriptors only with keys billing reads.
    if (!rl) problems.push(`${at}: no ratelimit filter`);
    else {
      if (rl.failure_mode_deny !== false) problems.push(`${at}: rate limit does not fail open`);
      if (rl.rate_limited_as_resource_exhausted !== true) problems.push(`${at}: rate limited requests are not RESOURCE_EXHAUSTED`);
      if (rl.enable_x_ratelimit_headers !== "DRAFT_VERSION_03") problems.push(`${at}: no rate limit headers`);
      if (rlCluster !== "billing") problems.push(`${at}: rate limit service is not billing`);
    }

    // CORS: Connect, gRPC-Web and gRPC headers allowed and exposed.
    const vh = ((hcm.route_config as Obj).virtual_hosts as Obj[])[0]!;
    const corsPolicy = (vh.typed_per_filter_config as Record<string, Obj> | undefined)?.["envoy.filters.http.cors"];
    const list = (v: unknown): string[] => String(v ?? "").split(",").map((x) => x.trim().toLowerCase()).filter(Boolean);
    if (!corsPolicy) problems.push(`${at}: no CORS policy`);
    else {
      for (const m of connectCors.allowedMethods) if (!list(corsPolicy.allow_methods).includes(m.toLowerCase())) problems.push(`${at}: CORS does not allow method ${m}`);
      for (const h of [...connectCors.allowedHeaders, "Authorization"]) if (!list(corsPolicy.allow_headers).includes(h.toLowerCase())) problems.push(`${at}: CORS does not allow header ${h}`);
      for (const h of connectCors.exposedHeaders) if (!list(corsPolicy.expose_headers).includes(h.toLowerCase())) problems.push(`${at}: CORS does not expose header ${h}`);
    }

    // Routes: each RPC where the table sends it, with the right token rule and timeouts; internal RPCs nowhere.
    for (const rpc of rpcs) {
      const r = resolve(hcm, rpc.path);
      const dev = matchRoute(rpc.path);
      if (dev.kind !== "route") {
        if (r.kind === "cluster") problems.push(`${at}: ${rpc.path} (${dev.reason} in the route table) is routed to ${r.cluster}`);
        continue;
      }
      if (rpc.rule === "internal" || (rpc.rule === undefined && !dev.route.plain)) {
        problems.push(`${at}: ${rpc.path} is ${rpc.rule ?? "without an access rule"} but the route table routes it`);
      }
      if (r.kind !== "cluster") {
        problems.push(`${at}: client RPC ${rpc.path} is not routed (${r.status})`);
        continue;
      }
      const expected = dev.route.plain ? dev.service : owner(rpc.service);
      if (r.cluster !== expected) problems.push(`${at}: ${rpc.path} goes to ${r.cluster}, but ${String(expected)} serves ${rpc.service}`);
      const req = jwtRequirement(r.route);
      const wantReq = dev.route.plain ? "disabled" : rpc.rule === "public" ? OPTIONAL_TOKEN : REQUIRE_TOKEN;
      if (req !== wantReq) problems.push(`${at}: ${rpc.path} (${rpc.rule ?? "plain"}) has jwt requirement ${String(req)}, expected ${wantReq}`);
      const route = r.route.route!;
      if (rpc.streaming) {
        if (route.timeout !== "0s") problems.push(`${at}: streaming ${rpc.path} has route timeout ${String(route.timeout ?? "default (15s)")}, expected 0s`);
        if (!(secs(route.idle_timeout) > 0)) problems.push(`${at}: streaming ${rpc.path} has no idle timeout`);
        if (!(secs(route.max_stream_duration?.max_stream_duration) > 0)) problems.push(`${at}: streaming ${rpc.path} has no max stream duration`);
      } else if (!(secs(route.timeout) > 0)) {
        problems.push(`${at}: unary ${rpc.path} has route timeout ${String(route.timeout ?? "default")}, expected an explicit one`);
      }
    }
    for (const r of routesOf(hcm)) {
      // Every route that reaches a service has a token rule of its own (no route falls through unchecked).
      if (r.route?.cluster && jwtRequirement(r) === undefined) problems.push(`${at}: route ${r.name ?? "?"} has no jwt_authn requirement`);
      // Descriptors carry only keys billing reads; the subject comes from verified JWT metadata, never a header.
      for (const limit of r.route?.rate_limits ?? []) {
        for (const action of limit.actions) {
          for (const [kind, a] of Object.entries(action)) {
            const key = kind === "remote_address" ? "remote_address" : (a.descriptor_key as string | undefined) ?? kind;
            if (!(BILLING_DESCRIPTOR_KEYS as readonly string[]).includes(key)) problems.push(`${at}: route ${r.name ?? "?"} sends descriptor key ${key}, which billing does not read`);
            if (kind === "request_headers") problems.push(`${at}: route ${r.name ?? "?"} takes descriptor ${key} from a request header a client could send`);
          }
        }
      }
    }
  }
  // The stats listener: exactly /stats/prometheus from the admin interface, nothing else of it.
  for (const l of listeners(config)) {
    if (l.name !== "stats") continue;
    for (const fc of (l.filter_chains as Obj[] | undefined) ?? []) {
      for (const f of (fc.filters as Obj[] | undefined) ?? []) {
        for (const r of routesOf(f.typed_config as Obj)) {
          if (r.match.path !== STATS_PATH || Object.keys(r.match).length !== 1 || r.route?.cluster !== ADMIN_CLUSTER) {
            problems.push(`stats listener: route ${JSON.stringify(r.match)} → ${String(r.route?.cluster ?? "local")}; only ${STATS_PATH} may be served`);
          }
        }
      }
    }
  }
  for (const l of listeners(config)) {
    if (!["http", "https", "stats"].includes(l.name as string)) problems.push(`unexpected listener ${String(l.name)}`);
  }
  return problems;
}

/** Which Luna service serves a proto service, from the services' access rules (each lists its own services). */
export function ownerFromRules(rulesByService: Record<ServiceName, Record<string, unknown>>): (protoService: string) => ServiceName | undefined {
  return (protoService) => (Object.entries(rulesByService) as Array<[ServiceName, Record<string, unknown>]>)
    .find(([, rules]) => Object.keys(rules).some((k) => k === protoService || k.startsWith(`${protoService}/`)))?.[0];
}
