// Builds Envoy's v3 bootstrap (static, no control plane) for the edge from the route table (routes.ts) and the RPCs
// the contracts and the services' access rules describe (sources.ts). `generate.ts` writes it to
// charts/gateway/files/envoy.yaml; gateway/README.md explains it filter by filter. The output is plain data in
// Envoy's proto-JSON form (snake_case names, durations as "10s"), parsed by Envoy's own protos in the tests.
import { cors as connectCors } from "@connectrpc/connect";
import type { ServiceName } from "@luna/kit";
import { stringify } from "yaml";
import { DENIED_PREFIXES, MALFORMED_PATH, PUBLIC_ROUTES, matchRoute, rateLimitFeature, type GatewayRoute } from "./routes.js";
import type { Rpc } from "./sources.js";

/** Every number an operator may want to change; defaults documented in gateway/README.md. */
export interface EdgeSettings {
  /** The HTTP/1.1 + h2c listener. */
  port: number;
  /** Envoy's admin interface, bound to 127.0.0.1 only (stats, readiness, config dump). */
  adminPort: number;
  /** A listener serving only the admin's `/stats/prometheus` (for the chart's PodMonitor); 0 = none. */
  statsPort: number;
  /** Port of every service's API on its headless Service (`<service>-headless`). */
  upstreamPort: number;
  /** host:port per cluster, replacing `<service>-headless:<upstreamPort>` (CI runs the services on the runner). */
  upstreamOverrides: Partial<Record<string, string>>;
  /** The OpenTelemetry collector (OTLP/gRPC). */
  otelCollector: string;
  /** Percentage of requests traced when the client did not decide (traceparent sampled flag). */
  traceSamplingPercent: number;
  /** Proxies in front of Envoy whose X-Forwarded-For entries are trusted (0: Envoy is the edge). */
  xffTrustedHops: number;
  /** A client must send its complete request headers within this time. */
  requestHeadersTimeout: string;
  /** A stream with no bytes either way for this long is reset (HCM default for every route). */
  streamIdleTimeout: string;
  /** Route timeout of unary RPCs and plain routes (Envoy's default is 15 s). */
  unaryTimeout: string;
  /** Streaming RPCs: no route timeout; reset after this long without a byte... */
  streamingIdleTimeout: string;
  /** ...and after this long in total (a chat reply, a queued image job being watched). */
  streamingMaxDuration: string;
  /** The rate limit service's answer is waited for this long, then the request passes (fail open). */
  rateLimitTimeout: string;
  /** A fetched JWKS is used this long before it is fetched again (async_fetch refreshes it in the background). */
  jwksCacheDuration: string;
  /** Clock skew allowed on exp/nbf. */
  jwtClockSkewSeconds: number;
  /** Issuer and audience of access tokens (auth's LUNA_JWT_ISSUER and the kit's audience). */
  jwtIssuer: string;
  jwtAudience: string;
  /** Rate limit domain (billing's BILLING_RATELIMIT_DOMAIN). */
  rateLimitDomain: string;
  /** Allowed CORS origins; "*" allows any (tokens are bearer headers, never cookies). */
  corsOrigins: string[];
  /** Overload manager: the heap size the percentages refer to (set it to the container's memory limit). */
  maxHeapBytes: number;
  /** Concurrent downstream connections across all listeners. */
  maxDownstreamConnections: number;
  /** Per upstream cluster. */
  circuitBreaker: { maxConnections: number; maxPendingRequests: number; maxRequests: number; maxRetries: number };
  /** A TLS listener beside the cleartext one, when the chart mounts a certificate (see README). */
  tls?: { port: number; certificateFile: string; privateKeyFile: string };
}

export const DEFAULT_SETTINGS: EdgeSettings = {
  port: 8080,
  adminPort: 9901,
  statsPort: 9902,
  upstreamPort: 8080,
  upstreamOverrides: {},
  otelCollector: "otel-collector:4317",
  traceSamplingPercent: 10,
  xffTrustedHops: 0,
  requestHeadersTimeout: "10s",
  streamIdleTimeout: "300s",
  unaryTimeout: "60s",
  streamingIdleTimeout: "300s",
  streamingMaxDuration: "3600s",
  rateLimitTimeout: "0.1s",
  jwksCacheDuration: "300s",
  jwtClockSkewSeconds: 30,
  jwtIssuer: "luna-auth",
  jwtAudience: "luna",
  rateLimitDomain: "luna",
  corsOrigins: ["*"],
  maxHeapBytes: 1_073_741_824,
  maxDownstreamConnections: 50_000,
  circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 4096, maxRetries: 3 },
};

/** The services behind the edge, one cluster each (the names are the route table's service names). */
export const UPSTREAM_SERVICES: readonly ServiceName[] = ["auth", "billing", "model-registry", "chat-router", "image-job"];

/** Names used across the config and its tests. */
export const JWT_PROVIDER = "luna";
export const JWT_PAYLOAD_METADATA = "jwt_payload";
export const JWT_FILTER = "envoy.filters.http.jwt_authn";
/** The headers verified claims are forwarded in; client-sent copies are stripped before jwt_authn runs. */
export const CLAIM_HEADERS = { sub: "x-luna-user-id", role: "x-luna-role" } as const;
/** jwt_authn requirement names (per route): a valid token required, or a token optional (but checked when sent). */
export const REQUIRE_TOKEN = "token";
export const OPTIONAL_TOKEN = "optional";
export const OTEL_CLUSTER = "otel-collector";
/** The admin interface as a cluster, reached only by the stats listener's one route. */
export const ADMIN_CLUSTER = "envoy-admin";
export const STATS_PATH = "/stats/prometheus";

const T = (name: string): string => `type.googleapis.com/${name}`;

/** How a route of the generated table treats tokens. */
type Access = "token" | "optional" | "none";

function jwtPerRoute(access: Access): Record<string, unknown> {
  return access === "none"
    ? { "@type": T("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"), disabled: true }
    : { "@type": T("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"), requirement_name: access === "token" ? REQUIRE_TOKEN : OPTIONAL_TOKEN };
}

/**
 * Rate limit descriptors of a route. Billing's RateLimitService reads `user_id`, `role`, `remote_address` and
 * `feature` (services/billing/src/limits/envoy.ts). A signed-in caller is counted by the JWT `sub` (from jwt_authn's
 * metadata, never from a header a client could send); a caller without a token by the client address Envoy trusts
 * (use_remote_address + xff_num_trusted_hops) under role `anonymous`. A descriptor whose metadata is missing is not
 * sent, so exactly one of the two applies to any request.
 */
export function rateLimits(feature: string, anonymousAllowed: boolean): Array<Record<string, unknown>> {
  const claim = (key: string, claimName: string): Record<string, unknown> => ({
    metadata: {
      descriptor_key: key,
      metadata_key: { key: JWT_FILTER, path: [{ key: JWT_PAYLOAD_METADATA }, { key: claimName }] },
      source: "DYNAMIC",
    },
  });
  const generic = { generic_key: { descriptor_key: "feature", descriptor_value: feature } };
  const user = { actions: [claim("user_id", "sub"), claim("role", "role"), generic] };
  if (!anonymousAllowed) return [user];
  const anonymous = {
    actions: [
      // Only when no token was sent: a signed-in caller is counted as a user, not also by address.
      { header_value_match: { descriptor_key: "role", descriptor_value: "anonymous", expect_match: false,
        headers: [{ name: "authorization", present_match: true }] } },
      { remote_address: {} },
      generic,
    ],
  };
  return [user, anonymous];
}

function clusterRoute(service: string, s: EdgeSettings, streaming: boolean): Record<string, unknown> {
  return streaming
    ? { cluster: service, timeout: "0s", idle_timeout: s.streamingIdleTimeout, max_stream_duration: { max_stream_duration: s.streamingMaxDuration } }
    : { cluster: service, timeout: s.unaryTimeout };
}

const NOT_FOUND = { status: 404, body: { inline_string: "not found" } };

/** The virtual host's routes, in match order (see README: refusals, denied prefixes, RPCs, plain paths, prefixes). */
export function buildRoutes(rpcs: readonly Rpc[], s: EdgeSettings, table: readonly GatewayRoute[] = PUBLIC_ROUTES,
  denied: readonly string[] = DENIED_PREFIXES): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  const off = { [JWT_FILTER]: jwtPerRoute("none") };
  // 1. A path not in normal form is refused, never rewritten (the dev gateway's rule; routes.ts MALFORMED_PATH).
  out.push({ name: "refuse-malformed", match: { safe_regex: { regex: `(?s)${MALFORMED_PATH}` } }, direct_response: NOT_FOUND,
    typed_per_filter_config: off });
  // 2. Internal services: 404 before any route is tried.
  for (const prefix of denied) {
    out.push({ name: `deny ${prefix}`, match: { prefix }, direct_response: NOT_FOUND, typed_per_filter_config: off });
  }
  // 3. Every RPC the table routes, by exact path: its service, timeouts by streaming kind, token rule, rate limit.
  for (const rpc of rpcs) {
    const m = matchRoute(rpc.path, table, denied);
    if (m.kind !== "route") continue;
    const access: Access = m.route.plain ? "none" : rpc.rule === "public" ? "optional" : "token";
    out.push({
      name: rpc.path.slice(1),
      match: { path: rpc.path },
      route: {
        ...clusterRoute(m.service, s, rpc.streaming),
        ...(m.route.plain ? {} : { rate_limits: rateLimits(rateLimitFeature(rpc.path, m.service), access === "optional") }),
      },
      typed_per_filter_config: { [JWT_FILTER]: jwtPerRoute(access) },
    });
  }
  // 4. The table itself, in order: plain paths (no token, no edge limit) and the prefixes behind the RPCs above
  // (a method the contracts do not know: the service answers UNIMPLEMENTED, after the token check).
  for (const r of table) {
    out.push({
      name: `${r.exact ? "path" : "prefix"} ${r.prefix}`,
      match: r.exact ? { path: r.prefix } : { prefix: r.prefix },
      route: {
        ...clusterRoute(r.service, s, r.streaming === true),
        ...(r.plain ? {} : { rate_limits: rateLimits(`edge.${r.service}`, false) }),
      },
      typed_per_filter_config: { [JWT_FILTER]: jwtPerRoute(r.plain ? "none" : "token") },
    });
  }
  return out;
}

/** gRPC status names Connect uses in JSON error bodies, by the HTTP status of Envoy's local replies. */
const CONNECT_CODES: ReadonlyArray<[number, string]> = [
  [400, "invalid_argument"], [401, "unauthenticated"], [403, "permission_denied"], [404, "unimplemented"],
  [408, "deadline_exceeded"], [413, "resource_exhausted"], [429, "resource_exhausted"], [431, "resource_exhausted"],
  [500, "internal"], [502, "unavailable"], [503, "unavailable"], [504, "deadline_exceeded"],
];

/**
 * Envoy's own replies (no route, JWT refused, rate limited, no healthy upstream) for clients that are not gRPC:
 * a Connect error body `{"code", "message"}` in JSON, which Connect clients read (plain text would reach them as a
 * bare HTTP status, 429 as UNAVAILABLE). gRPC and gRPC-Web requests (content-type application/grpc*, after the
 * grpc_web filter) get Envoy's gRPC local reply: HTTP 200 with grpc-status, 429 as RESOURCE_EXHAUSTED
 * (rate_limited_as_resource_exhausted).
 */
export function localReplyConfig(): Record<string, unknown> {
  const notGrpc = { header_filter: { header: { name: "content-type", string_match: { prefix: "application/grpc" }, invert_match: true } } };
  const status = (code: number): Record<string, unknown> =>
    ({ status_code_filter: { comparison: { op: "EQ", value: { default_value: code, runtime_key: `luna.local_reply.${code}` } } } });
  return {
    mappers: [
      // Connect streaming clients read a non-200 status by itself (429 would be UNAVAILABLE, which they retry): the
      // rate limit answer is a 200 whose body is one end-of-stream frame carrying RESOURCE_EXHAUSTED. The end-of-stream
      // message is JSON whatever the codec, so one body serves connect+json and connect+proto.
      ...["application/connect+json", "application/connect+proto"].map((contentType) => ({
        filter: { and_filter: { filters: [status(429),
          { header_filter: { header: { name: "content-type", string_match: { exact: contentType } } } }] } },
        status_code: 200,
        body_format_override: { text_format: CONNECT_RESOURCE_EXHAUSTED_END_STREAM, content_type: contentType },
      })),
      ...CONNECT_CODES.map(([code, name]) => ({
        filter: { and_filter: { filters: [status(code), notGrpc] } },
        body_format_override: {
          json_format: { code: name, message: "%LOCAL_REPLY_BODY%" },
          content_type: "application/json",
        },
      })),
    ],
  };
}

/** A Connect end-of-stream frame (flags 0x02, big-endian length, JSON) with the edge's rate limit error. */
export const CONNECT_RESOURCE_EXHAUSTED_END_STREAM = (() => {
  const json = Buffer.from(JSON.stringify({ error: { code: "resource_exhausted", message: "rate limit exceeded at the edge" } }));
  const head = Buffer.alloc(5);
  head.writeUInt8(0x02, 0);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]).toString("latin1");
})();

function address(host: string, port: number): Record<string, unknown> {
  return { socket_address: { address: host, port_value: port } };
}

function hostPort(value: string): [string, number] {
  const i = value.lastIndexOf(":");
  const port = Number(value.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`expected host:port, got ${JSON.stringify(value)}`);
  return [value.slice(0, i), port];
}

const HTTP2_CLUSTER_OPTIONS = {
  "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": T("envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
    explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 1000 } },
    common_http_protocol_options: { idle_timeout: "300s" },
  },
};

/** One service cluster: its headless Service by DNS (every pod, not one pinned by a ClusterIP), HTTP/2, checked. */
function serviceCluster(name: string, s: EdgeSettings): Record<string, unknown> {
  const [host, port] = hostPort(s.upstreamOverrides[name] ?? `${name}-headless:${s.upstreamPort}`);
  return {
    name,
    type: "STRICT_DNS",
    // Re-resolved every 5 s (not after the record's TTL): a new pod gets traffic within seconds of being ready.
    dns_refresh_rate: "5s",
    connect_timeout: "2s",
    lb_policy: "LEAST_REQUEST",
    per_connection_buffer_limit_bytes: 32768,
    typed_extension_protocol_options: HTTP2_CLUSTER_OPTIONS,
    load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: address(host, port) } }] }] },
    // grpc.health.v1 on the API port (the kit serves it on every service): a pod that is not serving leaves the set.
    health_checks: [{ timeout: "1s", interval: "5s", unhealthy_threshold: 2, healthy_threshold: 1, no_traffic_interval: "5s",
      grpc_health_check: {} }],
    outlier_detection: { consecutive_5xx: 5, consecutive_gateway_failure: 3, interval: "10s", base_ejection_time: "30s",
      max_ejection_percent: 50, split_external_local_origin_errors: true, consecutive_local_origin_failure: 3 },
    circuit_breakers: { thresholds: [{ priority: "DEFAULT", max_connections: s.circuitBreaker.maxConnections,
      max_pending_requests: s.circuitBreaker.maxPendingRequests, max_requests: s.circuitBreaker.maxRequests,
      max_retries: s.circuitBreaker.maxRetries }] },
  };
}

function otelCluster(s: EdgeSettings): Record<string, unknown> {
  const [host, port] = hostPort(s.upstreamOverrides[OTEL_CLUSTER] ?? s.otelCollector);
  return {
    name: OTEL_CLUSTER,
    type: "STRICT_DNS",
    connect_timeout: "2s",
    typed_extension_protocol_options: HTTP2_CLUSTER_OPTIONS,
    load_assignment: { cluster_name: OTEL_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address: address(host, port) } }] }] },
  };
}

function corsPolicy(s: EdgeSettings): Record<string, unknown> {
  const unique = (xs: string[]): string[] => [...new Set(xs.map((x) => x.toLowerCase()))];
  return {
    "@type": T("envoy.extensions.filters.http.cors.v3.CorsPolicy"),
    allow_origin_string_match: s.corsOrigins.includes("*") ? [{ safe_regex: { regex: ".*" } }] : s.corsOrigins.map((o) => ({ exact: o })),
    // The same lists the services' own CORS handler uses (the kit takes them from @connectrpc/connect).
    allow_methods: connectCors.allowedMethods.join(", "),
    allow_headers: unique([...connectCors.allowedHeaders, "Authorization", "X-Request-Id", "Traceparent", "Tracestate"]).join(", "),
    expose_headers: unique([...connectCors.exposedHeaders, "X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]).join(", "),
    max_age: "7200",
  };
}

const JSON_ACCESS_LOG = {
  name: "envoy.access_loggers.stdout",
  typed_config: {
    "@type": T("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"),
    log_format: {
      json_format: {
        time: "%START_TIME%",
        request_id: "%REQ(X-REQUEST-ID)%",
        trace_id: "%TRACE_ID%",
        user_id: "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:sub)%",
        client: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        method: "%REQ(:METHOD)%",
        // Without the query: signed image URLs carry their signature there.
        path: "%REQ_WITHOUT_QUERY(:PATH)%",
        protocol: "%PROTOCOL%",
        content_type: "%REQ(CONTENT-TYPE)%",
        status: "%RESPONSE_CODE%",
        grpc_status: "%GRPC_STATUS(NUMBER)%",
        flags: "%RESPONSE_FLAGS%",
        details: "%RESPONSE_CODE_DETAILS%",
        bytes_in: "%BYTES_RECEIVED%",
        bytes_out: "%BYTES_SENT%",
        duration_ms: "%DURATION%",
        upstream: "%UPSTREAM_CLUSTER%",
        upstream_host: "%UPSTREAM_HOST%",
        user_agent: "%REQ(USER-AGENT)%",
      },
      formatters: [{ name: "envoy.formatter.req_without_query",
        typed_config: { "@type": T("envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery") } }],
    },
  },
};

/** The HTTP filter chain, in the order the issue and Envoy's gRPC edge guidance give; `router` must be last. */
export function httpFilters(s: EdgeSettings): Array<Record<string, unknown>> {
  return [
    // CORS first: preflights are answered here, and every reply (local ones too) carries the CORS headers.
    { name: "envoy.filters.http.cors", typed_config: { "@type": T("envoy.extensions.filters.http.cors.v3.Cors") } },
    // gRPC-Web → gRPC before the filters that may answer locally, so their replies reach gRPC-Web clients as statuses.
    { name: "envoy.filters.http.grpc_web", typed_config: { "@type": T("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb") } },
    // The claim headers are set by jwt_authn only; a client-sent copy would otherwise pass on routes where a token is
    // optional (envoy#35553).
    { name: "envoy.filters.http.header_mutation", typed_config: {
      "@type": T("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"),
      mutations: { request_mutations: Object.values(CLAIM_HEADERS).map((h) => ({ remove: h })) },
    } },
    { name: JWT_FILTER, typed_config: {
      "@type": T("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"),
      providers: {
        [JWT_PROVIDER]: {
          issuer: s.jwtIssuer,
          audiences: [s.jwtAudience],
          remote_jwks: {
            http_uri: { uri: `http://auth-headless:${s.upstreamPort}/.well-known/jwks.json`, cluster: "auth", timeout: "2s" },
            cache_duration: s.jwksCacheDuration,
            // Fetched when Envoy starts and refreshed before it expires, not on the first request after expiry.
            async_fetch: { fast_listener: false, failed_refetch_duration: "5s" },
            retry_policy: { num_retries: 3, retry_back_off: { base_interval: "0.2s", max_interval: "2s" } },
          },
          // Only where the services read it: without this Envoy would also take `?access_token=` (tokens in URLs end
          // up in logs, and the services would not see them).
          from_headers: [{ name: "Authorization", value_prefix: "Bearer " }],
          // Services verify the token themselves (nothing inside trusts a header alone): pass it on.
          forward: true,
          clock_skew_seconds: s.jwtClockSkewSeconds,
          claim_to_headers: Object.entries(CLAIM_HEADERS).map(([claim, header]) => ({ header_name: header, claim_name: claim })),
          payload_in_metadata: JWT_PAYLOAD_METADATA,
        },
      },
      requirement_map: {
        [REQUIRE_TOKEN]: { provider_name: JWT_PROVIDER },
        // Public RPCs: no token is fine; a token that is sent must be valid (as the services' interceptor does).
        [OPTIONAL_TOKEN]: { requires_any: { requirements: [{ provider_name: JWT_PROVIDER }, { allow_missing: {} }] } },
      },
      bypass_cors_preflight: true,
    } },
    { name: "envoy.filters.http.ratelimit", typed_config: {
      "@type": T("envoy.extensions.filters.http.ratelimit.v3.RateLimit"),
      domain: s.rateLimitDomain,
      timeout: s.rateLimitTimeout,
      failure_mode_deny: false,
      rate_limited_as_resource_exhausted: true,
      enable_x_ratelimit_headers: "DRAFT_VERSION_03",
      rate_limit_service: { grpc_service: { envoy_grpc: { cluster_name: "billing" }, timeout: s.rateLimitTimeout }, transport_api_version: "V3" },
    } },
    { name: "envoy.filters.http.router", typed_config: { "@type": T("envoy.extensions.filters.http.router.v3.Router") } },
  ];
}

function connectionManager(rpcs: readonly Rpc[], s: EdgeSettings, https: boolean): Record<string, unknown> {
  return {
    "@type": T("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
    stat_prefix: https ? "ingress_https" : "ingress_http",
    // HTTP/1.1 (Connect, gRPC-Web) and HTTP/2 with prior knowledge (gRPC, Connect) on one port.
    codec_type: "AUTO",
    use_remote_address: true,
    xff_num_trusted_hops: s.xffTrustedHops,
    // Refused, not rewritten (the route table's refusal route); %2F and %5C never reach route matching.
    normalize_path: false,
    merge_slashes: false,
    path_with_escaped_slashes_action: "REJECT_REQUEST",
    request_headers_timeout: s.requestHeadersTimeout,
    stream_idle_timeout: s.streamIdleTimeout,
    common_http_protocol_options: { idle_timeout: "3600s", headers_with_underscores_action: "REJECT_REQUEST" },
    http2_protocol_options: { max_concurrent_streams: 100, initial_stream_window_size: 65536, initial_connection_window_size: 1048576 },
    generate_request_id: true,
    preserve_external_request_id: false,
    access_log: [JSON_ACCESS_LOG],
    tracing: {
      random_sampling: { value: s.traceSamplingPercent },
      provider: {
        name: "envoy.tracers.opentelemetry",
        typed_config: {
          "@type": T("envoy.config.trace.v3.OpenTelemetryConfig"),
          grpc_service: { envoy_grpc: { cluster_name: OTEL_CLUSTER }, timeout: "1s" },
          service_name: "luna-gateway",
        },
      },
    },
    local_reply_config: localReplyConfig(),
    route_config: {
      name: "luna",
      virtual_hosts: [{
        name: "luna",
        domains: ["*"],
        routes: buildRoutes(rpcs, s),
        typed_per_filter_config: { "envoy.filters.http.cors": corsPolicy(s) },
      }],
    },
    http_filters: httpFilters(s),
  };
}

function listener(name: string, port: number, rpcs: readonly Rpc[], s: EdgeSettings): Record<string, unknown> {
  const https = name === "https";
  return {
    name,
    address: address("0.0.0.0", port),
    per_connection_buffer_limit_bytes: 32768,
    filter_chains: [{
      filters: [{ name: "envoy.filters.network.http_connection_manager", typed_config: connectionManager(rpcs, s, https) }],
      ...(https && s.tls ? { transport_socket: { name: "envoy.transport_sockets.tls", typed_config: {
        "@type": T("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"),
        common_tls_context: {
          alpn_protocols: ["h2", "http/1.1"],
          tls_certificates: [{ certificate_chain: { filename: s.tls.certificateFile }, private_key: { filename: s.tls.privateKeyFile } }],
        },
      } } } : {}),
    }],
  };
}

/**
 * Prometheus scrapes Envoy here: one route, `/stats/prometheus`, to the admin interface (which stays on 127.0.0.1:
 * its other endpoints — config dump, /quitquitquit, /healthcheck/fail — are never reachable from outside).
 */
function statsListener(s: EdgeSettings): Record<string, unknown> {
  return {
    name: "stats",
    address: address("0.0.0.0", s.statsPort),
    per_connection_buffer_limit_bytes: 32768,
    filter_chains: [{ filters: [{ name: "envoy.filters.network.http_connection_manager", typed_config: {
      "@type": T("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
      stat_prefix: "stats",
      codec_type: "AUTO",
      request_headers_timeout: s.requestHeadersTimeout,
      common_http_protocol_options: { headers_with_underscores_action: "REJECT_REQUEST" },
      route_config: { name: "stats", virtual_hosts: [{ name: "stats", domains: ["*"],
        routes: [{ name: "prometheus", match: { path: STATS_PATH }, route: { cluster: ADMIN_CLUSTER, timeout: "10s" } }] }] },
      http_filters: [{ name: "envoy.filters.http.router", typed_config: { "@type": T("envoy.extensions.filters.http.router.v3.Router") } }],
    } }] }],
  };
}

function adminCluster(s: EdgeSettings): Record<string, unknown> {
  return {
    name: ADMIN_CLUSTER,
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: { cluster_name: ADMIN_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address: address("127.0.0.1", s.adminPort) } }] }] },
  };
}

/** The whole bootstrap. */
export function buildEnvoyConfig(rpcs: readonly Rpc[], overrides: Partial<EdgeSettings> = {}): Record<string, unknown> {
  const s: EdgeSettings = { ...DEFAULT_SETTINGS, ...overrides };
  return {
    node: { id: "luna-gateway", cluster: "luna-gateway" },
    admin: { address: address("127.0.0.1", s.adminPort) },
    static_resources: {
      listeners: [listener("http", s.port, rpcs, s), ...(s.tls ? [listener("https", s.tls.port, rpcs, s)] : []),
        ...(s.statsPort ? [statsListener(s)] : [])],
      clusters: [...UPSTREAM_SERVICES.map((name) => serviceCluster(name, s)), otelCluster(s), ...(s.statsPort ? [adminCluster(s)] : [])],
    },
    overload_manager: {
      refresh_interval: "0.25s",
      resource_monitors: [{ name: "envoy.resource_monitors.fixed_heap", typed_config: {
        "@type": T("envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"), max_heap_size_bytes: String(s.maxHeapBytes) } }],
      actions: [
        { name: "envoy.overload_actions.shrink_heap", triggers: [{ name: "envoy.resource_monitors.fixed_heap", threshold: { value: 0.95 } }] },
        { name: "envoy.overload_actions.stop_accepting_requests", triggers: [{ name: "envoy.resource_monitors.fixed_heap", threshold: { value: 0.98 } }] },
      ],
    },
    layered_runtime: {
      layers: [{ name: "static_layer_0", static_layer: {
        overload: { global_downstream_max_connections: s.maxDownstreamConnections },
        // The refusal route's regex (dot-all, UTF-8 classes) compiles past RE2's default error threshold of 100.
        re2: { max_program_size: { error_level: 1000, warn_level: 500 } },
      } }],
    },
  };
}

const HEADER = `# GENERATED by gateway/src/generate.ts from gateway/src/routes.ts, the contracts and the services' access rules.
# Do not edit: change the route table or the settings and run \`make gateway\` (a test fails when this file is stale).
# Envoy v3 static bootstrap for the Luna edge; gateway/README.md explains it filter by filter.
`;

/** The YAML text of a bootstrap, with the generated-file header. */
export function toYaml(config: Record<string, unknown>): string {
  return HEADER + stringify(config, { lineWidth: 0, aliasDuplicateObjects: false });
}
