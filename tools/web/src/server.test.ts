import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { serveWebClient } from "./server.js";

const dist = mkdtempSync(join(tmpdir(), "luna-web-dist-"));
const empty = mkdtempSync(join(tmpdir(), "luna-web-empty-"));
let server: Server;
let base = "";
let current = serveWebClient(dist);

beforeAll(async () => {
  writeFileSync(join(dist, "index.html"), '<!doctype html><div id="app"></div>');
  mkdirSync(join(dist, "assets"));
  writeFileSync(join(dist, "assets", "index-abc123.js"), "console.log(1)");
  writeFileSync(join(dist, "assets", "index-abc123.css"), "body{}");
  writeFileSync(join(dist, "robots.txt"), "User-agent: *");
  writeFileSync(join(dist, ".env"), "SECRET=1");
  writeFileSync(join(tmpdir(), "luna-web-outside.txt"), "outside");
  // The handler sits in front of a fake API that answers everything it declines.
  server = createServer((req, res) => {
    if (current(req, res)) return;
    res.writeHead(299, { "content-type": "text/plain" }).end("api");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dist, { recursive: true, force: true });
  rmSync(empty, { recursive: true, force: true });
  rmSync(join(tmpdir(), "luna-web-outside.txt"), { force: true });
});

/** GET with the path sent exactly as given (fetch would normalise "../" away). */
function rawGet(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request(`${base}/`, { path }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve(body));
    }).on("error", reject).end();
  });
}

const html = { accept: "text/html,application/xhtml+xml" };

describe("serveWebClient", () => {
  it("serves the page and its files with their content types and caching", async () => {
    const index = await fetch(`${base}/`, { headers: html });
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(index.headers.get("cache-control")).toBe("no-cache");
    expect(index.headers.get("content-security-policy")).toContain("default-src 'self'");
    expect(await index.text()).toContain('id="app"');

    const js = await fetch(`${base}/assets/index-abc123.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(await js.text()).toBe("console.log(1)");
    expect((await fetch(`${base}/assets/index-abc123.css`)).headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect((await fetch(`${base}/robots.txt`)).headers.get("content-type")).toBe("text/plain; charset=utf-8");
  });

  it("answers / with the page whatever the Accept header (curl, fetch, a browser)", async () => {
    for (const accept of [undefined, "*/*", "application/json"]) {
      const res = await fetch(`${base}/`, { headers: accept ? { accept } : {} });
      expect(res.status, String(accept)).toBe(200);
      expect(await res.text()).toContain('id="app"');
    }
    expect(await rawGet("/")).toContain('id="app"'); // no Accept header at all
  });

  it("answers HEAD without a body", async () => {
    const res = await fetch(`${base}/assets/index-abc123.js`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe("14");
    expect(await res.text()).toBe("");
  });

  it("gives page navigations to unknown paths the app, and leaves everything else to the API", async () => {
    expect(await (await fetch(`${base}/chat/123`, { headers: html })).text()).toContain('id="app"');
    // Not a navigation, a missing asset, an RPC, a well-known file, a POST: not ours.
    expect((await fetch(`${base}/images/abc?sig=1`)).status).toBe(299);
    expect((await fetch(`${base}/assets/missing.js`, { headers: html })).status).toBe(299);
    expect((await fetch(`${base}/luna.models.v1.ModelService/ListModels`, { headers: html })).status).toBe(299);
    expect((await fetch(`${base}/.well-known/jwks.json`, { headers: html })).status).toBe(299);
    expect((await fetch(`${base}/`, { method: "POST", headers: html })).status).toBe(299);
  });

  it("never serves files outside the dist dir or dotfiles", async () => {
    for (const path of ["/../luna-web-outside.txt", "/%2e%2e/luna-web-outside.txt", "/..%2fluna-web-outside.txt", "/assets/../../luna-web-outside.txt", "/.env"]) {
      expect(await rawGet(path), path).not.toMatch(/outside|SECRET/);
    }
  });

  it("explains how to build the page when it is not built", async () => {
    current = serveWebClient(empty);
    try {
      const res = await fetch(`${base}/`, { headers: html });
      expect(res.status).toBe(503);
      expect(await res.text()).toMatch(/not built yet: run `npm run build -w tools\/web`/);
      expect((await fetch(`${base}/anything`, { headers: html })).status).toBe(299);
    } finally {
      current = serveWebClient(dist);
    }
  });
});
