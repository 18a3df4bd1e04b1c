// make dev's image-job settings (issue 20): signed image URLs are absolute at the platform's own address, as they are
// at the gateway's public URL in a cluster; an IMAGE_PUBLIC_BASE_URL in the environment wins, "" stays relative.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "@luna/kit";
import { configSchema, signImageUrl } from "@luna/image-job";
import { afterAll, describe, expect, it } from "vitest";
import { devImageEnv } from "../src/modules.js";

const dataDir = mkdtempSync(join(tmpdir(), "luna-dev-image-"));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

function urlOf(env: NodeJS.ProcessEnv, publicUrl: string): string {
  const config = loadConfig(configSchema, devImageEnv(env, { dataDir, publicUrl }));
  return signImageUrl({ secret: config.IMAGE_URL_SECRET!, baseUrl: config.IMAGE_PUBLIC_BASE_URL, key: "0b4a9c1e/0.png", expiresAt: new Date(Date.now() + 60_000) });
}

describe("make dev image URLs", () => {
  it("are absolute at the platform's address", () => {
    expect(urlOf({}, "http://localhost:8080")).toMatch(/^http:\/\/localhost:8080\/images\/0b4a9c1e\/0\.png\?exp=\d+&sig=/);
  });

  it("follow IMAGE_PUBLIC_BASE_URL from the environment, and stay relative without an address", () => {
    expect(urlOf({ IMAGE_PUBLIC_BASE_URL: "https://luna.example.com" }, "http://localhost:8080")).toMatch(/^https:\/\/luna\.example\.com\/images\//);
    expect(urlOf({}, "")).toMatch(/^\/images\/0b4a9c1e\/0\.png\?/);
  });
});
