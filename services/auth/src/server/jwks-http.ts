import type { Logger, NodeServerRequest, NodeServerResponse } from "@luna/kit";
import type { Jwks } from "../keys/key-store.js";

export const JWKS_PATH = "/.well-known/jwks.json";

type Req = NodeServerRequest;
type Res = NodeServerResponse;

/**
 * Plain HTTP handler for `GET /.well-known/jwks.json` on the API port (the module's `http` hook). Returns true when it
 * handled the request. Cacheable for `maxAgeMs`: new keys are published `AUTH_KEY_PREPUBLISH` before they sign.
 */
export function jwksHttpHandler(opts: { jwks: () => Promise<Jwks>; maxAgeMs: number; log: Logger }): (req: Req, res: Res) => boolean {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== JWKS_PATH) return false;
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" });
      res.end();
      return true;
    }
    opts.jwks().then(
      (jwks) => {
        const body = JSON.stringify(jwks);
        res.writeHead(200, {
          "content-type": "application/json",
          "cache-control": `public, max-age=${Math.floor(opts.maxAgeMs / 1000)}`,
          "content-length": Buffer.byteLength(body),
        });
        if (req.method === "HEAD") res.end();
        else res.end(body);
      },
      (err: unknown) => {
        opts.log.error({ err }, "cannot serve the JWKS");
        res.writeHead(503, { "content-type": "application/json", "retry-after": "5" });
        res.end(JSON.stringify({ error: "signing keys unavailable" }));
      },
    );
    return true;
  };
}
