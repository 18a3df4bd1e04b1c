// Builds the configured image store.
import { randomBytes } from "node:crypto";
import type { StorageConfig } from "./config.js";
import { createLocalStore } from "./local-store.js";
import { createS3Store } from "./s3-store.js";
import type { ImageStore } from "./store.js";

export type { ImageStore, StoredObject } from "./store.js";
export { createLocalStore } from "./local-store.js";
export { createS3Store } from "./s3-store.js";
export { storageConfigSchema, type StorageConfig } from "./config.js";

/** A random URL secret for a process that was given none (local development only). */
export function ephemeralUrlSecret(): string {
  return randomBytes(32).toString("base64url");
}

/**
 * The store described by the config. `urlSecret` and `publicBaseUrl` matter for the local store only (the worker,
 * which never signs URLs, may pass anything).
 */
export function createImageStore(config: StorageConfig, urls: { urlSecret: string; publicBaseUrl: string }): ImageStore {
  if (config.IMAGE_STORE === "s3") {
    const { IMAGE_S3_ACCESS_KEY_ID: id, IMAGE_S3_SECRET_ACCESS_KEY: secret } = config;
    if ((id === undefined) !== (secret === undefined)) {
      throw new Error("IMAGE_S3_ACCESS_KEY_ID and IMAGE_S3_SECRET_ACCESS_KEY: set both or neither");
    }
    return createS3Store({
      bucket: config.IMAGE_S3_BUCKET,
      region: config.IMAGE_S3_REGION,
      endpoint: config.IMAGE_S3_ENDPOINT,
      forcePathStyle: config.IMAGE_S3_FORCE_PATH_STYLE,
      credentials: id && secret ? { accessKeyId: id, secretAccessKey: secret } : undefined,
      prefix: config.IMAGE_S3_PREFIX,
    });
  }
  return createLocalStore({ dir: config.IMAGE_LOCAL_DIR, secret: urls.urlSecret, baseUrl: urls.publicBaseUrl });
}
