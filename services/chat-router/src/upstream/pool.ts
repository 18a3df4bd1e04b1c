/**
 * The replicas of each text model, kept in step with the catalog cache: their URLs (static `base_urls` plus what a
 * `resolve_url` resolves to, re-resolved periodically), the registry's last health probe, this process's in-flight
 * counts and a circuit breaker per replica. `pick` chooses one for a request (see domain/balancer.ts).
 */
import type http from "node:http";
import { normalizeBaseUrl, resolveReplicaUrls, type CatalogCache, type HostLookup } from "@luna/kit";
import { ModelStatus, type Model, type ModelUpstream } from "@luna/contracts/luna/models/v1/models_pb.js";
import { CircuitBreaker } from "../domain/breaker.js";
import { chooseReplica, hash32, type Candidate } from "../domain/balancer.js";
import { createAgent, type Endpoint } from "./client.js";

/** One upstream server (shared by every model it serves). */
export class Replica implements Candidate {
  readonly urlHash: number;
  inflight = 0;
  readonly breaker: CircuitBreaker;
  readonly agent: http.Agent;

  constructor(readonly baseUrl: string, breaker: CircuitBreaker, maxSockets: number) {
    this.urlHash = hash32(baseUrl);
    this.breaker = breaker;
    this.agent = createAgent(baseUrl, maxSockets);
  }
}

/** A model's replicas with what a request needs to call them. */
interface ModelReplicas {
  replicas: Replica[];
  /** Replica URLs the registry last probed as unhealthy. */
  unhealthy: Set<string>;
  servedModelName: string;
  apiKeyEnv: string;
  /** The upstream these were computed from (recomputed when the catalog changes it). */
  upstream: ModelUpstream;
  /** When `resolve_url` was last resolved (0 = static only). */
  resolvedAt: number;
}

export interface ReplicaPoolOptions {
  catalog: Pick<CatalogCache, "upstreams" | "getModel" | "onChange">;
  maxSockets: number;
  breakerFailures: number;
  breakerCooldownMs: number;
  stickySlack: number;
  refreshIntervalMs: number;
  /** Reads an upstream API key by the NAME the catalog gives. */
  readSecret: (name: string) => string | undefined;
  lookup?: HostLookup;
  now?: () => number;
}

/** The replica chosen for one request; `release` must be called exactly once with how it went. */
export interface Lease {
  replica: Replica;
  endpoint: Endpoint;
  /** The model name the upstream serves. */
  model: string;
}

export type LeaseOutcome = "success" | "failure" | "neutral";

export class ReplicaPool {
  private readonly byUrl = new Map<string, Replica>();
  private readonly byModel = new Map<string, ModelReplicas>();
  private readonly resolving = new Map<string, Promise<void>>();
  private readonly unsubscribe: () => void;
  private readonly now: () => number;

  constructor(private readonly opts: ReplicaPoolOptions) {
    this.now = opts.now ?? Date.now;
    // A changed upstream (new URLs, health) is recomputed on the next request.
    this.unsubscribe = opts.catalog.onChange((c) => {
      if (c.kind === "model") this.byModel.delete(c.id);
    });
  }

  close(): void {
    this.unsubscribe();
    for (const r of this.byUrl.values()) r.agent.destroy();
    this.byUrl.clear();
    this.byModel.clear();
  }

  private replica(url: string): Replica {
    let r = this.byUrl.get(url);
    if (!r) {
      r = new Replica(url, new CircuitBreaker({ failureThreshold: this.opts.breakerFailures, cooldownMs: this.opts.breakerCooldownMs }), this.opts.maxSockets);
      this.byUrl.set(url, r);
    }
    return r;
  }

  private compute(modelId: string, upstream: ModelUpstream, resolved: string[] | undefined): ModelReplicas {
    const urls = resolved ?? upstream.baseUrls.map(normalizeBaseUrl);
    const unhealthy = new Set<string>();
    for (const h of upstream.replicas) if (!h.healthy) unhealthy.add(normalizeBaseUrl(h.baseUrl));
    const entry: ModelReplicas = {
      replicas: [...new Set(urls)].map((u) => this.replica(u)),
      unhealthy,
      servedModelName: upstream.servedModelName || modelId,
      apiKeyEnv: upstream.apiKeyEnv,
      upstream,
      resolvedAt: resolved ? this.now() : 0,
    };
    this.byModel.set(modelId, entry);
    return entry;
  }

  /** The model's replicas, resolving `resolve_url` on first use and refreshing it in the background after that. */
  private async entry(modelId: string): Promise<ModelReplicas | undefined> {
    const upstream = this.opts.catalog.upstreams(modelId);
    if (!upstream) return undefined;
    let e = this.byModel.get(modelId);
    if (e && e.upstream !== upstream) e = undefined;
    if (!e) {
      if (!upstream.resolveUrl) return this.compute(modelId, upstream, undefined);
      await this.resolve(modelId, upstream);
      return this.byModel.get(modelId);
    }
    if (upstream.resolveUrl && this.now() - e.resolvedAt > this.opts.refreshIntervalMs) void this.resolve(modelId, upstream);
    return e;
  }

  private resolve(modelId: string, upstream: ModelUpstream): Promise<void> {
    let p = this.resolving.get(modelId);
    if (!p) {
      p = resolveReplicaUrls(upstream, { lookup: this.opts.lookup })
        .then((urls) => void this.compute(modelId, upstream, urls))
        .finally(() => this.resolving.delete(modelId));
      this.resolving.set(modelId, p);
    }
    return p;
  }

  /** Base URL → API key for the model's upstream. */
  private endpoint(e: ModelReplicas, r: Replica): Endpoint {
    const apiKey = e.apiKeyEnv ? this.opts.readSecret(e.apiKeyEnv) : undefined;
    return { baseUrl: r.baseUrl, agent: r.agent, ...(apiKey ? { apiKey } : {}) };
  }

  /**
   * Chooses a replica for `modelId`, sticky by `key`, skipping `exclude`d ones; undefined when none can take a
   * request (none configured, all excluded, all breakers open). Replicas the registry probed as unhealthy are
   * avoided while any other is usable.
   */
  async pick(modelId: string, key: string, exclude?: ReadonlySet<Replica>): Promise<Lease | undefined> {
    const e = await this.entry(modelId);
    if (!e || e.replicas.length === 0) return undefined;
    const now = this.now();
    const usable = (r: Replica) => !exclude?.has(r) && r.breaker.available(now);
    let candidates = e.replicas.filter((r) => usable(r) && !e.unhealthy.has(r.baseUrl));
    if (candidates.length === 0) candidates = e.replicas.filter(usable);
    while (candidates.length > 0) {
      const i = chooseReplica(candidates, key, this.opts.stickySlack);
      const r = candidates[i]!;
      if (r.breaker.tryAcquire(now)) {
        r.inflight++;
        return { replica: r, endpoint: this.endpoint(e, r), model: e.servedModelName };
      }
      candidates = candidates.filter((c) => c !== r);
    }
    return undefined;
  }

  /**
   * The replica a request for `modelId` would most likely go to, without taking it (for side calls such as
   * /tokenize, which must not count as load or feed the breakers).
   */
  async peek(modelId: string, key: string): Promise<{ endpoint: Endpoint; model: string } | undefined> {
    const e = await this.entry(modelId);
    if (!e || e.replicas.length === 0) return undefined;
    const now = this.now();
    let candidates = e.replicas.filter((r) => r.breaker.available(now) && !e.unhealthy.has(r.baseUrl));
    if (candidates.length === 0) {
      // A model at zero (or waking) has nobody to ask: side calls use their fallback instead of a starting replica.
      const m = this.opts.catalog.getModel(modelId);
      if (m && (m.scaleToZero || m.status === ModelStatus.STANDBY)) return undefined;
      candidates = e.replicas;
    }
    const r = candidates[chooseReplica(candidates, key, this.opts.stickySlack)]!;
    return { endpoint: this.endpoint(e, r), model: e.servedModelName };
  }

  /**
   * Whether the model has a replica a request can go to now: resolved, not probed unhealthy (by the registry, or
   * newer: by the wake prober), breaker not open. A scale-to-zero model without one waits for one (see wake.ts).
   */
  async hasReady(modelId: string): Promise<boolean> {
    const e = await this.entry(modelId);
    if (!e) return false;
    const now = this.now();
    return e.replicas.some((r) => !e.unhealthy.has(r.baseUrl) && r.breaker.available(now));
  }

  /**
   * Records replicas the wake prober just found healthy (ahead of the registry's next probe and catalog event): they
   * join the model's replicas and count as healthy until the catalog says otherwise.
   */
  markReady(modelId: string, urls: string[]): void {
    const upstream = this.opts.catalog.upstreams(modelId);
    if (!upstream) return;
    let e = this.byModel.get(modelId);
    if (!e || e.upstream !== upstream) e = this.compute(modelId, upstream, undefined);
    for (const url of urls) {
      const u = normalizeBaseUrl(url);
      e.unhealthy.delete(u);
      if (!e.replicas.some((r) => r.baseUrl === u)) e.replicas.push(this.replica(u));
      // A replica that was down while the pool was at zero must not stay shut out by its old failures.
      this.replica(u).breaker.onSuccess();
    }
  }

  /**
   * Takes every replica of a scale-to-zero model as not ready (they refused or vanished: the pool scaled in before
   * the catalog said so); the next requests wait for the wake prober (or the catalog) to see one healthy again.
   */
  markAsleep(modelId: string): void {
    const e = this.byModel.get(modelId);
    if (e) for (const r of e.replicas) e.unhealthy.add(r.baseUrl);
  }

  /** Ends a lease, feeding the breaker. */
  release(lease: Lease, outcome: LeaseOutcome): void {
    const r = lease.replica;
    r.inflight--;
    if (outcome === "success") r.breaker.onSuccess();
    else if (outcome === "failure") r.breaker.onFailure(this.now());
    else r.breaker.onNeutral();
  }

  /** Forgets every replica's failures (closes all breakers); for operators' tooling and tests. */
  resetBreakers(): void {
    for (const r of this.byUrl.values()) r.breaker.onSuccess();
  }

  /** Breaker states for metrics and tests. */
  snapshot(): Array<{ baseUrl: string; inflight: number; state: string }> {
    const now = this.now();
    return [...this.byUrl.values()].map((r) => ({ baseUrl: r.baseUrl, inflight: r.inflight, state: r.breaker.state(now) }));
  }

  /** The model's catalog entry, for callers that hold a pool only. */
  model(modelId: string): Model | undefined {
    return this.opts.catalog.getModel(modelId);
  }
}
