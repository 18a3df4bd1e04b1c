/**
 * @luna/web — serving the built web client (`vite build` → tools/web/dist) from a Node HTTP server, e.g. as the
 * all-in-one process's `extraHttp` handler at `/`.
 */
import { createReadStream, existsSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, normalize, resolve, sep } from "node:path";

/** Where `vite build` writes the page: tools/web/dist (the same from src/ and from the compiled dist-node/). */
export const WEB_CLIENT_DIST_DIR = resolve(import.meta.dirname, "../dist");

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".ico": "image/x-icon",
  ".webp": "image/webp",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

// The page talks only to its own origin; images may come from signed URLs elsewhere (object storage) or be
// previews decoded in the page (blob:, data:).
const CONTENT_SECURITY_POLICY =
  "default-src 'self'; img-src 'self' data: blob: http: https:; style-src 'self'; script-src 'self'; connect-src 'self'; " +
  "object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** Connect/gRPC paths (`/luna.chat.v1.ChatService/SendMessage`), well-known files and the like are never ours. */
const NOT_OURS = /^\/(?:[a-z_][\w]*\.)+[A-Z]\w*\/|^\/\.well-known\//;

export type WebClientHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/**
 * An HTTP handler serving the built web client from `distDir`: files with their content type (hashed `/assets/*`
 * cached for a year, everything else revalidated), and `index.html` for page navigations to unknown paths. It
 * answers only GET and HEAD, and returns false (not handled) for RPC paths, `/.well-known/*`, and unknown paths
 * that are not page navigations (no `accept: text/html`), so it can sit beside the API on one port. Before the page
 * is built, `/` explains how to build it.
 */
export function serveWebClient(distDir: string = WEB_CLIENT_DIST_DIR): WebClientHandler {
  const root = resolve(distDir);
  return (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    } catch {
      return false;
    }
    if (NOT_OURS.test(path) || path.includes("\0")) return false;
    const index = join(root, "index.html");
    if (!existsSync(index)) {
      if (path !== "/") return false;
      send(res, req, 503, { "content-type": "text/plain; charset=utf-8" },
        "The Luna web client is not built yet: run `npm run build -w tools/web`.\n");
      return true;
    }
    const file = resolve(root, `.${normalize(path)}`);
    const inside = file === root || file.startsWith(root + sep);
    if (inside && file !== root && isFile(file) && !path.split("/").some((p) => p.startsWith("."))) {
      const immutable = path.startsWith("/assets/");
      serveFile(req, res, file, immutable ? "public, max-age=31536000, immutable" : "no-cache");
      return true;
    }
    // `/` is the page whatever the Accept header (`curl localhost:8080/`). Another unknown path: a page navigation
    // gets the app (it routes on the client, e.g. /c/<conversation>); anything else is not ours.
    const navigation = path === "/" || (req.headers.accept ?? "").includes("text/html");
    if (!navigation || extname(path) !== "") return false;
    serveFile(req, res, index, "no-cache");
    return true;
  };
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function serveFile(req: IncomingMessage, res: ServerResponse, file: string, cacheControl: string): void {
  const type = CONTENT_TYPES[extname(file).toLowerCase()] ?? "application/octet-stream";
  const headers: Record<string, string> = {
    "content-type": type,
    "content-length": String(statSync(file).size),
    "cache-control": cacheControl,
    "x-content-type-options": "nosniff",
  };
  if (type.startsWith("text/html")) {
    headers["content-security-policy"] = CONTENT_SECURITY_POLICY;
    headers["referrer-policy"] = "no-referrer";
  }
  res.writeHead(200, headers);
  if (req.method === "HEAD") return void res.end();
  createReadStream(file)
    .on("error", () => res.destroy())
    .pipe(res);
}

function send(res: ServerResponse, req: IncomingMessage, status: number, headers: Record<string, string>, body: string): void {
  res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)) });
  res.end(req.method === "HEAD" ? undefined : body);
}
