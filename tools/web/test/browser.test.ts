// The web client in a real browser (Debian's Chromium driven by playwright-core) against a real all-in-one Luna:
// sign up with an invite, see the credits, pick a model, chat with a streamed reply and stop one, generate an image
// and find it in the gallery. Steps that need a service the all-in-one process does not host yet are left out
// until it does.
import { existsSync, readdirSync, statSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { join, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startVllmSim } from "@luna/sim-vllm";
import { ADMIN_EMAIL, ADMIN_PASSWORD, hosts, startTestPlatform, type TestPlatform } from "../../cli/test/platform.js";
import { serveWebClient } from "../src/server.js";
import { CHROMIUM_ARGS, ensureChromium } from "./chromium.js";

const webDir = resolve(import.meta.dirname, "..");
const distDir = join(webDir, "dist");
const SCREENSHOT = "/tmp/luna-web.png";
const SCREENSHOT_IMAGES = "/tmp/luna-web-images.png";

let lp: TestPlatform | undefined;
let front: Server | undefined;
let browser: Browser | undefined;
let pageUrl = "";
let skipReason: string | undefined;

/** Newest modification time under a directory. */
function newest(dir: string): number {
  return Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) =>
    e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs));
}

/** Builds the page (vite build) unless dist/ is newer than every source. */
async function buildIfNeeded(): Promise<void> {
  const built = existsSync(join(distDir, "index.html")) ? statSync(join(distDir, "index.html")).mtimeMs : 0;
  const sources = Math.max(newest(join(webDir, "src")), statSync(join(webDir, "index.html")).mtimeMs, statSync(join(webDir, "vite.config.ts")).mtimeMs);
  if (built > sources) return;
  const { build } = await import("vite");
  await build({ configFile: join(webDir, "vite.config.ts"), logLevel: "warn" });
}

/**
 * Where the page is served. When the all-in-one process serves the web client itself, the page comes from it;
 * until then a front server here serves dist/ and passes everything else (the API, streams included) through.
 */
async function servePage(apiUrl: string): Promise<string> {
  const probe = await fetch(`${apiUrl}/`, { headers: { accept: "text/html" } });
  if (probe.ok && (await probe.text()).includes('id="app"')) return apiUrl;
  const api = new URL(apiUrl);
  const page = serveWebClient(distDir);
  front = createServer((req, res) => {
    if (page(req, res)) return;
    const upstream = request({ host: api.hostname, port: api.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => front!.listen(0, "127.0.0.1", r));
  const addr = front.address();
  return `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
}

async function simFaults(body: object): Promise<void> {
  await fetch(`${lp!.platform.simulators.vllmUrl}/_sim/faults`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

beforeAll(async () => {
  const found = ensureChromium((line) => process.stderr.write(`[web browser test] ${line}\n`));
  if ("skip" in found) {
    skipReason = found.skip;
    process.stderr.write(`[web browser test] skipped: ${skipReason}\n`);
    return;
  }
  await buildIfNeeded();
  lp = await startTestPlatform();
  pageUrl = await servePage(lp.url);
  browser = await chromium.launch({ executablePath: found.path, args: CHROMIUM_ARGS });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => (front ? front.close(r) : r(undefined)));
  await lp?.stop();
});

describe("web client in Chromium", () => {
  it("signs up with an invite, chats with a streamed reply, stops one, and generates an image", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    const invite = lp!.devInvites()[0];
    expect(invite, "the dev bootstrap writes invite codes").toBeTruthy();
    const page: Page = await browser!.newPage({ viewport: { width: 1100, height: 760 }, colorScheme: "dark" });
    const consoleErrors: string[] = [];
    page.on("pageerror", (err) => consoleErrors.push(err.message));

    // Sign up with the invite.
    await page.goto(pageUrl);
    await page.getByRole("button", { name: "I have an invite — sign up" }).click();
    await page.locator('input[name="invite"]').fill(invite!);
    await page.locator('input[name="name"]').fill("Bea");
    await page.locator('input[name="email"]').fill("bea@luna.test");
    await page.locator('input[name="password"]').fill("a-long-and-unusual-passphrase-9");
    await page.getByRole("button", { name: "Create account" }).click();
    await expect.poll(() => page.locator(".who").textContent()).toBe("Bea");
    if (hosts("billing")) await expect.poll(() => page.locator("#balance").textContent(), { timeout: 20_000 }).toBe("1,000 credits");

    // The model switcher lists the catalog's text models.
    const options = await page.locator("#model option").allTextContents();
    expect(options.length).toBeGreaterThanOrEqual(2);
    await page.locator("#model").selectOption("qwen2.5-7b-instruct");

    if (hosts("chat-router")) {
      await page.locator("#chat-input").fill("Hello, Luna!");
      await page.keyboard.press("Enter");
      await expect.poll(() => page.locator(".msg.assistant .meta").first().textContent(), { timeout: 20_000 }).toMatch(/\d+ tokens? · \d+ credits?/);
      expect((await page.locator(".msg.assistant .text").first().textContent())!.length).toBeGreaterThan(0);

      // A reply that keeps going: its text shows while it streams, and Stop ends it.
      await simFaults({ hangRate: 1, hangAfterTokens: 4 });
      try {
        await page.locator("#chat-input").fill("Tell me a story that never ends");
        await page.locator("#send").click();
        const streaming = page.locator(".msg.assistant.streaming .text");
        await expect.poll(async () => ((await streaming.textContent()) ?? "").length, { timeout: 20_000 }).toBeGreaterThan(0);
        expect(await page.locator("#stop").isVisible()).toBe(true);
        await page.locator("#stop").click();
        await expect.poll(() => page.locator(".msg.assistant").last().getAttribute("class")).toContain("stopped");
        expect(await page.locator("#stop").isVisible()).toBe(false);
      } finally {
        await simFaults({ hangRate: 0 });
      }
    }
    await page.screenshot({ path: SCREENSHOT });

    if (hosts("image-job")) {
      await page.locator("#tab-images").click();
      await page.locator("#workflow").selectOption("flux-schnell");
      await page.locator("#count").selectOption("1");
      await page.locator("#image-prompt").fill("a lighthouse in a storm, oil painting");
      await page.locator("#generate").click();
      await expect.poll(() => page.locator("#progress").getAttribute("data-status"), { timeout: 60_000 }).toBe("succeeded");
      expect(await page.locator("#job-status").textContent()).toMatch(/^Done — 1 image, \d+ credits?$/);
      const tile = page.locator("#gallery img").first();
      await expect.poll(() => tile.evaluate((el) => {
        const img = el as unknown as { complete: boolean; naturalWidth: number }; // an <img> (no DOM types here)
        return img.complete && img.naturalWidth;
      }), { timeout: 20_000 }).toBeGreaterThan(0);
      if (hosts("billing")) await expect.poll(() => page.locator("#balance").textContent()).not.toBe("1,000 credits");
      await page.screenshot({ path: SCREENSHOT_IMAGES });
    }

    // Signing out returns to the sign-in form; the page never threw.
    await page.locator("#sign-out").click();
    await expect.poll(() => page.getByRole("button", { name: "Sign in" }).isVisible()).toBe(true);
    expect(consoleErrors).toEqual([]);
  }, 180_000);

  it("a model that scaled to zero: selectable, the reply says it is warming up (about N s), then streams", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    if (!hosts("chat-router")) return ctx.skip("the all-in-one process does not host chat-router yet");
    // An operator marks a model whose simulator is still loading as scale-to-zero: it is STANDBY.
    const sleepy = await startVllmSim({ models: ["sim-model:8192"], coldStartMs: 60_000 });
    const page: Page = await browser!.newPage({ viewport: { width: 1100, height: 760 }, colorScheme: "dark" });
    try {
      const signIn = await fetch(`${lp!.url}/luna.auth.v1.AuthService/SignIn`, { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }) });
      const adminToken = ((await signIn.json()) as { tokens: { accessToken: string } }).tokens.accessToken;
      const upsert = await fetch(`${lp!.url}/luna.models.v1.ModelAdminService/UpsertModel`, {
        method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
        body: JSON.stringify({ model: { id: "sleepy-1b", displayName: "Sleepy 1B", kind: "MODEL_KIND_TEXT", contextWindow: 8192, maxOutputTokens: 256,
          sortOrder: -1, prices: { inputPer1kTokens: "10", outputPer1kTokens: "10" }, upstream: { baseUrls: [sleepy.url], servedModelName: "sim-model" },
          scaleToZero: true, coldStartSeconds: 30 } }),
      });
      expect(upsert.status, await upsert.clone().text()).toBe(200);
      await expect.poll(async () => {
        const r = await fetch(`${lp!.url}/luna.models.v1.ModelService/GetModel`, { method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ modelId: "sleepy-1b" }) });
        return ((await r.json()) as { model?: { status?: string } }).model?.status;
      }, { timeout: 20_000 }).toBe("MODEL_STATUS_STANDBY");

      await page.goto(pageUrl);
      await page.locator('input[name="email"]').fill("bea@luna.test");
      await page.locator('input[name="password"]').fill("a-long-and-unusual-passphrase-9");
      await page.getByRole("button", { name: "Sign in" }).click();
      await expect.poll(() => page.locator(".who").textContent()).toBe("Bea");
      await expect.poll(() => page.locator("#model option[value='sleepy-1b']").textContent()).toBe("Sleepy 1B (sleeping)");
      expect(await page.locator("#model option[value='sleepy-1b']").isDisabled()).toBe(false);
      await page.locator("#model").selectOption("sleepy-1b");
      await page.locator("#chat-input").fill("Are you awake?");
      await page.keyboard.press("Enter");
      const meta = page.locator(".msg.assistant.warming .meta");
      await expect.poll(() => meta.textContent(), { timeout: 20_000 }).toMatch(/^warming up sleepy-1b \(about (2\d|30) s\)$/);
      sleepy.coldStart(0); // the first replica turns healthy
      await expect.poll(() => page.locator(".msg.assistant .meta").last().textContent(), { timeout: 20_000 }).toMatch(/\d+ tokens? · \d+ credits?/);
      expect((await page.locator(".msg.assistant .text").last().textContent())!.length).toBeGreaterThan(0);
      expect(await page.locator(".msg.assistant.warming").count()).toBe(0);
    } finally {
      await page.close();
      await sleepy.close();
    }
  }, 120_000);
});
