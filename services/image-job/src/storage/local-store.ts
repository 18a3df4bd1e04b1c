// The local filesystem store (the default for local runs): files under one folder, served by image-job's HTTP hook
// (see storage/http.ts) through HMAC-signed, expiring URLs.
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { randomUUID } from "node:crypto";
import { isSafeKey, signImageUrl } from "../domain/url-signing.js";
import type { ImageStore, StoredObject } from "./store.js";

export interface LocalStoreOptions {
  dir: string;
  /** HMAC secret of the URLs (must match the one the HTTP hook verifies with). */
  secret: string;
  /** Base of the URLs ("" = relative `/images/...`). */
  baseUrl: string;
}

/** Content types are stored beside the file (`<file>.type`) only when not PNG, which is all Luna writes. */
const DEFAULT_TYPE = "image/png";

export function createLocalStore(opts: LocalStoreOptions): ImageStore & { dir: string; pathOf(key: string): string } {
  const root = resolve(opts.dir);
  const pathOf = (key: string): string => {
    if (!isSafeKey(key)) throw new Error(`unsafe object key ${JSON.stringify(key)}`);
    const p = resolve(join(root, key));
    if (!p.startsWith(root + sep)) throw new Error(`object key escapes the store: ${JSON.stringify(key)}`);
    return p;
  };
  return {
    kind: "local",
    dir: root,
    pathOf,
    async put(key, body, contentType) {
      const path = pathOf(key);
      await mkdir(dirname(path), { recursive: true });
      // Write then rename: a reader never sees a half-written file, and a crashed write leaves only a temp file.
      const tmp = `${path}.${randomUUID()}.tmp`;
      await writeFile(tmp, body);
      await rename(tmp, path);
      if (contentType !== DEFAULT_TYPE) await writeFile(`${path}.type`, contentType);
    },
    async get(key): Promise<StoredObject | undefined> {
      const path = pathOf(key);
      try {
        const body = await readFile(path);
        let contentType = DEFAULT_TYPE;
        try {
          contentType = (await readFile(`${path}.type`, "utf8")).trim() || DEFAULT_TYPE;
        } catch {
          // no sidecar: PNG
        }
        return { body, contentType };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    },
    async delete(key) {
      const path = pathOf(key);
      await rm(path, { force: true });
      await rm(`${path}.type`, { force: true });
    },
    async signedUrl(key, expiresAt) {
      return signImageUrl({ secret: opts.secret, baseUrl: opts.baseUrl, key, expiresAt });
    },
  };
}
