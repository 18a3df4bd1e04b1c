// The admin port: Prometheus scrapes /metrics, Kubernetes probes /healthz (liveness) and /readyz (readiness). Kept
// off the API port so it is never routed by the gateway and never needs a token.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** A readiness dependency (database, NATS, Redis...): `check` resolves when usable, throws when not. */
export type ReadinessCheck = { name: string; check: () => Promise<void> };

/** Options for {@link startAdminServer}. */
export type AdminServerOptions = {
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Default: all interfaces, IPv6 and IPv4 (probes and scrapes come from outside the pod). */
  host?: string;
  registry: Registry;
  readiness?: ReadinessCheck[];
  /** A check that has not settled after this long counts as failed; default 2000 ms (below the probe timeout). */
  checkTimeoutMs?: number;
};

/** A running admin server. */
export type AdminServer = {
  port: number;
  /** `false` makes /readyz answer 503 without running checks, e.g. as the first step of shutdown. */
  setReady(ready: boolean): void;
  close(): Promise<void>;
};

type CheckResult = { ok: true; ms: number } | { ok: false; ms: number; error: string };

async function runCheck(check: ReadinessCheck, timeoutMs: number): Promise<CheckResult> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(() => check.check()), timeout]);
    return { ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    return { ok: false, ms: Math.round(performance.now() - started), error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(text);
}

/** Starts the admin HTTP server: `GET /metrics`, `GET /healthz` (200 while the process runs), `GET /readyz`. */
export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const checks = opts.readiness ?? [];
  const timeoutMs = opts.checkTimeoutMs ?? 2000;
  let ready = true;

  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      sendJson(res, 200, { status: "ok" });
    } else if (path === "/readyz") {
      if (!ready) {
        sendJson(res, 503, { status: "shutting_down" });
        return;
      }
      void Promise.all(checks.map((c) => runCheck(c, timeoutMs))).then((results) => {
        const byName = Object.fromEntries(checks.map((c, i) => [c.name, results[i]]));
        const failed = checks.filter((_, i) => !results[i]!.ok).map((c) => c.name);
        sendJson(res, failed.length === 0 ? 200 : 503, { status: failed.length === 0 ? "ok" : "fail", failed, checks: byName });
      });
    } else if (path === "/metrics") {
      opts.registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": opts.registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(`metrics collection failed: ${err instanceof Error ? err.message : String(err)}\n`);
        },
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  return {
    port: (server.address() as AddressInfo).port,
    setReady(value) {
      ready = value;
    },
    close: () => new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
    }),
  };
}
