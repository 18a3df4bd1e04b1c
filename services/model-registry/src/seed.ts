import type { CatalogStore } from "./data/store.js";
import { defaultCatalog, type SeedOptions } from "./domain/seed-catalog.js";

/**
 * Inserts the default catalog's models and workflows that are missing by id. Existing rows — including every
 * operator edit to a seeded entry — are left exactly as they are, so running it on every start is safe.
 */
export async function seedCatalog(
  store: CatalogStore,
  opts: SeedOptions,
  log: { info(obj: object, msg?: string): void },
): Promise<{ models: string[]; workflows: string[] }> {
  const catalog = defaultCatalog(opts);
  const inserted = await store.seed(catalog.models, catalog.workflows);
  if (inserted.models.length + inserted.workflows.length > 0) log.info(inserted, "default catalog entries seeded");
  return inserted;
}
