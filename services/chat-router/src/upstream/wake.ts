/**
 * Waiting for a model that scaled to zero (issue 19). A reply for a model without a ready replica — STANDBY in the
 * catalog, or scale-to-zero with every replica still starting — waits here instead of failing. While anyone waits
 * for a model, this process probes the model's replicas itself every CHAT_WAKE_PROBE_INTERVAL (re-resolving
 * `resolve_url`, so a new pod is seen as soon as its DNS record appears), rather than waiting for the registry's
 * slower probe round and catalog event; the first healthy answer releases every waiter of the model, in arrival
 * order. A catalog change that brings a healthy replica releases them too. Nothing is probed while nobody waits.
 */
import { resolveReplicaUrls, type CatalogCache, type HostLookup } from "@luna/kit";
import type { ReplicaPool } from "./pool.js";

export type WaitResult = "ready" | "aborted" | "timeout";

export interface WakeGateOptions {
  pool: Pick<ReplicaPool, "hasReady" | "markReady">;
  catalog: Pick<CatalogCache, "upstreams" | "onChange">;
  /** Pause between two probe rounds of a model while someone waits for it. */
  probeIntervalMs: number;
  /** Deadline of one probe request. */
  probeTimeoutMs: number;
  readSecret: (name: string) => string | undefined;
  lookup?: HostLookup;
  fetch?: typeof fetch;
  log: { info(obj: object, msg?: string): void; debug(obj: object, msg?: string): void };
}

interface Waiter {
  resolve: (r: WaitResult) => void;
  /** Called once the first probe round found no replica (the caller then tells its client it waits). */
  onWaiting: () => void;
  told: boolean;
}

interface ModelWait {
  waiters: Waiter[];
  /** A probe loop runs for the model. */
  probing: boolean;
  /** At least one probe round of the current loop found nothing ready. */
  confirmedCold: boolean;
}

export class WakeGate {
  private readonly models = new Map<string, ModelWait>();
  private readonly unsubscribe: () => void;
  private readonly doFetch: typeof fetch;
  private closed = false;

  constructor(private readonly opts: WakeGateOptions) {
    this.doFetch = opts.fetch ?? fetch;
    // The registry may see the replica first (its probe, then the catalog event): release the waiters then.
    this.unsubscribe = opts.catalog.onChange((c) => {
      if (c.kind === "model" && this.models.has(c.id)) void this.checkCatalog(c.id);
    });
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    for (const id of [...this.models.keys()]) this.releaseAll(id, "aborted");
  }

  /** Requests waiting now, per model (for the demand metric). */
  waitingCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [id, m] of this.models) if (m.waiters.length > 0) out.set(id, m.waiters.length);
    return out;
  }

  /**
   * Waits until the model has a ready replica, `signal` aborts (stop, client gone) or `timeoutMs` passes.
   * `onWaiting` is called (at most once) when the wait is real: the first probe found nothing ready.
   */
  wait(modelId: string, opts: { signal: AbortSignal; timeoutMs: number; onWaiting: () => void }): Promise<WaitResult> {
    if (this.closed || opts.signal.aborted) return Promise.resolve("aborted");
    let m = this.models.get(modelId);
    if (!m) {
      m = { waiters: [], probing: false, confirmedCold: false };
      this.models.set(modelId, m);
    }
    const model = m;
    return new Promise<WaitResult>((resolve) => {
      const onAbort = () => settle("aborted");
      const waiter: Waiter = {
        resolve: (r) => settle(r),
        onWaiting: opts.onWaiting,
        told: false,
      };
      function settle(r: WaitResult) {
        clearTimeout(timer);
        opts.signal.removeEventListener("abort", onAbort);
        const i = model.waiters.indexOf(waiter);
        if (i < 0) return;
        model.waiters.splice(i, 1);
        resolve(r);
      }
      model.waiters.push(waiter);
      const timer = setTimeout(() => settle("timeout"), opts.timeoutMs);
      timer.unref();
      opts.signal.addEventListener("abort", onAbort, { once: true });
      if (model.confirmedCold) this.tell(waiter);
      if (!model.probing) void this.probeLoop(modelId, model);
    });
  }

  private tell(w: Waiter): void {
    if (w.told) return;
    w.told = true;
    try {
      w.onWaiting();
    } catch {
      // the caller's notification must not break the wait
    }
  }

  /** Resolves every waiter of the model, oldest first (their continuations then run in that order). */
  private releaseAll(modelId: string, result: WaitResult): void {
    const m = this.models.get(modelId);
    if (!m) return;
    this.models.delete(modelId);
    for (const w of [...m.waiters]) w.resolve(result);
  }

  private async checkCatalog(modelId: string): Promise<void> {
    if (await this.opts.pool.hasReady(modelId).catch(() => false)) this.releaseAll(modelId, "ready");
  }

  private async probeLoop(modelId: string, m: ModelWait): Promise<void> {
    m.probing = true;
    const startedAt = Date.now();
    try {
      while (!this.closed && this.models.get(modelId) === m && m.waiters.length > 0) {
        const ready = await this.probeOnce(modelId).catch(() => [] as string[]);
        if (this.models.get(modelId) !== m) return;
        if (ready.length > 0) {
          this.opts.pool.markReady(modelId, ready);
          this.opts.log.info({ model: modelId, replicas: ready, waitedMs: Date.now() - startedAt, waiters: m.waiters.length }, "model woke up: releasing waiting replies");
          this.releaseAll(modelId, "ready");
          return;
        }
        // The catalog (or this process, for another model's request) may already know a ready replica.
        if (await this.opts.pool.hasReady(modelId).catch(() => false)) {
          this.releaseAll(modelId, "ready");
          return;
        }
        if (!m.confirmedCold) {
          m.confirmedCold = true;
          for (const w of m.waiters) this.tell(w);
        }
        await new Promise((r) => setTimeout(r, this.opts.probeIntervalMs).unref());
      }
    } finally {
      m.probing = false;
      if (this.models.get(modelId) === m && m.waiters.length === 0) this.models.delete(modelId);
    }
  }

  /** Probes every replica of the model once; the base URLs that answered healthy. */
  private async probeOnce(modelId: string): Promise<string[]> {
    const upstream = this.opts.catalog.upstreams(modelId);
    if (!upstream) return [];
    const urls = await resolveReplicaUrls(upstream, this.opts.lookup ? { lookup: this.opts.lookup } : {});
    const key = upstream.apiKeyEnv ? this.opts.readSecret(upstream.apiKeyEnv) : undefined;
    const results = await Promise.all(urls.map(async (url) => ((await this.healthy(url, key)) ? url : undefined)));
    return results.filter((u): u is string => u !== undefined);
  }

  /**
   * vLLM answers `GET /health` 200 only once the model is loaded (503 or no connection before). A server without
   * the route (404: Ollama, some proxies) is ready when its model list answers.
   */
  private async healthy(base: string, key: string | undefined): Promise<boolean> {
    try {
      const res = await this.doFetch(`${base}/health`, { signal: AbortSignal.timeout(this.opts.probeTimeoutMs), redirect: "error" });
      await res.body?.cancel();
      if (res.status >= 200 && res.status < 300) return true;
      if (res.status !== 404) return false;
      const list = await this.doFetch(`${base}/v1/models`, {
        signal: AbortSignal.timeout(this.opts.probeTimeoutMs), redirect: "error", headers: key ? { authorization: `Bearer ${key}` } : {},
      });
      await list.body?.cancel();
      return list.status >= 200 && list.status < 300;
    } catch (err) {
      this.opts.log.debug({ err, replica: base }, "wake probe failed");
      return false;
    }
  }
}
