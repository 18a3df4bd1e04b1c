// Plain HTTP route on image-job's API port that serves the local store's files through signed, expiring URLs:
// `GET|HEAD /images/<key>?exp=<unix seconds>&sig=<hmac>`. Expired or tampered URLs get 403, unknown files 404.
import type { NodeServerRequest, NodeServerResponse } from "@luna/kit";
import { IMAGE_PATH_PREFIX, verifyImageUrl } from "../domain/url-signing.js";
import type { ImageStore } from "./store.js";

export interface ImageHttpOptions {
  store: ImageStore;
  secret: string;
  log: { warn(obj: object, msg?: string): void };
  now?: () => Date;
}

function plain(res: NodeServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
  res.end(`${text}\n`);
}

/** The `http` hook of the module: returns true for `/images/...` requests (and answers them), false otherwise. */
export function imageHttpHandler(opts: ImageHttpOptions): (req: NodeServerRequest, res: NodeServerResponse) => boolean {
  const now = opts.now ?? (() => new Date());
  return (req, res) => {
    const url = req.url ?? "";
    if (!url.startsWith(IMAGE_PATH_PREFIX)) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      plain(res, 405, "method not allowed");
      return true;
    }
    const check = verifyImageUrl({ secret: opts.secret, pathAndQuery: url, now: now() });
    if (!check.ok) {
      plain(res, check.status, check.reason);
      return true;
    }
    void opts.store.get(check.key).then(
      (obj) => {
        if (!obj) return plain(res, 404, "image not found");
        const maxAge = Math.max(0, Math.floor((check.expiresAt.getTime() - now().getTime()) / 1000));
        res.writeHead(200, {
          "content-type": obj.contentType,
          "content-length": String(obj.body.length),
          // Private: the URL is a capability of one user; caches may keep it only as long as it is valid.
          "cache-control": `private, max-age=${maxAge}, immutable`,
          "x-content-type-options": "nosniff",
        });
        if (req.method === "HEAD") res.end();
        else res.end(obj.body);
      },
      (err: unknown) => {
        opts.log.warn({ err, key: check.key }, "image read failed");
        if (!res.headersSent) plain(res, 500, "image could not be read");
        else res.destroy();
      },
    );
    return true;
  };
}
