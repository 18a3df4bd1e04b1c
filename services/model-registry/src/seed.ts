import type { CatalogStore } from "./data/store.js";
import { defaultCatalog, type SeedOptions } from "./domain/seed-catalog.js";

/**
 * Inserts the default catalog's models and workflows that are missing by id. Existing rows — including every
 * operator edit to a seeded entry — are left exactly as they are, so running it on every start is safe.
 */
export async function seedCatalog(
  store: CatalogStore,
  opts: SeedOptions,
  log: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void },
): Promise<{ models: string[]; workflows: string[] }> {
  const catalog = defaultCatalog(opts);
  const imageIds = catalog.models.filter((m) => m.kind === "IMAGE").map((m) => m.id);
  const unknown = [...(opts.imageWorkers?.keys() ?? [])].filter((id) => !imageIds.includes(id));
  // A typo here would silently leave the model probed at ComfyUI's URL (OFFLINE in a cluster): say so.
  if (unknown.length > 0) log.warn({ unknown, imageModels: imageIds }, "REGISTRY_SEED_IMAGE_WORKERS names models the default catalog has no image model for");
  const inserted = await store.seed(catalog.models, catalog.workflows);
  if (inserted.models.length + inserted.workflows.length > 0) log.info(inserted, "default catalog entries seeded");
  return inserted;
}
