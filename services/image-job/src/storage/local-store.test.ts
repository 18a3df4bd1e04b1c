// The local store and the HTTP route that serves its files through signed URLs.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { imageHttpHandler } from "./http.js";
import { createLocalStore } from "./local-store.js";

const secret = "x".repeat(40);
let dir: string;
let server: Server;
let base: string;
let store: ReturnType<typeof createLocalStore>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "luna-local-store-"));
  store = createLocalStore({ dir, secret, baseUrl: "" });
  const handler = imageHttpHandler({ store, secret, log: { warn: () => undefined } });
  server = createServer((req, res) => {
    if (!handler(req, res)) res.writeHead(404).end("not mine");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe("local store", () => {
  it("writes atomically, reads, overwrites and deletes", async () => {
    await store.put("images/u/j/0.png", Buffer.from("one"), "image/png");
    await store.put("images/u/j/0.png", Buffer.from("two"), "image/png");
    expect((await store.get("images/u/j/0.png"))?.body.toString()).toBe("two");
    expect(readdirSync(join(dir, "images/u/j"))).toEqual(["0.png"]);
    await store.delete("images/u/j/0.png");
    await store.delete("images/u/j/0.png");
    expect(await store.get("images/u/j/0.png")).toBeUndefined();
  });

  it("never leaves its folder", async () => {
    await expect(store.put("../outside.png", Buffer.from("x"), "image/png")).rejects.toThrow(/unsafe/);
    await expect(store.get("a/../../b")).rejects.toThrow(/unsafe/);
  });

  it("serves signed URLs: 200 with the bytes, 403 expired, 404 missing, other paths untouched", async () => {
    await store.put("images/u/j/1.png", Buffer.from("pngdata"), "image/png");
    const url = await store.signedUrl("images/u/j/1.png", new Date(Date.now() + 60_000));
    const ok = await fetch(`${base}${url}`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("image/png");
    expect(ok.headers.get("cache-control")).toMatch(/^private, max-age=\d+/);
    expect(await ok.text()).toBe("pngdata");
    const head = await fetch(`${base}${url}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("7");
    const expired = await store.signedUrl("images/u/j/1.png", new Date(Date.now() - 1000));
    expect((await fetch(`${base}${expired}`)).status).toBe(403);
    const missing = await store.signedUrl("images/u/j/2.png", new Date(Date.now() + 60_000));
    expect((await fetch(`${base}${missing}`)).status).toBe(404);
    expect(await (await fetch(`${base}/other`)).text()).toBe("not mine");
  });
});
