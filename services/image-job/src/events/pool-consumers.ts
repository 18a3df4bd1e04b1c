// The job queue's durable consumers, one per image model pool (`image-worker-<pool>`), created by image-job for every
// image model in the catalog — at start and whenever the catalog gains one — so each exists while its pool has zero
// workers: KEDA's nats-jetstream scaler reads the consumer's lag to wake the pool, and without the consumer there is
// no lag to read. Created from the workers' own definition (poolConsumerSpec) and never changed once it exists: its
// settings belong to the workers, which keep it in line with their configuration when they start.
import { ModelKind } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ensureConsumer, type CatalogCache } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import { poolConsumerSpec } from "../domain/job.js";

export interface PoolConsumers {
  /** Creates the missing consumers of every image model now; resolves with the pools checked. */
  ensureAll(): Promise<string[]>;
  stop(): void;
}

export function startPoolConsumers(opts: {
  js: JetStreamClient;
  catalog: Pick<CatalogCache, "whenLoaded" | "listModels" | "getModel" | "onChange">;
  /** The workers' ack wait default (IMAGE_WORKER_ACK_WAIT), used only when a consumer does not exist yet. */
  ackWaitMs: number;
  /** Wait before trying again after a failure (NATS down). */
  retryMs: number;
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void };
}): PoolConsumers {
  const done = new Set<string>();
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;

  const ensure = async (modelId: string): Promise<void> => {
    const jsm = await opts.js.jetstreamManager();
    const spec = poolConsumerSpec(modelId, opts.ackWaitMs);
    await ensureConsumer(jsm, spec, { createOnly: true });
    if (!done.has(modelId)) opts.log.info({ pool: modelId, durable: spec.durable }, "image pool consumer present");
    done.add(modelId);
  };

  const ensureAll = async (): Promise<string[]> => {
    const pools = opts.catalog.listModels(ModelKind.IMAGE).map((m) => m.id);
    const results = await Promise.allSettled(pools.map(ensure));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    return pools;
  };

  const attempt = () => {
    if (stopped) return;
    ensureAll().catch((err: unknown) => {
      opts.log.warn({ err, retryInMs: opts.retryMs }, "could not create the image pools' queue consumers; retrying");
      if (!stopped && !retry) {
        retry = setTimeout(() => {
          retry = undefined;
          attempt();
        }, opts.retryMs);
        retry.unref();
      }
    });
  };

  const unsubscribe = opts.catalog.onChange((c) => {
    if (c.kind !== "model" || done.has(c.id)) return;
    if (opts.catalog.getModel(c.id)?.kind === ModelKind.IMAGE) attempt();
  });
  void opts.catalog.whenLoaded().then(attempt);

  return {
    ensureAll,
    stop() {
      stopped = true;
      unsubscribe();
      if (retry) clearTimeout(retry);
    },
  };
}
