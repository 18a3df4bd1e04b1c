// Periodic health probes of every enabled model's replicas, by the upstream's probe kind. OPENAI (text): vLLM's
// `GET /health` answers 2xx (or 404: a server without that route, such as Ollama) and `GET /v1/models` lists the
// served model. COMFYUI (image, make dev): ComfyUI's `GET /system_stats` answers 2xx with JSON. WORKER (image, a
// cluster pool: ComfyUI listens on 127.0.0.1 inside its pod, only the image worker's admin port is reachable): the
// worker's `GET /readyz` answers 2xx, which it does only while its ComfyUI answers and NATS is connected. A replica turns unhealthy after `failuresToUnhealthy` failures in a row and healthy again
// after one success. The model's status (AVAILABLE / DEGRADED / OFFLINE, or STANDBY for a scale-to-zero model
// without a healthy replica) is stored — and announced as a
// `model.changed` event — only when it or the set of healthy replicas changes.
import { resolveReplicaUrls, type HostLookup } from "@luna/kit";
import type { CatalogStore } from "../data/store.js";
import { computeHealth } from "../domain/status.js";
import type { ModelRecord, ReplicaHealthRecord } from "../domain/types.js";

export interface ProberLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface HealthProberOptions {
  store: CatalogStore;
  log: ProberLogger;
  /** 0 = no periodic probes (probeAll can still be called). */
  intervalMs: number;
  timeoutMs: number;
  failuresToUnhealthy: number;
  /** Reads an upstream API key by the NAME stored in the catalog (env var or mounted secret). */
  readSecret: (name: string) => string | undefined;
  lookup?: HostLookup;
  fetch?: typeof fetch;
  /** Called with every model after each probe round (keeps the status metric current). */
  onProbed?: (models: ModelRecord[]) => void;
}

export interface HealthProber {
  start(): void;
  /** Stops the timer and waits for a running round. */
  stop(): Promise<void>;
  /** Probes every enabled model now (rounds never overlap: a call during a round waits for a fresh one). */
  probeAll(): Promise<void>;
}

type ReplicaState = { healthy: boolean; failures: number; detail: string; checkedAt: Date };

/** Largest probe response body read; vLLM's model list and ComfyUI's stats are a few KB. */
const MAX_BODY_BYTES = 1024 * 1024;

class ProbeFailure extends Error {}

function describe(err: unknown, timeoutMs: number): string {
  if (err instanceof ProbeFailure) return err.message;
  if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) return `timed out after ${timeoutMs} ms`;
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
}

export function createHealthProber(opts: HealthProberOptions): HealthProber {
  const doFetch = opts.fetch ?? fetch;
  const state = new Map<string, Map<string, ReplicaState>>();
  const warnedMissingKey = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let queued: Promise<void> | undefined;

  async function get(url: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
    const res = await doFetch(url, { headers, signal: AbortSignal.timeout(opts.timeoutMs), redirect: "error" });
    const len = Number(res.headers.get("content-length") ?? 0);
    if (len > MAX_BODY_BYTES) {
      await res.body?.cancel();
      throw new ProbeFailure(`GET ${new URL(url).pathname}: response too large`);
    }
    const body = await res.text();
    return { status: res.status, body: body.slice(0, MAX_BODY_BYTES) };
  }

  async function probeText(model: ModelRecord, base: string): Promise<void> {
    const health = await get(`${base}/health`, {});
    // Servers without the route (Ollama; some OpenAI-compatible proxies) answer 404: their model list is then the
    // whole health signal.
    const noHealthRoute = health.status === 404;
    if (!noHealthRoute && (health.status < 200 || health.status > 299)) throw new ProbeFailure(`GET /health: HTTP ${health.status}`);
    const headers: Record<string, string> = {};
    const keyName = model.upstream.apiKeyEnv;
    if (keyName) {
      const key = opts.readSecret(keyName);
      if (!key) {
        if (noHealthRoute) throw new ProbeFailure(`GET /health: HTTP 404, and without the key in ${keyName} the model list cannot be read`);
        // Without the key the model list would answer 401; the engine's own health is all we can know.
        if (!warnedMissingKey.has(keyName)) {
          warnedMissingKey.add(keyName);
          opts.log.warn({ model: model.id, apiKeyEnv: keyName }, "upstream API key not available to the registry; probing /health only");
        }
        return;
      }
      headers.authorization = `Bearer ${key}`;
    }
    const list = await get(`${base}/v1/models`, headers);
    if (list.status === 401 || list.status === 403) throw new ProbeFailure(`GET /v1/models: HTTP ${list.status} (check the key in ${keyName || "api_key_env"})`);
    if (list.status < 200 || list.status > 299) throw new ProbeFailure(`GET /v1/models: HTTP ${list.status}`);
    let ids: string[];
    try {
      const parsed = JSON.parse(list.body) as { data?: Array<{ id?: unknown }> };
      ids = Array.isArray(parsed.data) ? parsed.data.map((d) => String(d?.id)) : [];
    } catch {
      throw new ProbeFailure("GET /v1/models: not JSON");
    }
    const served = model.upstream.servedModelName || model.id;
    if (!ids.includes(served)) throw new ProbeFailure(`model "${served}" not served (serves: ${ids.slice(0, 5).join(", ") || "none"})`);
  }

  async function probeImage(base: string): Promise<void> {
    const stats = await get(`${base}/system_stats`, {});
    if (stats.status < 200 || stats.status > 299) throw new ProbeFailure(`GET /system_stats: HTTP ${stats.status}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(stats.body);
    } catch {
      throw new ProbeFailure("GET /system_stats: not JSON");
    }
    if (typeof parsed !== "object" || parsed === null) throw new ProbeFailure("GET /system_stats: unexpected body");
  }

  async function probeWorker(base: string): Promise<void> {
    const ready = await get(`${base}/readyz`, {});
    if (ready.status >= 200 && ready.status <= 299) return;
    // The kit's admin server names the failed checks ({"failed":["comfyui"]}): the operator's first clue.
    let failed = "";
    try {
      const parsed = JSON.parse(ready.body) as { failed?: unknown };
      if (Array.isArray(parsed.failed)) failed = parsed.failed.map(String).slice(0, 5).join(", ");
    } catch {
      failed = "";
    }
    throw new ProbeFailure(`GET /readyz: HTTP ${ready.status}${failed ? ` (not ready: ${failed})` : ""}`);
  }

  async function probeModel(model: ModelRecord): Promise<void> {
    const urls = await resolveReplicaUrls(model.upstream, opts.lookup ? { lookup: opts.lookup } : {});
    const previous = state.get(model.id) ?? new Map<string, ReplicaState>();
    const next = new Map<string, ReplicaState>();
    await Promise.all(
      urls.map(async (url) => {
        let ok = true;
        let detail = "";
        try {
          const probe = model.upstream.probe;
          if (probe === "OPENAI") await probeText(model, url);
          else if (probe === "WORKER") await probeWorker(url);
          else await probeImage(url);
        } catch (err) {
          ok = false;
          detail = describe(err, opts.timeoutMs);
        }
        const prev = previous.get(url);
        const failures = ok ? 0 : (prev?.failures ?? 0) + 1;
        // A new replica takes its first result as is; a healthy one needs several failures to be written off.
        const healthy = ok || (prev !== undefined && prev.healthy && failures < opts.failuresToUnhealthy);
        next.set(url, { healthy, failures, detail, checkedAt: new Date() });
      }),
    );
    state.set(model.id, next);
    const replicas: ReplicaHealthRecord[] = urls.map((baseUrl) => {
      const s = next.get(baseUrl)!;
      return { baseUrl, healthy: s.healthy, detail: s.detail, checkedAt: s.checkedAt };
    });
    const { status, reason } = computeHealth(replicas, model);
    const changed = await opts.store.recordHealth(model.id, { status, reason, replicas });
    if (changed) opts.log.info({ model: model.id, status, reason, version: String(changed.version) }, "model health changed");
  }

  async function round(): Promise<void> {
    const models = await opts.store.listModels();
    const enabled = models.filter((m) => m.enabled);
    for (const id of state.keys()) if (!enabled.some((m) => m.id === id)) state.delete(id);
    await Promise.all(
      enabled.map((m) =>
        probeModel(m).catch((err: unknown) => opts.log.warn({ err, model: m.id }, "health probe round failed for model")),
      ),
    );
    opts.onProbed?.(await opts.store.listModels());
  }

  const probeAll = (): Promise<void> => {
    if (!running) {
      running = round().finally(() => {
        running = undefined;
      });
      return running;
    }
    // A round is under way and may have read the catalog before the caller's change: run one more after it.
    queued ??= running.catch(() => undefined).then(() => {
      queued = undefined;
      return probeAll();
    });
    return queued;
  };

  return {
    start() {
      if (opts.intervalMs <= 0 || timer) return;
      void probeAll().catch((err: unknown) => opts.log.warn({ err }, "health probe round failed"));
      timer = setInterval(() => void probeAll().catch((err: unknown) => opts.log.warn({ err }, "health probe round failed")), opts.intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await queued?.catch(() => undefined);
      await running?.catch(() => undefined);
    },
    probeAll,
  };
}
