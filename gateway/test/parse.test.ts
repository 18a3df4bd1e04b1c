// The edge configuration against Envoy's own v3 API: the committed file is what the generator writes today, and it
// parses into Envoy's typed protos with every typed_config resolved and the protoc-gen-validate rules of those protos
// met. Broken copies show the parse is strict.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { buildEnvoyConfig } from "../src/envoy.js";
import { generateEnvoyYaml, settingsFromArgs } from "../src/generate.js";
import { parseBootstrap, patchValidateProto } from "../src/protos.js";
import { allRpcs, committedConfig, committedYaml, hcmOf, type Obj } from "./helpers.js";

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), "luna-gateway-test-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The message parseBootstrap throws for a config, or "parsed". */
function parseError(config: string | Obj): string {
  try {
    parseBootstrap(typeof config === "string" ? config : (config as never));
    return "parsed";
  } catch (err) {
    return (err as Error).message;
  }
}

describe("charts/gateway/files/envoy.yaml", () => {
  it("is what the generator writes (run `make gateway` after changing the table, the protos or the rules)", async () => {
    expect(committedYaml()).toBe(await generateEnvoyYaml());
  });

  it("`generate --check` fails on a stale file and passes on a fresh one", async () => {
    const file = join(tmp, "envoy.yaml");
    const gen = ["--conditions=luna-source", "--import", "tsx", "gateway/src/generate.ts", "--out", file];
    writeFileSync(file, committedYaml().replace("stream_idle_timeout: 300s", "stream_idle_timeout: 301s"));
    await expect(run(process.execPath, [...gen, "--check"])).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining("stale") });
    await run(process.execPath, gen);
    await expect(run(process.execPath, [...gen, "--check"])).resolves.toBeDefined();
  }, 60_000);

  it("parses into Envoy's typed v3 Bootstrap, every typed_config resolved", () => {
    const parsed = parseBootstrap(committedYaml()) as Obj;
    const text = JSON.stringify(parsed);
    // Each Any came back with its type, decoded (an unresolved Any would have failed the parse).
    for (const type of ["http_connection_manager.v3.HttpConnectionManager", "cors.v3.Cors", "grpc_web.v3.GrpcWeb",
      "header_mutation.v3.HeaderMutation", "jwt_authn.v3.JwtAuthentication", "jwt_authn.v3.PerRouteConfig", "ratelimit.v3.RateLimit",
      "router.v3.Router", "cors.v3.CorsPolicy", "upstreams.http.v3.HttpProtocolOptions", "stream.v3.StdoutAccessLog",
      "trace.v3.OpenTelemetryConfig", "fixed_heap.v3.FixedHeapConfig", "req_without_query.v3.ReqWithoutQuery"]) {
      expect(text).toContain(type);
    }
    expect(text).toContain('"requirementName":"token"');
  });

  it("parses the variants the generator makes: a TLS listener, upstreams on the workflow's runner", () => {
    const tls = settingsFromArgs(["--tls", "/etc/envoy/tls/tls.crt,/etc/envoy/tls/tls.key"]).settings;
    const ci = settingsFromArgs(["--upstream", "auth=127.0.0.1:41001", "--upstream", "otel-collector=127.0.0.1:4317", "--port", "18080"]).settings;
    return allRpcs().then((rpcs) => {
      for (const settings of [tls, ci]) expect(parseError(stringify(buildEnvoyConfig(rpcs, settings)))).toBe("parsed");
      expect(JSON.stringify(buildEnvoyConfig(rpcs, tls))).toContain("DownstreamTlsContext");
    });
  });

  it("rejects bad command-line options with a clear message", () => {
    expect(() => settingsFromArgs(["--upstream", "auth"])).toThrow(/NAME=HOST:PORT/);
    expect(() => settingsFromArgs(["--port", "99999"])).toThrow(/--port: expected a port/);
    expect(() => settingsFromArgs(["--bogus"])).toThrow();
  });
});

describe("the parse rejects what Envoy would (deliberately broken copies)", () => {
  const yaml = committedYaml();
  const broken: Array<[string, string, string, RegExp]> = [
    ["a misspelled field", "stream_idle_timeout: 300s", "stream_idel_timeout: 300s", /key "stream_idel_timeout" is unknown/],
    ["a misspelled field inside a typed_config", "rate_limited_as_resource_exhausted: true", "rate_limited_as_resource_exausted: true", /is unknown/],
    ["an unknown @type", "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb", "envoy.extensions.filters.http.grpc_web.v3.GrpcWebb", /not in the type registry/],
    ["`timeout: 0` (a duration must be a string like \"0s\")", "timeout: 0s", "timeout: 0", /google\.protobuf\.Duration/],
    ["a bad enum value", "codec_type: AUTO", "codec_type: AUTOMATIC", /CodecType/],
    ["a bad enum value in a filter", "enable_x_ratelimit_headers: DRAFT_VERSION_03", "enable_x_ratelimit_headers: DRAFT_03", /XRateLimitHeadersRFCVersion/],
  ];
  it.each(broken)("%s", (_what, from, to, error) => {
    expect(yaml).toContain(from);
    expect(parseError(yaml.replace(from, to))).toMatch(error);
  });

  it.each([
    ["an empty rate limit domain (min_len 1)", "domain: luna", 'domain: ""', /http_filters\[4\]\.typed_config\.domain: at least 1 characters/],
    ["HTTP/2 max_concurrent_streams 0 (gte 1)", "max_concurrent_streams: 100", "max_concurrent_streams: 0", /max_concurrent_streams: must be >= 1/],
    ["a direct response status out of range", "status: 404", "status: 99", /direct_response\.status: must be >= 200/],
    ["a cluster without a name", "- name: billing\n", '- name: ""\n', /clusters\[1\]\.name: at least 1 characters/],
  ])("a protoc-gen-validate rule Envoy enforces: %s", (_what, from, to, error) => {
    expect(yaml).toContain(from);
    expect(parseError(yaml.replace(from, to))).toMatch(error);
  });

  it("a route without an action (a required oneof)", () => {
    const config = committedConfig();
    const routes = (((hcmOf(config).route_config as Obj).virtual_hosts as Obj[])[0]!.routes as Obj[]);
    const i = routes.findIndex((r) => r.name === "luna.chat.v1.ChatService/SendMessage");
    delete routes[i]!.route;
    expect(parseError(config)).toMatch(new RegExp(`routes\\[${i}\\]: one of route, redirect, direct_response.* is required`));
  });

  it("a field of the wrong message (a route option on the connection manager)", () => {
    const config = committedConfig();
    hcmOf(config).idle_timeout = "5s";
    expect(parseError(config)).toMatch(/key "idle_timeout" is unknown/);
  });

  it("the vendored validate.proto gets StringRules.ignore_empty, once", () => {
    const before = "message StringRules {\r\n    optional string const = 1;\r\n}";
    const after = patchValidateProto(before);
    expect(after).toContain("optional bool ignore_empty = 26;");
    expect(patchValidateProto(after)).toBe(after);
    expect(() => patchValidateProto("message Other {}")).toThrow(/StringRules not found/);
  });
});
