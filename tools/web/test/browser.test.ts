// The web client in a real browser (Debian's Chromium driven by playwright-core) against a real all-in-one Luna with
// the simulators, at 1280×800 and 390×844: sign up, conversations (sidebar, URL, reload, back/forward, rename,
// delete), markdown replies (the vLLM simulator's reply scripts), copy, regenerate with sibling arrows, edit and resend
// with version arrows, resume after a reload, stop, the model picker, images with their price, usage, sign-out in
// another tab, sign out everywhere, Luna unreachable and back (the retrying banner), the phone layout. Any console
// error other than an expected HTTP error response fails a test.
import { existsSync, readdirSync, statSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startVllmSim } from "@luna/sim-vllm";
import { ADMIN_EMAIL, ADMIN_PASSWORD, hosts, startTestPlatform, type TestPlatform } from "../../cli/test/platform.js";
import { serveWebClient } from "../src/server.js";
import { CHROMIUM_ARGS, ensureChromium } from "./chromium.js";

const webDir = resolve(import.meta.dirname, "..");
const distDir = join(webDir, "dist");
/**
 * Screenshots: the README shows docs/web-client*.png. `LUNA_UPDATE_SCREENSHOTS=1` writes them there (commit them
 * when the page changes); otherwise they go to the temp dir, so a test run leaves the work tree as it was.
 */
const SHOTS_DIR = process.env.LUNA_UPDATE_SCREENSHOTS ? resolve(webDir, "../../docs") : tmpdir();
const SCREENSHOT = join(SHOTS_DIR, "web-client.png");
const SCREENSHOT_PHONE = join(SHOTS_DIR, "web-client-phone.png");
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const PASSWORD = "a-long-and-unusual-passphrase-9";

/** A reply the simulator sends as is: a heading, lists, a table, a link, code, and raw HTML that must stay text. */
const MARKDOWN = [
  "## Three steps", "", "1. Install", "2. Configure", "", "- alpha", "- beta", "",
  "| Model | Price |", "|---|---|", "| qwen | 10 |", "| llama | 10 |", "",
  "See [the docs](https://example.com/docs). Inline `code` too.", "",
  "<img src=x onerror=\"window.__pwned=1\"> <script>window.__pwned=2</script>", "",
  "```ts", "const answer: number = 42; // the answer", "```", "",
].join("\n");
const CODE = "const answer: number = 42; // the answer";
/** A long reply for the resume test (streamed slowly, so a reload lands in the middle). */
const LONG = Array.from({ length: 30 }, (_, i) => `word${i}`).join(" ");

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

async function simReplies(replies: { match: string; text: string }[]): Promise<void> {
  const res = await fetch(`${lp!.platform.simulators.vllmUrl}/_sim/replies`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ replies }) });
  expect(res.status).toBe(200);
}

/**
 * Console errors and uncaught exceptions of a page. Chromium logs every HTTP error response as "Failed to load
 * resource"; those are expected where a test provokes them (4xx), everything else counts.
 */
function watchConsole(page: Page): string[] {
  const errors: string[] = [];
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    if (/^Failed to load resource: the server responded with a status of 4\d\d/.test(msg.text())) return;
    errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

async function signIn(page: Page, email: string): Promise<void> {
  await page.goto(pageUrl);
  await page.locator('input[name="email"]').fill(email);
  await page.locator('input[name="password"]').fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect.poll(() => page.locator("#account-menu").isVisible()).toBe(true);
}

/** JSON Connect call to the platform (outside the browser). */
async function api<T>(path: string, body: object, token?: string): Promise<T> {
  const res = await fetch(`${lp!.url}/${path}`, { method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as T;
}

/** A new account (an admin's one-use invite, signed up through the API) with its sign-up credits; returns an access token. */
async function newUser(email: string): Promise<string> {
  const admin = await api<{ tokens: { accessToken: string } }>("luna.auth.v1.AuthService/SignIn", { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  const { invites } = await api<{ invites: { code: string }[] }>("luna.auth.v1.AuthAdminService/CreateInvites", { count: 1, usesPerCode: 1 },
    admin.tokens.accessToken);
  const res = await api<{ tokens: { accessToken: string } }>("luna.auth.v1.AuthService/SignUp",
    { email, password: PASSWORD, inviteCode: invites[0]!.code, displayName: email.split("@")[0] });
  // Billing grants the sign-up credits on the user.created event, a moment later.
  await expect.poll(async () => (await api<{ available?: string }>("luna.billing.v1.BillingService/GetBalance", {}, res.tokens.accessToken)).available ?? "0",
    { timeout: 20_000 }).not.toBe("0");
  return res.tokens.accessToken;
}

/** SendMessage through the API (Connect's enveloped JSON: flags byte, big-endian length, message), read to its end. */
async function sendThroughApi(token: string, conversationId: string, text: string): Promise<void> {
  const json = Buffer.from(JSON.stringify({ conversationId, text, clientMessageId: `api-${Date.now()}`, maxOutputTokens: 16 }));
  const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), json]);
  envelope.writeUInt32BE(json.length, 1);
  const res = await fetch(`${lp!.url}/luna.chat.v1.ChatService/SendMessage`, { method: "POST",
    headers: { "content-type": "application/connect+json", authorization: `Bearer ${token}` }, body: envelope });
  expect(res.status).toBe(200);
  expect(Buffer.from(await res.arrayBuffer()).toString()).toContain('"finished"');
}

const lastReply = (page: Page) => page.locator(".msg.assistant").last();
/** Waits for the last reply to end with its bill ("N tokens · M credits"). */
async function replyDone(page: Page, timeout = 20_000): Promise<string> {
  await expect.poll(() => lastReply(page).locator(".meta").textContent(), { timeout }).toMatch(/\d+ tokens? · \d+ credits?/);
  return (await lastReply(page).locator(".meta").textContent())!;
}
/** The last reply's rendered text (marked ends blocks with a newline). */
const replyText = async (page: Page) => ((await lastReply(page).locator(".md").textContent()) ?? "").trim();
const conversationIdOf = (page: Page) => /\/c\/([\w-]+)$/.exec(new URL(page.url()).pathname)?.[1];

beforeAll(async () => {
  const found = ensureChromium((line) => process.stderr.write(`[web browser test] ${line}\n`));
  if ("skip" in found) {
    skipReason = found.skip;
    process.stderr.write(`[web browser test] skipped: ${skipReason}\n`);
    return;
  }
  await buildIfNeeded();
  // Both tests together send more chat requests in a minute than a user's default rate limit allows.
  lp = await startTestPlatform({ BILLING_RATE_LIMITS: JSON.stringify({ roles: { user: { rates: { chat: { limit: 120, per: "minute" } } } } }) });
  pageUrl = await servePage(lp.url);
  browser = await chromium.launch({ executablePath: found.path, args: CHROMIUM_ARGS });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => (front ? front.close(r) : r(undefined)));
  await lp?.stop();
});

describe("web client in Chromium", () => {
  it("desktop 1280×800: conversations, markdown, copy, regenerate, resume, stop, models, images, usage, sign-out", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    const invite = lp!.devInvites()[0];
    expect(invite, "the dev bootstrap writes invite codes").toBeTruthy();
    const context = await browser!.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: pageUrl });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await simReplies([{ match: "[markdown]", text: MARKDOWN }, { match: "[long]", text: LONG }]);

    // `/` is the page whatever the Accept header (curl sends */*).
    expect(await (await fetch(`${pageUrl}/`, { headers: { accept: "*/*" } })).text()).toContain('id="app"');

    // Sign up with the invite.
    await page.goto(pageUrl);
    await page.getByRole("button", { name: "I have an invite — sign up" }).click();
    await page.locator('input[name="invite"]').fill(invite!);
    await page.locator('input[name="name"]').fill("Bea");
    await page.locator('input[name="email"]').fill("bea@luna.test");
    await page.locator('input[name="password"]').fill(PASSWORD);
    await page.getByRole("button", { name: "Create account" }).click();
    await expect.poll(() => page.locator(".who").textContent()).toBe("Bea");
    await expect.poll(() => page.locator("#balance").textContent(), { timeout: 20_000 }).toBe("1,000 credits");

    // The model picker: name, price and context size.
    const options = await page.locator("#model option").allTextContents();
    expect(options.length).toBeGreaterThanOrEqual(2);
    for (const o of options) expect(o).toMatch(/^.+ · \d+ (credits\/1k tokens|in, \d+ out \/1k tokens) · \d+k? context/);
    await page.locator("#model").selectOption("qwen2.5-7b-instruct");
    expect(await page.locator("#model-info").textContent()).toMatch(/credits\/1k tokens · \d+k context/);

    // A new conversation with a system prompt.
    await page.evaluate("document.querySelector('#new-chat-settings').open = true"); // a <details>
    await page.locator("#system-prompt").fill("Answer briefly.");
    await page.locator("#chat-input").fill("Hello, Luna!");
    await page.keyboard.press("Enter");
    expect(await replyDone(page)).not.toContain("token limit");
    expect(await page.locator("#conversation-title").textContent()).toBe("Hello, Luna!"); // untitled: its first message
    const first = conversationIdOf(page);
    expect(first, page.url()).toBeTruthy();
    await expect.poll(() => page.locator("#conversation-list .conv").count()).toBe(1);
    expect(await page.locator("#new-chat-settings").isVisible()).toBe(false); // fixed once the conversation exists

    // A markdown reply: heading, lists, table, link to a new tab, highlighted code with a copy button; raw HTML
    // from the model stays text.
    await page.locator("#chat-input").fill("Show me [markdown]");
    await page.locator("#send").click();
    await replyDone(page);
    const md = lastReply(page).locator(".md");
    expect(await md.locator("h2").textContent()).toBe("Three steps");
    expect(await md.locator("ol > li").allTextContents()).toEqual(["Install", "Configure"]);
    expect(await md.locator("ul > li").allTextContents()).toEqual(["alpha", "beta"]);
    expect(await md.locator("table th").allTextContents()).toEqual(["Model", "Price"]);
    expect(await md.locator("table tbody tr").count()).toBe(2);
    expect(await md.locator("a").getAttribute("target")).toBe("_blank");
    expect(await md.locator("a").getAttribute("rel")).toContain("noopener");
    expect(await md.locator("p code").first().textContent()).toBe("code");
    expect(await md.locator(".code-block .code-bar").textContent()).toContain("ts");
    expect((await md.locator(".code-block pre code").textContent())?.trimEnd()).toBe(CODE);
    expect(await md.locator(".code-block pre code span.hljs-keyword").count()).toBeGreaterThan(0);
    expect(await md.locator("img, script").count()).toBe(0);
    expect(await md.textContent()).toContain("<img src=x");
    expect(await page.evaluate("window.__pwned")).toBeUndefined();
    await md.locator("[data-copy=code]").click();
    await expect.poll(() => page.evaluate("navigator.clipboard.readText()")).toBe(CODE);
    await lastReply(page).locator("[data-copy=reply]").click();
    await expect.poll(() => page.evaluate("navigator.clipboard.readText()")).toBe(MARKDOWN);
    await page.screenshot({ path: SCREENSHOT });

    // Regenerate: a second reply, the first one still reachable with the arrows.
    await simReplies([{ match: "[markdown]", text: "Second take." }, { match: "[long]", text: LONG }]);
    await lastReply(page).locator("[data-action=regenerate]").click();
    await replyDone(page);
    expect(await replyText(page)).toBe("Second take.");
    expect(await lastReply(page).locator(".sibling-count").textContent()).toBe("2 / 2");
    await lastReply(page).locator("[data-action=prev-sibling]").click();
    expect(await lastReply(page).locator(".sibling-count").textContent()).toBe("1 / 2");
    expect(await lastReply(page).locator(".md h2").textContent()).toBe("Three steps");

    // Reload: the same conversation, its history, the newest sibling shown.
    await page.reload();
    await expect.poll(() => replyText(page)).toBe("Second take.");
    expect(conversationIdOf(page)).toBe(first);
    expect(await page.locator(".msg.user").allTextContents()).toEqual(["Hello, Luna!", "Show me [markdown]"]);
    expect(await lastReply(page).locator(".sibling-count").textContent()).toBe("2 / 2");
    await expect.poll(() => page.locator("#conversation-list .conv.active").getAttribute("data-id")).toBe(first);

    // New chat keeps the old one in the list; back and forward move between them.
    await page.locator("#new-chat").click();
    expect(new URL(page.url()).pathname).toBe("/");
    expect(await page.locator(".msg").count()).toBe(0);
    await page.locator("#chat-input").fill("A second conversation");
    await page.keyboard.press("Enter");
    await replyDone(page);
    const second = conversationIdOf(page);
    expect(second).toBeTruthy();
    expect(second).not.toBe(first);
    await expect.poll(() => page.evaluate("[...document.querySelectorAll('#conversation-list .conv')].map((e) => e.dataset.id)"))
      .toEqual([second, first]); // newest activity first
    await page.goBack();
    await expect.poll(() => conversationIdOf(page)).toBe(first);
    await expect.poll(() => replyText(page)).toBe("Second take.");
    await page.goForward();
    await expect.poll(() => page.locator(".msg.user").allTextContents()).toEqual(["A second conversation"]);

    // Rename (kept by the server), delete with a confirmation.
    const firstItem = page.locator(`#conversation-list .conv[data-id="${first}"]`);
    await firstItem.hover();
    await firstItem.locator("[data-action=rename]").click();
    await firstItem.locator(".rename-input").fill("Markdown tests");
    await page.keyboard.press("Enter");
    await expect.poll(() => firstItem.locator(".conv-link").textContent()).toBe("Markdown tests");
    const secondItem = page.locator(`#conversation-list .conv[data-id="${second}"]`);
    let confirmText = "";
    page.once("dialog", (d) => {
      confirmText = d.message();
      void d.accept();
    });
    await secondItem.hover();
    await secondItem.locator("[data-action=delete]").click();
    await expect.poll(() => secondItem.count()).toBe(0);
    expect(confirmText).toMatch(/^Delete ".+"\? This cannot be undone\.$/);
    expect(new URL(page.url()).pathname).toBe("/"); // the open conversation was deleted
    await page.reload();
    await expect.poll(() => page.locator("#conversation-list .conv-link").allTextContents()).toEqual(["Markdown tests"]);

    // Picking another model in a conversation starts a new one; the old one stays.
    await page.locator("#conversation-list .conv-link").first().click();
    await expect.poll(() => page.locator("#conversation-title").textContent()).toBe("Markdown tests");
    const other = await page.locator("#model option:not([value='qwen2.5-7b-instruct']):not([disabled])").first().getAttribute("value");
    await page.locator("#model").selectOption(other!);
    expect(new URL(page.url()).pathname).toBe("/");
    expect(await page.locator("#conversation-title").textContent()).toBe("New chat");
    expect(await page.locator("#model").inputValue()).toBe(other);
    expect(await page.locator("#conversation-list .conv").count()).toBe(1);

    // A reply limit set for a new conversation: the reply stops at 5 tokens and says so.
    await page.evaluate("document.querySelector('#new-chat-settings').open = true"); // a <details>
    await page.locator("#max-tokens").fill("5");
    await page.locator("#chat-input").fill("Hello again");
    await page.keyboard.press("Enter");
    expect(await replyDone(page)).toMatch(/^5 tokens · \d+ credits? · reached the token limit$/);
    await page.locator("#new-chat").click();
    await page.evaluate("document.querySelector('#new-chat-settings').open = true"); // a <details>
    await page.locator("#max-tokens").fill("");

    // A reply still streaming when the page reloads continues after the reload, and is billed once.
    await simFaults({ slowTokenMs: 150 });
    try {
      await page.locator("#chat-input").fill("Something [long]");
      await page.keyboard.press("Enter");
      await expect.poll(async () => ((await replyText(page)) ?? "").length, { timeout: 20_000 }).toBeGreaterThan(0);
      const url = page.url();
      await page.reload();
      expect(page.url()).toBe(url);
      await expect.poll(() => page.locator(".msg.assistant.streaming").count(), { timeout: 10_000 }).toBe(1);
      await replyDone(page, 30_000);
      expect(await replyText(page)).toBe(LONG);
    } finally {
      await simFaults({ slowTokenMs: 0 });
    }
    const afterResume = await page.locator("#balance").textContent();
    await page.reload();
    await expect.poll(() => page.locator("#balance").textContent()).toBe(afterResume); // the balance was current

    // Stop a reply that keeps going.
    await simFaults({ hangRate: 1, hangAfterTokens: 4 });
    try {
      await page.locator("#chat-input").fill("Tell me a story that never ends");
      await page.locator("#send").click();
      await expect.poll(async () => ((await page.locator(".msg.assistant.streaming .text").textContent()) ?? "").length, { timeout: 20_000 })
        .toBeGreaterThan(0);
      expect(await page.locator("#stop").isVisible()).toBe(true);
      await page.locator("#stop").click();
      await expect.poll(() => lastReply(page).getAttribute("class")).toContain("stopped");
      expect(await page.locator("#stop").isVisible()).toBe(false);
    } finally {
      await simFaults({ hangRate: 0 });
    }

    // Images: every option, the price before submitting, progress, the gallery (caption, full size, download, delete).
    await page.locator("#tab-images").click();
    await page.locator("#workflow").selectOption("flux-schnell");
    expect(await page.locator("#steps").isDisabled()).toBe(true); // fixed steps
    expect(await page.locator("#negative-prompt").isDisabled()).toBe(true); // no negative prompt for this workflow
    await page.locator("#workflow").selectOption("sdxl");
    await page.locator("#count").selectOption("2");
    const two = await page.locator("#image-price").textContent();
    await page.locator("#count").selectOption("1");
    const price = await page.locator("#image-price").textContent();
    expect(price).toMatch(/^\d+ credits?$/);
    expect(Number(two!.replace(/\D/g, ""))).toBe(2 * Number(price!.replace(/\D/g, "")));
    await page.evaluate("document.querySelector('#image-options').open = true"); // a <details>
    const styles = await page.locator("#style option").count();
    if (styles > 1) await page.locator("#style").selectOption({ index: 1 });
    await page.locator("#steps").fill("20");
    await page.locator("#seed").fill("4242");
    await page.locator("#negative-prompt").fill("blurry");
    await page.locator("#image-prompt").fill("a lighthouse in a storm, oil painting");
    await page.locator("#generate").click();
    await expect.poll(() => page.locator("#progress").getAttribute("data-status"), { timeout: 60_000 }).toBe("succeeded");
    expect(await page.locator("#job-status").textContent()).toBe(`Done — 1 image, ${price}`);
    const shot = page.locator("#gallery .shot").first();
    await expect.poll(() => page.evaluate("(() => { const i = document.querySelector('#gallery img'); return i.complete && i.naturalWidth; })()") as Promise<number>,
      { timeout: 20_000 }).toBeGreaterThan(0);
    expect(await shot.locator(".caption").textContent()).toBe("a lighthouse in a storm, oil painting");
    expect(await shot.locator("[data-action=download]").getAttribute("download")).toMatch(/^luna-.+\.png$/);
    await shot.locator("[data-action=view]").click();
    await expect.poll(() => page.locator("#viewer").isVisible()).toBe(true);
    expect(await page.locator("#viewer p").textContent()).toContain("seed 4242"); // the job used the chosen seed
    await page.locator("#viewer-close").click();
    await expect.poll(() => page.locator("#viewer").isVisible()).toBe(false);
    const before = await page.locator("#gallery .shot").count();
    page.once("dialog", (d) => void d.accept());
    await shot.locator("[data-action=delete-image]").click();
    await expect.poll(() => page.locator("#gallery .shot").count()).toBe(before - 1);

    // Usage: the ledger, with the sign-up grant and the charges.
    await page.locator("#tab-account").click();
    await expect.poll(() => page.locator("#ledger tr.kind-grant").first().textContent()).toContain("+1,000");
    expect(await page.locator("#ledger tr.kind-charge").count()).toBeGreaterThan(0);

    // Signing out in another tab returns this one to the sign-in form.
    const other2 = await context.newPage();
    await other2.goto(pageUrl);
    await other2.locator("#sign-out").click();
    await expect.poll(() => page.getByRole("button", { name: "Sign in" }).isVisible()).toBe(true);
    await other2.close();
    await context.close();
    expect(errors).toEqual([]);
  }, 240_000);

  it("phone 390×844: nothing cut off, a one-line top bar, the drawer, the composer while a reply streams", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    const context = await browser!.newContext({ viewport: PHONE, colorScheme: "dark", isMobile: true, hasTouch: true });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await signIn(page, "bea@luna.test");
    // The console watch itself: an HTTP error response is expected noise, a console error is not.
    await page.evaluate("fetch('/assets/missing-file.js').then((r) => r.status)");
    await page.evaluate("console.error('deliberate')");
    await expect.poll(() => errors).toEqual(["console: deliberate"]);
    errors.length = 0;

    // The top bar is one line, inside the screen.
    const bar = (await page.locator("header.topbar").boundingBox())!;
    expect(bar.height).toBeLessThan(60);
    const boxes = (await page.evaluate("[...document.querySelectorAll('header.topbar > *')].filter((e) => e.offsetParent !== null).map((e) => e.getBoundingClientRect().toJSON())")) as { right: number; top: number }[];
    for (const box of boxes) {
      expect(box.right).toBeLessThanOrEqual(PHONE.width);
      expect(box.top).toBeLessThan(bar.height);
    }
    // Many conversations: the sidebar shows a page, and more as it is scrolled to its end.
    const token: string = ((await (await fetch(`${lp!.url}/luna.auth.v1.AuthService/SignIn`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "bea@luna.test", password: PASSWORD }) })).json()) as { tokens: { accessToken: string } }).tokens.accessToken;
    for (let i = 0; i < 32; i++) {
      const res = await fetch(`${lp!.url}/luna.chat.v1.ChatService/CreateConversation`, { method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ modelId: "qwen2.5-7b-instruct", title: `Old chat ${i}` }) });
      expect(res.status).toBe(200);
    }
    // A long conversation (26 exchanges = 52 messages, more than one page of history), through the API.
    const api = (method: string, body: object) => fetch(`${lp!.url}/luna.chat.v1.ChatService/${method}`, { method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
    const long = ((await (await api("CreateConversation", { modelId: "qwen2.5-7b-instruct", title: "A long one" })).json()) as { conversation: { id: string } })
      .conversation.id;
    for (let i = 0; i < 26; i++) {
      // SendMessage streams: Connect's enveloped JSON (flags byte, big-endian length, message); the body ends with the reply.
      const json = Buffer.from(JSON.stringify({ conversationId: long, text: `question ${i}`, clientMessageId: `long-${i}`, maxOutputTokens: 3 }));
      const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), json]);
      envelope.writeUInt32BE(json.length, 1);
      const res = await fetch(`${lp!.url}/luna.chat.v1.ChatService/SendMessage`, { method: "POST",
        headers: { "content-type": "application/connect+json", authorization: `Bearer ${token}` }, body: envelope });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).toString()).not.toContain('"error"');
    }
    await page.goto(`${pageUrl}/c/${long}`);
    await expect.poll(() => page.locator(".msg").count()).toBe(50); // the newest page
    expect(await page.locator(".msg.user").first().textContent()).toBe("question 1");
    await page.evaluate("document.querySelector('#messages').scrollTop = 0");
    await expect.poll(() => page.locator(".msg").count()).toBe(52); // older ones on scroll up
    expect(await page.locator(".msg.user").first().textContent()).toBe("question 0");

    await page.goto(pageUrl);
    await expect.poll(() => page.locator("#conversation-list .conv").count()).toBe(30); // one page
    await page.locator("#toggle-sidebar").click();
    await page.evaluate("document.querySelector('#conversation-scroll').scrollTop = 1e6");
    await expect.poll(() => page.locator("#conversation-list .conv").count()).toBeGreaterThanOrEqual(34);
    await page.locator(".drawer-shade").click({ position: { x: PHONE.width - 20, y: PHONE.height / 2 } }); // beside the drawer: closes it

    // The sidebar is a drawer: hidden, then opened, and picking a conversation closes it.
    await expect.poll(() => page.locator("#sidebar").evaluate((el) => el.getBoundingClientRect().right)).toBeLessThanOrEqual(0);
    await page.locator("#toggle-sidebar").click();
    await expect.poll(() => page.locator("#sidebar").evaluate((el) => el.getBoundingClientRect().left)).toBe(0);
    await page.locator("#conversation-list .conv-link", { hasText: "Markdown tests" }).click(); // on the second page
    await expect.poll(() => page.locator("#sidebar").evaluate((el) => el.getBoundingClientRect().right)).toBeLessThanOrEqual(0);
    await expect.poll(() => page.locator(".msg").count()).toBeGreaterThan(0);

    // While a reply streams, Stop sits beside a composer that keeps its width.
    await simFaults({ hangRate: 1, hangAfterTokens: 4 });
    try {
      await page.locator("#chat-input").fill("Tell me a long story");
      await page.locator("#send").click();
      await expect.poll(() => page.locator("#stop").isVisible()).toBe(true);
      const input = (await page.locator("#chat-input").boundingBox())!;
      const stop = (await page.locator("#stop").boundingBox())!;
      expect(input.width).toBeGreaterThan(PHONE.width * 0.6);
      expect(stop.x + stop.width).toBeLessThanOrEqual(PHONE.width);
      await page.screenshot({ path: SCREENSHOT_PHONE });
      await page.locator("#stop").click();
      await expect.poll(() => page.locator("#stop").isVisible()).toBe(false);
    } finally {
      await simFaults({ hangRate: 0 });
    }

    // Offline: the reply says Luna cannot be reached (Chromium logs the failed request: expected here).
    await context.setOffline(true);
    await page.locator("#chat-input").fill("Are you there?");
    await page.locator("#send").click();
    await expect.poll(() => lastReply(page).locator(".meta").textContent()).toBe("Luna can't be reached — check your connection and try again.");
    // The page says it retries, on one line inside the screen, and recovers by itself once the network is back.
    await expect.poll(() => page.locator("#offline-banner").isVisible()).toBe(true);
    expect(await page.locator("#offline-banner").textContent()).toBe("Luna can't be reached — retrying…");
    const banner = (await page.locator("#offline-banner").boundingBox())!;
    expect(banner.x + banner.width).toBeLessThanOrEqual(PHONE.width);
    expect(banner.height).toBeLessThan(40);
    await context.setOffline(false);
    await expect.poll(() => page.locator("#offline-banner").isVisible(), { timeout: 20_000 }).toBe(false);
    // Reloaded from the server: the refused message was never stored, so it is gone with its error.
    await expect.poll(() => page.locator(".msg.user").last().textContent()).not.toBe("Are you there?");
    const offline = errors.filter((e) => e.includes("net::ERR_INTERNET_DISCONNECTED"));
    errors.splice(0, errors.length, ...errors.filter((e) => !offline.includes(e)));

    // Images: every control inside the screen and wide enough for its value (not "FLU" / "102").
    await page.locator("#tab-images").click();
    await expect.poll(() => page.locator("#workflow option").count()).toBeGreaterThan(0);
    const controls = (await page.evaluate(`[...document.querySelectorAll(".image-form select, .image-form button")].filter((e) => e.offsetParent !== null).map((e) => {
      const r = e.getBoundingClientRect();
      const text = e instanceof HTMLSelectElement ? e.selectedOptions[0]?.textContent ?? "" : e.textContent ?? "";
      const g = document.createElement("canvas").getContext("2d");
      g.font = getComputedStyle(e).font;
      return { id: e.id || e.textContent, left: r.left, right: r.right, width: r.width, needed: g.measureText(text).width };
    })`)) as { id: string; left: number; right: number; width: number; needed: number }[];
    expect(controls.length).toBeGreaterThanOrEqual(4);
    for (const c of controls) {
      expect(c.left, String(c.id)).toBeGreaterThanOrEqual(0);
      expect(c.right, String(c.id)).toBeLessThanOrEqual(PHONE.width);
      expect(c.width, `${String(c.id)} is too narrow for its text`).toBeGreaterThan(Math.min(c.needed + 20, PHONE.width - 40));
    }
    await context.close();
    expect(errors).toEqual([]);
  }, 120_000);

  it("desktop: edit the last message and resend, the versions with arrows", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    if (!hosts("chat-router")) return ctx.skip("the all-in-one process does not host chat-router yet");
    const email = "edith@luna.test";
    await newUser(email);
    const context = await browser!.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await simReplies([{ match: "[first]", text: "Reply to the first." }, { match: "[second]", text: "Reply to the second." },
      { match: "[third]", text: "Reply to the third." }]);
    await signIn(page, email);
    await page.locator("#model").selectOption("qwen2.5-7b-instruct");

    await page.locator("#chat-input").fill("Ask [first]");
    await page.keyboard.press("Enter");
    await replyDone(page);
    await page.locator("#chat-input").fill("Then [second]");
    await page.keyboard.press("Enter");
    await replyDone(page);
    expect(await replyText(page)).toBe("Reply to the second.");
    const conversationId = conversationIdOf(page)!;
    // Only the last message can be edited.
    await expect.poll(() => page.locator("[data-action=edit]").count()).toBe(1);
    expect(await page.locator(".msg.user").last().locator("xpath=following-sibling::*[1]").locator("[data-action=edit]").count()).toBe(1);

    // Edit, then Escape: nothing changes.
    await page.locator("[data-action=edit]").click();
    expect(await page.locator("#edit-input").inputValue()).toBe("Then [second]");
    await page.keyboard.press("Escape");
    expect(await page.locator(".msg.user").allTextContents()).toEqual(["Ask [first]", "Then [second]"]);

    // Edit and resend: the new text, its own reply, and the arrows to the earlier version.
    const balanceBefore = await page.locator("#balance").textContent();
    await page.locator("[data-action=edit]").click();
    await page.locator("#edit-input").fill("Instead [third]");
    await page.keyboard.press("Enter");
    await replyDone(page);
    expect(await replyText(page)).toBe("Reply to the third.");
    expect(await page.locator(".msg.user").allTextContents()).toEqual(["Ask [first]", "Instead [third]"]);
    expect(await page.locator(".version-count").textContent()).toBe("2 / 2");
    await expect.poll(() => page.locator("#balance").textContent()).not.toBe(balanceBefore); // the new reply was billed
    // The earlier version with its reply; neither can be edited or regenerated (the conversation went on from the new one).
    await page.locator("[data-action=prev-version]").click();
    expect(await page.locator(".msg.user").last().textContent()).toBe("Then [second]");
    expect(await replyText(page)).toBe("Reply to the second.");
    expect(await page.locator(".version-count").textContent()).toBe("1 / 2");
    expect(await page.locator("[data-action=edit]").count()).toBe(0);
    expect(await page.locator("[data-action=regenerate]").count()).toBe(0);
    await page.locator("[data-action=next-version]").click();
    expect(await replyText(page)).toBe("Reply to the third.");

    // The versions come from the server: after a reload they are all there.
    await page.reload();
    await expect.poll(() => replyText(page)).toBe("Reply to the third.");
    expect(conversationIdOf(page)).toBe(conversationId);
    expect(await page.locator(".msg.user").allTextContents()).toEqual(["Ask [first]", "Instead [third]"]);
    expect(await page.locator(".version-count").textContent()).toBe("2 / 2");
    // A later message: the arrows stay on the edited one; showing its older version hides what followed the newer.
    await page.locator("#chat-input").fill("More [first]");
    await page.keyboard.press("Enter");
    await replyDone(page);
    await page.locator("[data-action=prev-version]").click();
    expect(await page.locator(".msg.user:visible").allTextContents()).toEqual(["Ask [first]", "Then [second]"]);
    await page.locator("[data-action=next-version]").click();
    expect(await page.locator(".msg.user:visible").allTextContents()).toEqual(["Ask [first]", "Instead [third]", "More [first]"]);
    await context.close();
    expect(errors).toEqual([]);
  }, 120_000);

  it("desktop: Luna unreachable, the retrying banner, and back by itself", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    if (!hosts("chat-router")) return ctx.skip("the all-in-one process does not host chat-router yet");
    const email = "otto@luna.test";
    const token = await newUser(email);
    const { conversation } = await api<{ conversation: { id: string } }>("luna.chat.v1.ChatService/CreateConversation",
      { modelId: "qwen2.5-7b-instruct", title: "Before the outage" }, token);
    const conversationId = conversation.id;
    await simReplies([{ match: "[first]", text: "Reply to the first." }]);
    await sendThroughApi(token, conversationId, "Hello [first]");
    const context = await browser!.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await signIn(page, email);
    await page.locator(`#conversation-list .conv[data-id="${conversationId}"] .conv-link`).click();
    await expect.poll(() => replyText(page)).toBe("Reply to the first.");

    // Luna unreachable: requests fail (network error, then the gateway's own 503); the page says it is retrying and,
    // once Luna answers again, reloads what it shows — here a message sent meanwhile from another device.
    let failed = 0;
    const unreachable = (url: URL) => url.pathname.startsWith("/luna.");
    await page.route(unreachable, (route) => (failed++, route.abort("failed")));
    await page.locator("#new-chat").click();
    await page.locator(`#conversation-list .conv[data-id="${conversationId}"] .conv-link`).click();
    await expect.poll(() => page.locator("#offline-banner").isVisible()).toBe(true);
    expect(await page.locator("#offline-banner").textContent()).toBe("Luna can't be reached — retrying…");
    await expect.poll(() => page.locator("#messages").textContent()).toContain("Luna can't be reached");
    const firstFailures = failed;
    await expect.poll(() => failed, { timeout: 10_000 }).toBeGreaterThanOrEqual(firstFailures + 2); // it keeps retrying
    await sendThroughApi(token, conversationId, "Meanwhile [first]");
    const { available } = await api<{ available: string }>("luna.billing.v1.BillingService/GetBalance", {}, token);
    await page.unroute(unreachable);
    let gateway503 = 0;
    await page.route(unreachable, (route) => (gateway503++, route.fulfill({ status: 503, contentType: "text/plain", body: "no healthy upstream" })));
    await expect.poll(() => gateway503, { timeout: 20_000 }).toBeGreaterThan(0);
    expect(await page.locator("#offline-banner").isVisible()).toBe(true);
    await page.unroute(unreachable);
    await expect.poll(() => page.locator("#offline-banner").isVisible(), { timeout: 30_000 }).toBe(false);
    await expect.poll(() => page.locator(".msg.user").last().textContent()).toBe("Meanwhile [first]");
    expect(await replyText(page)).toBe("Reply to the first.");
    await expect.poll(() => page.locator("#balance").textContent()).toBe(`${Number(available).toLocaleString("en-US")} credits`);
    // Chromium logs the aborted requests and the 503s: expected here, and only these.
    const expected = (e: string) => /net::ERR_FAILED|status of 503/.test(e);
    expect(errors.filter(expected).length).toBeGreaterThan(0);
    errors.splice(0, errors.length, ...errors.filter((e) => !expected(e)));
    await context.close();
    expect(errors).toEqual([]);
  }, 120_000);

  it("desktop: sign out everywhere (account menu) — this tab, another tab and another device sign in again", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    const email = "sally@luna.test";
    await newUser(email);
    const context = await browser!.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await signIn(page, email);
    const tab = await context.newPage();
    const tabErrors = watchConsole(tab);
    await tab.goto(pageUrl);
    await expect.poll(() => tab.locator("#sign-out").isVisible()).toBe(true);
    const device = await browser!.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    const phone = await device.newPage();
    const deviceErrors = watchConsole(phone);
    await signIn(phone, email);
    await page.locator("#account-menu summary").click();
    expect(await page.locator("#account-menu .menu-email").textContent()).toBe(email);
    let question = "";
    page.once("dialog", (d) => {
      question = d.message();
      void d.accept();
    });
    await page.locator("#sign-out-everywhere").click();
    expect(question).toMatch(/^Sign out everywhere\?/);
    await expect.poll(() => page.getByRole("button", { name: "Sign in" }).isVisible()).toBe(true);
    await expect.poll(() => tab.getByRole("button", { name: "Sign in" }).isVisible()).toBe(true);
    // The other device learns it at its next call (its tokens are refused within the revocation bound).
    await expect.poll(async () => {
      if (await phone.locator("#tab-account").isVisible()) await phone.locator("#tab-account").click().catch(() => undefined);
      return phone.getByRole("button", { name: "Sign in" }).isVisible();
    }, { timeout: 20_000, interval: 1000 }).toBe(true);
    expect(await phone.locator("body").textContent()).not.toContain("bearer");
    // Signing in again works.
    await signIn(page, email);
    await device.close();
    await context.close();
    expect([...errors, ...tabErrors, ...deviceErrors]).toEqual([]);
  }, 120_000);

  it("phone 390×844: edit and resend, the account menu", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    if (!hosts("chat-router")) return ctx.skip("the all-in-one process does not host chat-router yet");
    const email = "phoebe@luna.test";
    await newUser(email);
    const context = await browser!.newContext({ viewport: PHONE, colorScheme: "dark", isMobile: true, hasTouch: true });
    const page = await context.newPage();
    const errors = watchConsole(page);
    await simReplies([{ match: "[first]", text: "Reply to the first." }, { match: "[second]", text: "Reply to the second." }]);
    await signIn(page, email);
    await page.locator("#model").selectOption("qwen2.5-7b-instruct");
    await page.locator("#chat-input").fill("Ask [first]");
    await page.locator("#send").click();
    await replyDone(page);
    await page.locator("[data-action=edit]").click();
    // The editor fits the screen and is wide enough to write in.
    const editor = (await page.locator("#edit-input").boundingBox())!;
    expect(editor.x).toBeGreaterThanOrEqual(0);
    expect(editor.x + editor.width).toBeLessThanOrEqual(PHONE.width);
    expect(editor.width).toBeGreaterThan(PHONE.width * 0.6);
    for (const b of await page.locator(".editor button").all()) {
      const box = (await b.boundingBox())!;
      expect(box.x + box.width).toBeLessThanOrEqual(PHONE.width);
    }
    await page.locator("#edit-input").fill("Rather [second]");
    await page.locator("[data-action=save-edit]").click();
    await replyDone(page);
    expect(await replyText(page)).toBe("Reply to the second.");
    expect(await page.locator(".msg.user").allTextContents()).toEqual(["Rather [second]"]);
    expect(await page.locator(".version-count").textContent()).toBe("2 / 2");
    const arrows = (await page.locator(".user-tools").boundingBox())!;
    expect(arrows.x + arrows.width).toBeLessThanOrEqual(PHONE.width);
    await page.locator("[data-action=prev-version]").click();
    expect(await replyText(page)).toBe("Reply to the first.");

    // The account menu: the top bar stays on one line with it, and it opens inside the screen.
    const bar = (await page.locator("header.topbar").boundingBox())!;
    expect(bar.height).toBeLessThan(60);
    const summary = (await page.locator("#account-menu summary").boundingBox())!;
    expect(summary.x + summary.width).toBeLessThanOrEqual(PHONE.width);
    await page.locator("#account-menu summary").click();
    const menu = (await page.locator("#account-menu .menu").boundingBox())!;
    expect(menu.x).toBeGreaterThanOrEqual(0);
    expect(menu.x + menu.width).toBeLessThanOrEqual(PHONE.width);
    expect(await page.locator("#sign-out-everywhere").isVisible()).toBe(true);
    await page.locator("#messages").click({ position: { x: 10, y: 10 } }); // a click elsewhere closes it
    expect(await page.locator("#account-menu .menu").isVisible()).toBe(false);
    // No room for Sign out in the top bar: it is in the menu.
    expect(await page.locator("#sign-out").isVisible()).toBe(false);
    await page.locator("#account-menu summary").click();
    await page.locator("[data-action=menu-sign-out]").click();
    await expect.poll(() => page.getByRole("button", { name: "Sign in" }).isVisible()).toBe(true);
    await context.close();
    expect(errors).toEqual([]);
  }, 120_000);

  it("a model that scaled to zero: selectable, the reply says it is warming up (about N s), then streams", async (ctx) => {
    if (skipReason) return ctx.skip(skipReason);
    if (!hosts("chat-router")) return ctx.skip("the all-in-one process does not host chat-router yet");
    // An operator marks a model whose simulator is still loading as scale-to-zero: it is STANDBY.
    const sleepy = await startVllmSim({ models: ["sim-model:8192"], coldStartMs: 60_000 });
    const page: Page = await browser!.newPage({ viewport: DESKTOP, colorScheme: "dark" });
    const errors = watchConsole(page);
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
      await expect.poll(() => page.locator("#model option[value='sleepy-1b']").textContent()).toMatch(/^Sleepy 1B · .* \(sleeping\)$/);
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
      expect(errors).toEqual([]);
    } finally {
      await page.close();
      await sleepy.close();
    }
  }, 120_000);
});
