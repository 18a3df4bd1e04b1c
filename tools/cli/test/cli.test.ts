// The `luna` CLI against a real all-in-one Luna (every service hosted in this process, simulators for inference):
// the commands a person runs, in order, with the files and exit codes they leave behind. Features of services the
// all-in-one process does not host yet are skipped until it does.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_EMAIL, ADMIN_PASSWORD, hosts, startTestPlatform, type TestPlatform } from "./platform.js";
import { luna, startCli, type CliRun } from "./run-cli.js";
import { startVllmSim } from "@luna/sim-vllm";
import OpenAI from "openai";

const USER_EMAIL = "ann@luna.test";
const USER_PASSWORD = "a-long-and-unusual-passphrase-7";
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const INVITE_CODE = /^[0-9A-Z]{5}(-[0-9A-Z]{5}){3}$/;

let lp: TestPlatform;
const tmp = mkdtempSync(join(tmpdir(), "luna-cli-test-"));
const adminEnv = () => ({ LUNA_URL: lp.url, LUNA_CONFIG_DIR: join(tmp, "admin-config") });
const userEnv = () => ({ LUNA_URL: lp.url, LUNA_CONFIG_DIR: join(tmp, "user-config") });
const credentialsPath = () => join(tmp, "user-config", "credentials.json");
let invites: string[] = [];

/** Exactly one line on stderr, starting with "luna: ". */
function expectOneErrorLine(r: CliRun, code: number, pattern: RegExp): void {
  expect(r.code).toBe(code);
  const lines = r.stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^luna: /);
  expect(lines[0]).toMatch(pattern);
}

async function simFaults(body: object): Promise<void> {
  const res = await fetch(`${lp.platform.simulators.vllmUrl}/_sim/faults`, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify(body) });
  expect(res.status).toBe(200);
}

/** Replies that send a few tokens and then never end, until the client stops them. */
const hangAfterTokens = () => simFaults({ hangRate: 1, hangAfterTokens: 3 });
const noFaults = () => simFaults({ hangRate: 0 });

beforeAll(async () => {
  lp = await startTestPlatform();
}, 180_000);

afterAll(async () => {
  await lp?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("luna CLI against the all-in-one platform", () => {
  it("signs the admin in and creates invite codes", async () => {
    const login = await luna(["login", "--email", ADMIN_EMAIL, "--password-stdin"], adminEnv(), `${ADMIN_PASSWORD}\n`);
    expect(login).toMatchObject({ code: 0, stderr: "" });
    expect(login.stdout).toBe(`Signed in as ${ADMIN_EMAIL} (admin).\n`);

    const created = await luna(["admin", "invites", "create", "--count", "2", "--uses", "1", "--expires", "7d", "--note", "cli test"], adminEnv());
    expect(created.code).toBe(0);
    invites = created.stdout.trim().split("\n");
    expect(invites).toHaveLength(2);
    for (const code of invites) expect(code).toMatch(INVITE_CODE);
    expect(created.stderr).toMatch(/2 invite code\(s\), 1 use\(s\) each, expire /);

    const list = await luna(["admin", "invites", "list"], adminEnv());
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+CODE\s+STATE\s+USES LEFT/);
    expect(list.stdout.match(/active\s+1\/1 .* cli test/g)).toHaveLength(2);
  });

  it("signs up with an invite and keeps the session in a 0600 credentials file", async () => {
    const r = await luna(["signup", "--email", USER_EMAIL, "--invite", invites[0]!.toLowerCase(), "--name", "Ann", "--password-stdin"],
      userEnv(), `${USER_PASSWORD}\n`);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(`Welcome, Ann! Signed in as ${USER_EMAIL} (user).\n`);

    expect(statSync(credentialsPath()).mode & 0o777).toBe(0o600);
    expect(statSync(join(tmp, "user-config")).mode & 0o777).toBe(0o700);
    const stored = JSON.parse(readFileSync(credentialsPath(), "utf8")) as { sessions: Record<string, { email: string; refreshToken: string }> };
    expect(Object.keys(stored.sessions)).toEqual([lp.url]);
    expect(stored.sessions[lp.url]!.email).toBe(USER_EMAIL);
    expect(stored.sessions[lp.url]!.refreshToken).toMatch(/^luna_rt_/);
  });

  it("shows the signed-in account", async () => {
    const r = await luna(["me"], userEnv());
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Ann <${USER_EMAIL}>\n  id +\\S+\n  role +user\n`));
  });

  it("refreshes an expired access token on its own", async () => {
    const edit = (f: (s: { accessToken: string; accessTokenExpiresAt: number; refreshToken: string }) => void) => {
      const file = JSON.parse(readFileSync(credentialsPath(), "utf8"));
      f(file.sessions[lp.url]);
      writeFileSync(credentialsPath(), JSON.stringify(file), { mode: 0o600 });
      return file.sessions[lp.url];
    };
    // Known to be expired: refreshed before the call.
    const before = edit((s) => (s.accessTokenExpiresAt = Date.now() - 1000));
    expect((await luna(["me"], userEnv())).code).toBe(0);
    const afterProactive = edit(() => {});
    expect(afterProactive.refreshToken).not.toBe(before.refreshToken);
    expect(afterProactive.accessTokenExpiresAt).toBeGreaterThan(Date.now());

    // Rejected by the server although it looks valid: refreshed after the UNAUTHENTICATED answer, call retried.
    edit((s) => (s.accessToken = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"));
    const r = await luna(["me"], userEnv());
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(USER_EMAIL);
    const afterReactive = edit(() => {});
    expect(afterReactive.refreshToken).not.toBe(afterProactive.refreshToken);
    expect(statSync(credentialsPath()).mode & 0o777).toBe(0o600);
  });

  it.skipIf(!hosts("billing"))("starts with 1000 credits", async () => {
    // The sign-up grant arrives through the user.created event: give it a moment.
    let r: CliRun | undefined;
    for (let i = 0; i < 50; i++) {
      r = await luna(["balance"], userEnv());
      if (r.stdout.startsWith("1,000 credits available")) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(r).toMatchObject({ code: 0, stdout: "1,000 credits available\n" });
  });

  it("lists the models and workflows, signed in or not", async () => {
    const r = await luna(["models"], { LUNA_URL: lp.url, LUNA_CONFIG_DIR: join(tmp, "nobody") });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ID\s+KIND\s+STATUS\s+PRICE\s+NAME\n/);
    expect(r.stdout).toMatch(/llama-3\.1-8b-abliterated\s+text\s+/);
    expect(r.stdout).toMatch(/\nWORKFLOW\s+MODEL\s+STATUS\s+PRICE\s+SIZES\s+NAME\n/);
    expect(r.stdout).toMatch(/flux-schnell\s+flux1-schnell\s+\S+.*1024x1024/);
    const text = await luna(["models", "--kind", "text"], userEnv());
    expect(text.stdout).not.toContain("flux");
  });

  it.skipIf(!hosts("chat-router"))("ask streams the reply to stdout as it is written", async () => {
    const cli = startCli(["ask", "Tell me about the sea", "--model", "llama-3.1-8b-abliterated"], userEnv());
    cli.end();
    const r = await cli.done;
    expect(r.code).toBe(0);
    expect(r.stdout.trim().length).toBeGreaterThan(0);
    // Token by token, not one buffered write: the reply arrived as several writes before its final newline.
    expect(cli.stdoutWrites().filter((w) => w !== "\n").length).toBeGreaterThan(1);
    expect(r.stderr).toMatch(/^\[llama-3\.1-8b-abliterated · \d+ tokens?, \d+ credits?; [\d,]+ left\]\n$/);
  });

  it.skipIf(!hosts("chat-router"))("conversations: list, show, continue with ask, resume a reply being written, rename, delete", async () => {
    const list = await luna(["conversations"], userEnv());
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+LAST ACTIVITY\s+MODEL\s+MESSAGES\s+TITLE\n\S+\s+.*llama-3\.1-8b-abliterated\s+2\s+\S.*\n/); // untitled here: the preview of its last message
    const id = list.stdout.split("\n")[1]!.split(/\s+/)[0]!;

    // ask -c continues the most recent conversation (its model), --conversation a chosen one.
    const more = await luna(["ask", "-c", "And about rivers?"], userEnv());
    expect(more.code, more.stderr).toBe(0);
    expect(more.stderr).toMatch(/^\[llama-3\.1-8b-abliterated · /);
    expectOneErrorLine(await luna(["ask", "--conversation", id, "--model", "qwen2.5-7b-instruct", "x"], userEnv()), 2,
      /--model is fixed for a conversation/);
    const shown = await luna(["conversation", "show", id], userEnv());
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^.+\n  id ${id} · llama-3\\.1-8b-abliterated · 4 messages · `));
    expect(shown.stdout).toContain("\nyou> Tell me about the sea\n");
    expect(shown.stdout).toContain(`\nyou> And about rivers?\n\nllama-3.1-8b-abliterated> ${more.stdout.trimEnd()}`);
    // ask --edit replaces the last message of the conversation: a new version with its own reply; show gives the newest.
    expectOneErrorLine(await luna(["ask", "--edit", "x"], userEnv()), 2, /--edit needs the conversation/);
    const edited = await luna(["ask", "-c", "--edit", "And about lakes?"], userEnv());
    expect(edited.code, edited.stderr).toBe(0);
    expect(edited.stderr).toMatch(/^\[llama-3\.1-8b-abliterated · \d+ tokens?, /);
    const reshown = (await luna(["conversation", "show", id], userEnv())).stdout;
    expect(reshown).toContain(`\nyou> (edited, 2 versions) And about lakes?\n\nllama-3.1-8b-abliterated> ${edited.stdout.trimEnd()}`);
    expect(reshown).not.toContain("And about rivers?");

    // A reply still being written is followed to its end by another client.
    const slow = Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ");
    const replies = await fetch(`${lp.platform.simulators.vllmUrl}/_sim/replies`, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ replies: [{ match: "[slow]", text: slow }] }) });
    expect(replies.status).toBe(200);
    await simFaults({ slowTokenMs: 60 });
    try {
      const asking = startCli(["ask", "--conversation", id, "Something [slow]"], userEnv());
      asking.end();
      await asking.waitFor(/w\d/);
      const resumed = await luna(["conversation", "resume", id], userEnv());
      const asked = await asking.done;
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stdout).toBe(`${slow}\n`);
      expect(asked.stdout).toBe(`${slow}\n`);
      expect(resumed.stderr).toMatch(/^\[\d+ tokens, \d+ credits?\]\n$/);
    } finally {
      await simFaults({ slowTokenMs: 0 });
    }
    const done = await luna(["conversation", "resume", id], userEnv());
    expect(done).toMatchObject({ code: 0, stdout: `${slow}\n`, stderr: "[the last reply is not being written any more (complete)]\n" });

    expect(await luna(["conversation", "rename", id, "Seas and rivers"], userEnv())).toMatchObject({ code: 0, stdout: 'Renamed to "Seas and rivers".\n' });
    expect((await luna(["conversations"], userEnv())).stdout).toMatch(new RegExp(`${id}\\s+.*Seas and rivers\\n`));
    expect(await luna(["conversation", "delete", id], userEnv())).toMatchObject({ code: 0, stdout: "Conversation deleted.\n" });
    expectOneErrorLine(await luna(["conversation", "show", id], userEnv()), 1, /not found/);
    expect((await luna(["conversations"], userEnv())).stdout).not.toContain(id);
  });

  it.skipIf(!hosts("chat-router"))("chat at a terminal: /stop typed during a reply is not echoed into it, other lines are refused at once", async () => {
    await hangAfterTokens();
    try {
      const cli = startCli(["chat", "--model", "llama-3.1-8b-abliterated"], userEnv(), { tty: true });
      await cli.waitFor("you> ");
      cli.type("Tell me a story\r");
      const before = cli.stdout().length;
      await cli.waitFor(/Tell me a story\r?\n.*[a-z]/s);
      for (const ch of "/help\r") cli.type(ch); // typed key by key, as at a keyboard
      await cli.waitFor("(a reply is being written: /stop or Ctrl-C stops it; then type again)", "stderr");
      for (const ch of "/stop\r") cli.type(ch);
      await cli.waitFor(/\[stopped/, "stderr");
      const during = cli.stdout().slice(before);
      expect(during).not.toContain("/stop");
      expect(during).not.toContain("/help");
      cli.type("\u0004"); // Ctrl-D quits
      const r = await cli.done;
      expect(r.code).toBe(0);
      expect(r.stderr).not.toMatch(/Commands|\/model \[id\]/); // /help did not run after the reply either
    } finally {
      await noFaults();
    }
  });

  it.skipIf(!hosts("chat-router"))("Ctrl-C stops an ask reply and keeps what was written", async () => {
    await hangAfterTokens();
    try {
      const cli = startCli(["ask", "Count to a million"], userEnv());
      cli.end();
      await cli.waitFor(/\S/);
      cli.interrupt();
      const r = await cli.done;
      expect(r.code).toBe(130);
      expect(r.stdout.trim().length).toBeGreaterThan(0);
      expect(r.stderr).toMatch(/\[stopped/);
    } finally {
      await noFaults();
    }
  });

  it.skipIf(!hosts("chat-router"))("chat: switches models, streams replies, Ctrl-C stops only the reply, Ctrl-D quits", async () => {
    const cli = startCli(["chat"], userEnv());
    await cli.waitFor("Chatting with", "stderr");
    cli.type("/model qwen2.5-7b-instruct\n");
    await cli.waitFor("Switched to qwen2.5-7b-instruct; new conversation.", "stderr");
    cli.type("Hello!\n");
    await cli.waitFor(/\[\d+ tokens?, \d+ credits?; [\d,]+ left\]/, "stderr");

    await hangAfterTokens();
    try {
      const before = cli.stdout().length;
      cli.type("Tell me a very long story\n");
      await cli.waitFor(new RegExp(`^[\\s\\S]{${before + 1},}`));
      cli.interrupt();
      await cli.waitFor(/\[stopped/, "stderr");
    } finally {
      await noFaults();
    }
    // Still running: the next line gets a reply in a new conversation.
    cli.type("/new\n");
    await cli.waitFor("New conversation with qwen2.5-7b-instruct.", "stderr");
    cli.type("Hi again\n");
    cli.end(); // Ctrl-D after the last line: that line still gets its reply first
    const r = await cli.done;
    expect(r.code).toBe(0);
    expect(r.stderr.match(/\[\d+ tokens?, \d+ credits?; [\d,]+ left\]/g)).toHaveLength(2);
  });

  it.skipIf(!hosts("chat-router"))("ask to a model that scaled to zero says it is warming up (about N s), then streams the reply", async () => {
    // A second simulator, still "loading its model", behind a scale-to-zero model: STANDBY in the catalog.
    const sleepy = await startVllmSim({ models: ["sim-model:8192"], coldStartMs: 60_000 });
    try {
      const session = JSON.parse(readFileSync(join(tmp, "admin-config", "credentials.json"), "utf8")) as { sessions: Record<string, { accessToken: string }> };
      const res = await fetch(`${lp.url}/luna.models.v1.ModelAdminService/UpsertModel`, {
        method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${session.sessions[lp.url]!.accessToken}` },
        body: JSON.stringify({ model: { id: "sleepy-1b", displayName: "Sleepy 1B", kind: "MODEL_KIND_TEXT", contextWindow: 8192, maxOutputTokens: 256,
          prices: { inputPer1kTokens: "10", outputPer1kTokens: "10" }, upstream: { baseUrls: [sleepy.url], servedModelName: "sim-model" },
          scaleToZero: true, coldStartSeconds: 20 } }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      for (let i = 0; ; i++) {
        const models = await luna(["models", "--kind", "text"], userEnv());
        if (/sleepy-1b\s+text\s+standby/.test(models.stdout)) break;
        if (i > 100) throw new Error(`sleepy-1b never became STANDBY:\n${models.stdout}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const cli = startCli(["ask", "Are you awake?", "--model", "sleepy-1b"], userEnv());
      cli.end();
      await cli.waitFor(/^warming up sleepy-1b \(about (19|20) s\)\n/, "stderr", 10_000);
      expect(cli.stdout()).toBe("");
      sleepy.coldStart(0); // the pool's first replica turns healthy
      const r = await cli.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim().length).toBeGreaterThan(0);
      expect(r.stderr).toMatch(/^warming up sleepy-1b \(about \d+ s\)\n\[sleepy-1b · \d+ tokens?, \d+ credits?; [\d,]+ left\]\n$/);
    } finally {
      await sleepy.close();
    }
  });

  it.skipIf(!hosts("image-job"))("image shows progress and saves the PNGs; gallery lists them", async () => {
    const out = join(tmp, "images");
    const r = await luna(["image", "a red fox in the snow", "--workflow", "flux-schnell", "--size", "1024x1024", "--count", "2", "--out", out],
      userEnv());
    expect(r.code, r.stderr).toBe(0);
    const files = r.stdout.trim().split("\n");
    expect(files).toHaveLength(2);
    for (const f of files) {
      expect(f.startsWith(resolve(out))).toBe(true);
      expect(readFileSync(f).subarray(0, 8)).toEqual(PNG_MAGIC);
    }
    expect(readdirSync(out)).toHaveLength(2);
    // Without a terminal the progress bar is a few plain lines on stderr, ending with the final state.
    expect(r.stderr).toMatch(/^Job \S+: 2 × 1024x1024 on flux-schnell, \d+ credits? held\.\n/);
    expect(r.stderr).toMatch(/\ndone 100%\n/);

    const gallery = await luna(["gallery"], userEnv());
    expect(gallery.code).toBe(0);
    expect(gallery.stdout.match(/1024x1024\s+flux-schnell\s+a red fox in the snow/g)).toHaveLength(2);
  });

  it.skipIf(!hosts("image-job"))("a failed image job is one clear line; Ctrl-C cancels a running job", async () => {
    const comfyFaults = (faults: object) => fetch(`${lp.platform.simulators.comfyUrl}/_sim/faults`, { method: "POST",
      headers: { "content-type": "application/json" }, body: JSON.stringify(faults) });
    try {
      expect((await comfyFaults({ failMarker: "BROKEN" })).status).toBe(200);
      const failed = await luna(["image", "a BROKEN robot", "--workflow", "flux-schnell", "--out", join(tmp, "failed")], userEnv());
      expect(failed.code).toBe(1);
      expect(failed.stderr.trimEnd().split("\n").at(-1)).toMatch(/^luna: the image job failed: .+ \(nothing was charged\)$/);

      // Downloads from ComfyUI stall, so the job is still running when Ctrl-C comes.
      expect((await comfyFaults({ viewDelayMs: 3000 })).status).toBe(200);
      const cli = startCli(["image", "a slow sunrise", "--workflow", "flux-schnell", "--out", join(tmp, "cancelled")], userEnv());
      cli.end();
      await cli.waitFor(/^Job \S+:/m, "stderr");
      cli.interrupt();
      const r = await cli.done;
      expect(r.code).toBe(130);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/Cancelling the job .*\n(.*\n)*The job was cancelled; its credits were released\.\n$/);
    } finally {
      await comfyFaults({});
    }
  });

  it.skipIf(!hosts("billing"))("history lists the sign-up grant; an admin grant adds credits", async () => {
    const granted = await luna(["admin", "grant", USER_EMAIL, "500", "--reason", "thanks for testing"], adminEnv());
    expect(granted.code, granted.stderr).toBe(0);
    expect(granted.stdout).toMatch(new RegExp(`^Granted 500 credits to ${USER_EMAIL}; balance now [\\d,]+\\.\n$`));
    const history = await luna(["history", "--limit", "200"], userEnv()); // the sign-up grant is behind many charges by now
    expect(history.code).toBe(0);
    expect(history.stdout).toMatch(/^WHEN\s+KIND\s+CREDITS\s+WHAT\n/);
    expect(history.stdout).toMatch(/grant\s+\+500\s+/);
    expect(history.stdout).toMatch(/grant\s+\+1,000\s+/);
  });

  it.skipIf(!hosts("chat-router"))("keys: create one, use it with the openai SDK (models, a streamed reply with usage), list it, revoke it", async () => {
    const created = await luna(["keys", "create", "sdk test", "--expires", "30d"], userEnv());
    expect(created.code, created.stderr).toBe(0);
    const key = created.stdout.trim();
    expect(key).toMatch(/^luna_sk_[0-9A-Za-z]{46}$/);
    expect(created.stderr).toMatch(/It is shown only now\.\n$/);
    const openai = new OpenAI({ apiKey: key, baseURL: `${lp.url}/v1`, maxRetries: 0 });
    expect((await openai.models.list()).data.map((m) => m.id)).toContain("llama-3.1-8b-abliterated");
    const stream = await openai.chat.completions.create({ model: "llama-3.1-8b-abliterated", stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: "Hello" }] });
    let text = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      usage ??= chunk.usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBeGreaterThan(0);

    const list = await luna(["keys", "list"], userEnv());
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${key.slice(0, 12)}…\\s+sdk test\\s+active`));
    const id = list.stdout.split("\n")[1]!.split(/\s+/)[0]!;
    expect(await luna(["keys", "revoke", id], userEnv())).toMatchObject({ code: 0, stdout: `Revoked API key "sdk test" (${key.slice(0, 12)}…).\n` });
    // It stops working within seconds (the kit's key cache is cut short by the revocation list).
    const since = Date.now();
    let refused: unknown;
    while (!refused && Date.now() - since < 5000) refused = await openai.models.list().then(() => undefined, (e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((await luna(["keys", "list"], userEnv())).stdout).toBe("No API keys.\n");
    expect((await luna(["keys", "list", "--all"], userEnv())).stdout).toMatch(/sdk test\s+revoked/);
    expectOneErrorLine(await luna(["keys", "create"], userEnv()), 2, /<name>/);
  });

  it("admin: lists users, disables and enables a model", async () => {
    const users = await luna(["admin", "users", "list"], adminEnv());
    expect(users.code).toBe(0);
    expect(users.stdout).toMatch(new RegExp(`${USER_EMAIL}\\s+user\\s+`));
    expect(users.stdout).toMatch(new RegExp(`${ADMIN_EMAIL}\\s+admin\\s+`));

    const disabled = await luna(["admin", "models", "disable", "qwen2.5-7b-instruct", "--reason", "maintenance"], adminEnv());
    expect(disabled).toMatchObject({ code: 0, stdout: "Model qwen2.5-7b-instruct disabled.\n" });
    expect((await luna(["models"], userEnv())).stdout).not.toContain("qwen2.5-7b-instruct");
    expect((await luna(["admin", "models", "list"], adminEnv())).stdout).toMatch(/qwen2\.5-7b-instruct\s+text\s+disabled \(maintenance\)/);
    expect((await luna(["admin", "models", "enable", "qwen2.5-7b-instruct"], adminEnv())).code).toBe(0);
    expect((await luna(["models"], userEnv())).stdout).toContain("qwen2.5-7b-instruct");
  });

  it("admin audit: lists the audit log, filtered by account and kind; bad kinds are refused", async () => {
    const all = await luna(["admin", "audit", "--limit", "500"], adminEnv());
    expect(all.code).toBe(0);
    expect(all.stdout.split("\n")[0]).toMatch(/^TIME\s+KIND\s+ACTOR\s+SUBJECT\s+SOURCE\s+REQUEST\s+DETAILS/);
    expect(all.stdout).toMatch(/\ssign_up\s/);
    expect(all.stdout).toMatch(/\sinvites\.created\s/);
    const mine = await luna(["admin", "audit", "--user", USER_EMAIL, "--kind", "sign_up"], adminEnv());
    expect(mine.code).toBe(0);
    const lines = mine.stdout.trim().split("\n").slice(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/\ssign_up\s/);
    expect((await luna(["admin", "audit", "--kind", "api_key.revoked", "--limit", "1"], adminEnv())).stdout.trim().split("\n")).toHaveLength(2);
    expectOneErrorLine(await luna(["admin", "audit", "--kind", "sign_upp"], adminEnv()), 1, /kinds: unknown kind "sign_upp"; known: sign_up, /);
    expectOneErrorLine(await luna(["admin", "audit"], userEnv()), 1, /^luna: \S/);
  });

  it.skipIf(!hosts("billing"))("admin audit: billing's grant and the registry's model switches, readably", async () => {
    // They arrive through luna.events.audit.* (billing's and the registry's outboxes, auth's consumer): give them a moment.
    let r: CliRun | undefined;
    for (let i = 0; i < 75; i++) {
      r = await luna(["admin", "audit", "--kind", "credits.granted,model.disabled,model.enabled"], adminEnv());
      if (/model\.enabled/.test(r.stdout) && /credits\.granted/.test(r.stdout)) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(r!.code, r!.stderr).toBe(0);
    const user = (await luna(["admin", "users", "list", "--email", USER_EMAIL], adminEnv())).stdout.match(/^([0-9a-f-]{36})\s/m)?.[1];
    expect(user).toBeDefined();
    expect(r!.stdout).toMatch(new RegExp(`\\scredits\\.granted\\s+[0-9a-f-]{36}\\s+${user}\\s+\\S+\\s+\\S+\\s+\\+500 credits: thanks for testing\n`));
    expect(r!.stdout).toMatch(/\smodel\.disabled\s+[0-9a-f-]{36}\s+model:qwen2\.5-7b-instruct\s+\S+\s+\S+\s+v\d+ maintenance\n/);
    expect(r!.stdout).toMatch(/\smodel\.enabled\s+[0-9a-f-]{36}\s+model:qwen2\.5-7b-instruct\s/);
  });

  it("bad input and refused calls are one clear line with exit code 2 (usage) or 1", async () => {
    expectOneErrorLine(await luna(["frobnicate"], userEnv()), 2, /unknown command "frobnicate" \(see 'luna --help'\)/);
    expectOneErrorLine(await luna(["admin", "invites", "create", "--count", "0"], adminEnv()), 2,
      /--count must be between 1 and 100, got 0 \(see 'luna admin invites create --help'\)/);
    expectOneErrorLine(await luna(["admin", "invites", "create", "--expires", "soon"], adminEnv()), 2, /--expires must be a duration like 30m/);
    expectOneErrorLine(await luna(["image", "a cat", "--size", "huge"], userEnv()), 2, /--size must look like 1024x1024, got "huge"/);
    expectOneErrorLine(await luna(["admin", "grant", USER_EMAIL], adminEnv()), 2, /missing <credits>/);
    expectOneErrorLine(await luna(["history", "--bogus"], userEnv()), 2, /unknown option --bogus/);
    expectOneErrorLine(await luna(["me", "--url", "ftp://x"], userEnv()), 2, /--url must be an http\(s\) URL/);
    expectOneErrorLine(await luna(["login", "--email", USER_EMAIL], userEnv()), 2, /stdin is not a terminal: pass the password with --password-stdin/);
    // Refused by the server: exit 1, the server's reason.
    expectOneErrorLine(await luna(["admin", "users", "list"], userEnv()), 1, /^luna: \S/);
    // A wrong password with no session anywhere: the server's reason, not "not signed in".
    expectOneErrorLine(await luna(["login", "--email", USER_EMAIL, "--password-stdin"], { ...userEnv(), LUNA_CONFIG_DIR: join(tmp, "other") },
      "wrong-password-123\n"), 1, /^luna: email or password is incorrect$/);
    expectOneErrorLine(await luna(["login", "--email", USER_EMAIL, "--password-stdin"], { LUNA_URL: "http://127.0.0.1:1",
      LUNA_CONFIG_DIR: join(tmp, "other") }, "wrong-password-123\n"), 1, /^luna: cannot reach Luna at http:\/\/127\.0\.0\.1:1 /);
    expectOneErrorLine(await luna(["--bogus"], userEnv()), 2, /^luna: unknown option --bogus \(see 'luna --help'\)$/);
    expectOneErrorLine(await luna(["history", "--limit", "-1"], userEnv()), 2, /^luna: --limit must be between 1 and [\d,]+, got -1 /);
    expectOneErrorLine(await luna(["signup", "--email", "bob@luna.test", "--invite", "AAAAA-BBBBB-CCCCC-DDDDD", "--name", "Bob", "--password-stdin"],
      { ...userEnv(), LUNA_CONFIG_DIR: join(tmp, "bob") }, `${USER_PASSWORD}\n`), 1, /^luna: \S/);
    expectOneErrorLine(await luna(["me"], { LUNA_URL: "http://127.0.0.1:1", LUNA_CONFIG_DIR: join(tmp, "nowhere") }), 1, /not signed in/);
    // Another spelling of the same server finds its session; another server is told which one has a session.
    const port = new URL(lp.url).port;
    const viaLocalhost = await luna(["me"], { ...userEnv(), LUNA_URL: `http://localhost:${port}/` });
    expect(viaLocalhost.code, viaLocalhost.stderr).toBe(0);
    expect(viaLocalhost.stdout).toContain(USER_EMAIL);
    expectOneErrorLine(await luna(["me"], { ...userEnv(), LUNA_URL: "http://127.0.0.1:1" }), 1,
      new RegExp(`not signed in to http://127\\.0\\.0\\.1:1: .*signed in to ${lp.url.replace(/\./g, "\\.")}`));
    expectOneErrorLine(await luna(["models"], { LUNA_URL: "http://127.0.0.1:1", LUNA_CONFIG_DIR: join(tmp, "nowhere") }), 1,
      /cannot reach Luna at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/);
  });

  it("the installed `luna` bin runs as its own process with the same exit codes", async () => {
    const bin = resolve(import.meta.dirname, "../bin/luna.js");
    const exec = (args: string[]) => new Promise<CliRun>((done) => {
      const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...userEnv() }, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("close", (code) => done({ code: code ?? -1, stdout, stderr }));
    });
    const me = await exec(["me"]);
    expect(me.code, me.stderr).toBe(0);
    expect(me.stdout).toContain(USER_EMAIL);
    expectOneErrorLine(await exec(["balance", "extra"]), 2, /unexpected argument "extra"/);
    // A reader that goes away (`luna models | head -1`) ends the command quietly, without an EPIPE stack trace.
    for (const args of [["models"], ["admin", "grant", "--help"]]) {
      const closed = await new Promise<CliRun>((done) => {
        const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...userEnv() }, stdio: ["ignore", "pipe", "pipe"] });
        child.stdout.destroy(); // the pipe's reader is gone before the first line is written
        let stderr = "";
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        child.on("close", (code) => done({ code: code ?? -1, stdout: "", stderr }));
      });
      expect(closed, args.join(" ")).toEqual({ code: 0, stdout: "", stderr: "" });
    }
    const help = await exec(["admin", "grant", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: luna admin grant \[options\] <user> <credits>\n/);
  });

  it.skipIf(!hosts("chat-router"))("a real Ctrl-C (SIGINT) in `luna chat` stops the reply, not the program", async () => {
    const bin = resolve(import.meta.dirname, "../bin/luna.js");
    await hangAfterTokens();
    const child = spawn(process.execPath, [bin, "chat"], { env: { ...process.env, ...userEnv() }, stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
    try {
      child.stdin.write("Tell me everything\n");
      await new Promise<void>((r) => child.stdout.once("data", () => r()));
      child.kill("SIGINT");
      for (let i = 0; i < 100 && !stderr.includes("[stopped"); i++) await new Promise((r) => setTimeout(r, 100));
      expect(stderr).toContain("[stopped");
      expect(child.exitCode).toBeNull();
    } finally {
      await noFaults();
    }
    child.stdin.write("/exit\n");
    expect(await exited).toBe(0);
  });

  it("logout ends the session; a later call says to sign in", async () => {
    const stale = readFileSync(credentialsPath(), "utf8");
    const r = await luna(["logout"], userEnv());
    expect(r).toMatchObject({ code: 0, stdout: "Signed out.\n" });
    expectOneErrorLine(await luna(["me"], userEnv()), 1, /not signed in to http:\/\/127\.0\.0\.1:\d+: run `luna login`/);

    // Tokens of the ended session are refused: the CLI forgets them and asks for a new sign-in.
    const file = JSON.parse(stale);
    file.sessions[lp.url].accessTokenExpiresAt = Date.now() - 1000;
    writeFileSync(credentialsPath(), JSON.stringify(file), { mode: 0o600 });
    expectOneErrorLine(await luna(["me"], userEnv()), 1, /your session has ended .*run `luna login`/);
    expect(() => statSync(credentialsPath())).toThrow();
  });

  it("logout --everywhere ends every session of the account, the other machine's too", async () => {
    const here = { LUNA_URL: lp.url, LUNA_CONFIG_DIR: join(tmp, "everywhere-here") };
    const there = { LUNA_URL: lp.url, LUNA_CONFIG_DIR: join(tmp, "everywhere-there") };
    for (const env of [here, there]) expect((await luna(["login", "--email", USER_EMAIL, "--password-stdin"], env, `${USER_PASSWORD}\n`)).code).toBe(0);
    const r = await luna(["logout", "--everywhere"], here);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Signed out everywhere \(\d+ sessions ended\)\.\n$/);
    expectOneErrorLine(await luna(["me"], here), 1, /not signed in to http:\/\/127\.0\.0\.1:\d+: run `luna login`/);
    // The other machine's access token is refused within the revocation bound, and its refresh token at once.
    let other = await luna(["me"], there);
    for (let i = 0; i < 20 && other.code === 0; i++) {
      await new Promise((res) => setTimeout(res, 500));
      other = await luna(["me"], there);
    }
    expectOneErrorLine(other, 1, /your session has ended .*run `luna login`/);
  });
});
