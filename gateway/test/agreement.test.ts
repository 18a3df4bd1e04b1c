// The dev gateway (tools/split) and Envoy agree path for path: both take the table from gateway/src/routes.ts, and
// here every RPC path, every prefix, the denied prefixes, the refusals of paths not in normal form and thousands of
// random paths are put to the generated Envoy routes and to the dev gateway (the running one, with a fake service
// per cluster, for the fixed corpus; its matchRoute for the random ones). Broken configurations show disagreement.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { startGateway, type Gateway } from "@luna/split";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UPSTREAM_SERVICES } from "../src/envoy.js";
import { resolve } from "../src/model.js";
import { DENIED_PREFIXES, PUBLIC_ROUTES, matchRoute } from "../src/routes.js";
import { committedConfig, corpus, hcmOf, routeList, type Obj } from "./helpers.js";

/** What a client gets for a path: the service that answers, or a refusal by the gateway. */
type Outcome = string;
const REFUSED = "refused";

function envoyOutcome(config: Obj, target: string): Outcome {
  const r = resolve(hcmOf(config), target);
  return r.kind === "cluster" ? r.cluster : REFUSED;
}

function devOutcome(target: string): Outcome {
  const m = matchRoute(target);
  return m.kind === "route" ? m.service : REFUSED;
}

/** Paths where the two disagree. */
function disagreements(config: Obj, targets: readonly string[], dev: (t: string) => Outcome = devOutcome): string[] {
  return targets.flatMap((t) => {
    const [d, e] = [dev(t), envoyOutcome(config, t)];
    return d === e ? [] : [`${t}: dev gateway ${d}, Envoy ${e}`];
  });
}

describe("dev gateway and Envoy agree path for path", () => {
  it("on every RPC, table entry, denied prefix and refusal (route table vs generated Envoy routes)", async () => {
    const targets = await corpus();
    expect(targets.length).toBeGreaterThan(120);
    expect(disagreements(committedConfig(), targets)).toEqual([]);
  });

  it("on random paths built from the table's pieces, dots, slashes and escapes", () => {
    const config = committedConfig();
    const pieces = [...PUBLIC_ROUTES.map((r) => r.prefix), ...DENIED_PREFIXES, "/", "//", ".", "..", "/./", "/../", "%2e", "%2F", "%5C", "\\",
      ";", "Send", "Message", "x", "-", "_", "~", "?", "&a=/b", "luna.", "v1"];
    fc.assert(fc.property(fc.array(fc.constantFrom(...pieces), { minLength: 1, maxLength: 6 }), (parts) => {
      const target = parts.join("");
      expect(envoyOutcome(config, target), target).toBe(devOutcome(target));
    }), { numRuns: 3000, seed: 16 });
  });

  it("finds the disagreement in a broken configuration", async () => {
    const targets = await corpus();
    // Without the refusal route Envoy would route `/.../BillingService/./GetBalance` (the dev gateway refuses it).
    const noRefusal = committedConfig();
    routeList(noRefusal).shift();
    expect(disagreements(noRefusal, targets)).toContain("/luna.billing.v1.BillingService/./GetBalance: dev gateway refused, Envoy billing");
    // Without a deny route, an internal service under a routed prefix is reachable through Envoy.
    const noDeny = committedConfig();
    const routes = routeList(noDeny);
    routes.splice(routes.findIndex((r) => r.match.prefix === "/luna.image.v1.ImageWorkerService/"), 1);
    expect(disagreements(noDeny, targets)).toContain("/luna.image.v1.ImageWorkerService/StartJob: dev gateway refused, Envoy image-job");
    // Table order matters: a catch-all prefix moved before the others sends paths elsewhere.
    const reordered = committedConfig();
    routeList(reordered).splice(1, 0, { name: "catch-all", match: { prefix: "/luna." }, route: { cluster: "auth", timeout: "60s" } });
    expect(disagreements(reordered, targets).length).toBeGreaterThan(20);
  });
});

describe("the running dev gateway answers as Envoy's routes say", () => {
  const upstreams: http2.Http2Server[] = [];
  const urls = new Map<string, string>();
  let gateway: Gateway;

  beforeAll(async () => {
    // One fake service per cluster: it answers 200 with its name, whatever the path.
    for (const name of UPSTREAM_SERVICES) {
      const server = http2.createServer((req, res) => {
        req.resume();
        res.writeHead(200, { "x-upstream": name });
        res.end();
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      upstreams.push(server);
      urls.set(name, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    }
    gateway = await startGateway({ upstream: (s) => urls.get(s), shutdownGraceMs: 100 });
  });

  afterAll(async () => {
    await gateway?.close();
    for (const s of upstreams) await new Promise((r) => s.close(r));
  });

  /** What the running dev gateway does with a path: the service that answered, or its refusal (404). */
  async function observe(session: http2.ClientHttp2Session, path: string): Promise<Outcome> {
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    req.end();
    const headers = await new Promise<http2.IncomingHttpHeaders>((res, rej) => {
      req.on("response", res);
      req.on("error", rej);
    });
    req.resume();
    await new Promise((r) => req.on("close", r));
    if (Number(headers[":status"]) === 404) return REFUSED;
    return String(headers["x-upstream"] ?? `status ${String(headers[":status"])}`);
  }

  it("on the whole corpus", async () => {
    const config = committedConfig();
    const session = http2.connect(gateway.url);
    try {
      const targets = await corpus();
      const seen = new Map<string, Outcome>();
      for (const t of targets) seen.set(t, await observe(session, t));
      expect(disagreements(config, targets, (t) => seen.get(t)!)).toEqual([]);
    } finally {
      session.close();
    }
  });
});
