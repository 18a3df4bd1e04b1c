// Issue 22: the web client's API keys (Usage page) in a real browser (Debian's Chromium via playwright-core) against a
// real all-in-one Luna: create a key (shown once), use it on /v1/models, see it listed, revoke it (refused within
// seconds, gone from the list). Skipped where no Chromium is available, like the other browser test.
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestPlatform, type TestPlatform } from "../../cli/test/platform.js";
import { CHROMIUM_ARGS, ensureChromium } from "./chromium.js";

const webDir = resolve(import.meta.dirname, "..");
const PASSWORD = "a-long-and-unusual-passphrase-11";

let lp: TestPlatform | undefined;
let browser: Browser | undefined;
let skipReason: string | undefined;

beforeAll(async () => {
  const found = ensureChromium((line) => process.stderr.write(`[web keys test] ${line}\n`));
  if ("skip" in found) {
    skipReason = found.skip;
    return;
  }
  // The page must include the keys component: build unless dist/ is newer than it.
  const built = join(webDir, "dist", "index.html");
  if (!existsSync(built) || statSync(built).mtimeMs < statSync(join(webDir, "src/app/keys-view.ts")).mtimeMs) {
    const { build } = await import("vite");
    await build({ configFile: join(webDir, "vite.config.ts"), logLevel: "warn" });
  }
  lp = await startTestPlatform();
  browser = await chromium.launch({ executablePath: found.path, args: CHROMIUM_ARGS });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  await lp?.stop();
});

async function models(key: string): Promise<number> {
  return (await fetch(`${lp!.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;
}

describe("web client: API keys", () => {
  it("creates a key shown once, lists it, and revokes it", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    // An account, signed up over the API (the sign-up form is the other browser test's business).
    const signUp = await fetch(`${lp!.url}/luna.auth.v1.AuthService/SignUp`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "kay@luna.test", password: PASSWORD, inviteCode: lp!.devInvites()[0], displayName: "Kay" }) });
    expect(signUp.status).toBe(200);

    const page = await (await browser!.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const errors: string[] = [];
    page.on("pageerror", (err) => errors.push(err.message));
    await page.goto(lp!.url);
    await page.locator('input[name="email"]').fill("kay@luna.test");
    await page.locator('input[name="password"]').fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator("#tab-account").click();
    await expect.poll(() => page.locator("#api-keys-status").textContent()).toBe("No API keys yet.");

    await page.locator("#api-key-name").fill("notebook");
    await page.locator("#api-key-expiry").selectOption("30");
    await page.locator("#api-key-create").click();
    await expect.poll(() => page.locator("#new-key-value").textContent()).toMatch(/^luna_sk_[0-9A-Za-z]{46}$/);
    const key = (await page.locator("#new-key-value").textContent())!;
    expect(await models(key)).toBe(200);
    const row = page.locator("#api-keys tr");
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.first().textContent()).toContain(`notebook${key.slice(0, 12)}…active`);

    page.once("dialog", (d) => void d.accept());
    await row.first().getByRole("button", { name: "Revoke" }).click();
    await expect.poll(() => page.locator("#api-keys-status").textContent()).toBe("No API keys yet.");
    await expect.poll(() => models(key), { timeout: 5000 }).toBe(401);
    expect(errors).toEqual([]);
  });
});
