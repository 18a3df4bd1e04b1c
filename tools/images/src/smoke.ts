// `make image-smoke`: runs the built images (luna/<program>:<tag>) as containers, as an SRE would — read-only root
// filesystem, uid 10001, no capabilities, only the environment a Kubernetes Deployment gives each one — against a
// local Postgres, Redis and NATS (the kit's localstack), with the dev gateway (tools/split) in front. Then, through the
// gateway: sign up, a streamed chat reply, an image job to SUCCEEDED and its PNG, the ledger invariants; per container:
// non-root + read-only checks and start-to-ready time; and a SIGTERM to chat-router with a reply in flight. It stops
// and removes everything it started (also what an interrupted earlier run left: containers labelled luna-smoke).
//   LUNA_IMAGE_TAG (dev)  LUNA_SMOKE_READY_TIMEOUT_MS (60000: give up waiting)  LUNA_SMOKE_READY_BUDGET_MS (10000: slower
//   fails)  LUNA_SMOKE_KEEP_LOGS=1 (print every container's log)
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LedgerEntryKind } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import type { ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelKind, ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { freePorts } from "@luna/kit/localstack";
import { startDevStack } from "@luna/devstack";
import { ensureInternalKey, MODULES } from "@luna/allinone";
import { bootstrapInvites, devSecret, startGateway, type Gateway } from "@luna/split";
import { allLedgerEntries, clientsFor, eventually } from "@luna/e2e";
import { imageSize, mb, podmanLimits } from "./build.js";
import { detectEngine, imageExists, run, type Engine } from "./engine.js";
import { imageName, PROGRAMS } from "./programs.js";

const LABEL = "luna-smoke";
const PREFIX = "luna-smoke-";
const ADMIN = { email: "admin@smoke.test", password: "smoke-admin-passphrase-42" };
const UID = "10001";
const READY_TIMEOUT = Number(process.env.LUNA_SMOKE_READY_TIMEOUT_MS ?? 60_000);
/** "Ready within a few seconds": slower than this fails the smoke (measured 0.3–4 s on 2 shared cores). */
const READY_BUDGET = Number(process.env.LUNA_SMOKE_READY_BUDGET_MS ?? 10_000);
const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

interface Running {
  program: string;
  name: string;
  adminPort?: number;
  apiPort?: number;
  readyMs?: number;
}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`  ok  ${what}`);
}

function removeLeftovers(engine: Engine): void {
  const ids = run(engine, ["ps", "-aq", "--filter", `label=${LABEL}`]).split(/\s+/).filter(Boolean);
  if (ids.length > 0) run(engine, ["rm", "-f", ...(engine.cmd === "podman" ? ["-t", "0"] : []), ...ids]);
}

async function httpReady(url: string, okStatus: (s: number) => boolean, timeoutMs: number, alive: () => boolean): Promise<number> {
  const t0 = Date.now();
  let lastAliveCheck = t0;
  for (;;) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (okStatus(r.status)) return Date.now() - t0;
    } catch {
      // not listening yet
    }
    // Asking the engine blocks for ~0.1 s: once a second is enough to notice a container that died.
    if (Date.now() - lastAliveCheck > 1000) {
      lastAliveCheck = Date.now();
      if (!alive()) throw new Error(`${url}: the container exited before it was ready`);
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`${url}: not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function main(): Promise<void> {
  const engine = detectEngine();
  const tag = process.env.LUNA_IMAGE_TAG ?? "dev";
  const missing = PROGRAMS.filter((p) => !imageExists(engine, imageName(p.name, tag)));
  if (missing.length > 0) throw new Error(`images missing: ${missing.map((p) => imageName(p.name, tag)).join(", ")}; run \`make images\` first`);
  removeLeftovers(engine);

  const dataDir = mkdtempSync(join(tmpdir(), "luna-image-smoke-"));
  chmodSync(dataDir, 0o755); // Postgres runs as an unprivileged user when this runs as root
  const cleanups: Array<() => Promise<unknown> | unknown> = [() => rmSync(dataDir, { recursive: true, force: true })];
  const running: Running[] = [];
  const logsOf = (name: string): string => spawnSync(engine.cmd, [...engine.global, "logs", "--tail", "40", name], { encoding: "utf8" }).stdout ?? "";
  const alive = (name: string): boolean => run(engine, ["inspect", "--format", "{{.State.Running}}", name]).trim() === "true";

  try {
    // ---- the servers a cluster would have: Postgres, Redis, NATS (localstack, throw-away data)
    const [pgPort, redisPort, natsPort, natsMon] = await freePorts(4);
    const stack = await startDevStack({ dataDir: join(dataDir, "stack"), ports: { postgres: pgPort!, redis: redisPort!, nats: natsPort!, natsMonitor: natsMon! },
      keepRunning: false, durable: false });
    cleanups.push(() => stack.stop());
    const dbOf: Record<string, string> = Object.fromEntries(MODULES.map((m) => [m.name, m.database]));
    await stack.createDatabases(Object.values(dbOf));
    const dbUrl = (service: string): string => `${stack.urls.databaseUrlBase}/${dbOf[service]}`;
    console.log(`==> Postgres :${pgPort}, Redis :${redisPort}, NATS :${natsPort} (data in ${dataDir})`);

    // Secrets as a Kubernetes Secret would hold them.
    await ensureInternalKey(dataDir);
    const internalKey = readFileSync(join(dataDir, "internal-key.json"), "utf8");
    const authKek = devSecret(dataDir, "auth-key-encryption.key");
    const imageUrlSecret = devSecret(dataDir, "image-url.key");
    // The one writable volume image-job and its worker share (S3 in a cluster); owned by the images' user.
    const images = join(dataDir, "images");
    mkdirSync(images);
    chownSync(images, Number(UID), Number(UID));

    // Host networking (so they reach the localstack on loopback): every container gets its own free ports.
    const ports = await freePorts(16);
    const take = (): number => ports.shift()!;
    const api: Record<string, { apiPort: number; adminPort: number }> = {};
    for (const s of ["auth", "billing", "model-registry", "chat-router", "image-job"]) api[s] = { apiPort: take(), adminPort: take() };
    const workerAdmin = take();
    const vllmPort = take();
    const comfyPort = take();
    const url = (s: string): string => `http://127.0.0.1:${api[s]!.apiPort}`;
    const serviceUrls = Object.keys(api).map((s) => `${s}=${url(s)}`).join(",");

    async function start(program: string, env: Record<string, string>, ready: { url: string; ok: (s: number) => boolean } | undefined,
      extra: string[] = [], args: string[] = []): Promise<Running> {
      const name = PREFIX + program;
      const r: Running = { program, name };
      const runArgs = ["run", "-d", "--name", name, "--label", LABEL, "--network=host", "--read-only", "--user", `${UID}:${UID}`,
        "--cap-drop=ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:rw,size=64m,mode=1777", ...extra,
        ...(engine.cmd === "podman" ? ["--read-only-tmpfs=false", ...podmanLimits()] : []),
        ...Object.entries(env).flatMap(([k, v]) => ["-e", `${k}=${v}`]), imageName(program, tag), ...args];
      const t0 = Date.now();
      run(engine, runArgs);
      running.push(r);
      if (ready) {
        try {
          await httpReady(ready.url, ready.ok, READY_TIMEOUT, () => alive(name));
        } catch (err) {
          throw new Error(`${program}: ${(err as Error).message}\n${logsOf(name)}`);
        }
        r.readyMs = Date.now() - t0;
      }
      return r;
    }
    const readyz = (adminPort: number) => ({ url: `http://127.0.0.1:${adminPort}/readyz`, ok: (s: number) => s === 200 });
    const common = { REDIS_URL: stack.urls.redisUrl, NATS_URL: stack.urls.natsUrl, LUNA_INTERNAL_KEY: internalKey, LUNA_SERVICE_URLS: serviceUrls };
    const serviceEnv = (s: string): Record<string, string> => ({ ...common, DATABASE_URL: dbUrl(s), LUNA_PORT: String(api[s]!.apiPort),
      LUNA_ADMIN_PORT: String(api[s]!.adminPort), LUNA_JWKS_URL: `${url("auth")}/.well-known/jwks.json` });

    // ---- migrations: the luna/migrate image (a Helm hook / Job), twice: the second run applies nothing
    console.log("==> migrations (luna/migrate)");
    for (const service of Object.keys(api)) {
      for (const round of [1, 2]) {
        const t0 = Date.now();
        const out = spawnSync(engine.cmd, [...engine.global, "run", "--rm", "--network=host", "--read-only", "--user", `${UID}:${UID}`, "--cap-drop=ALL",
          ...(engine.cmd === "podman" ? podmanLimits() : []), "-e", `DATABASE_URL=${dbUrl(service)}`, imageName("migrate", tag), "--service", service],
        { encoding: "utf8" });
        check(out.status === 0, `luna-migrate --service ${service} (run ${round}) exits 0 in ${Date.now() - t0} ms${out.status === 0 ? "" : `:\n${out.stdout}${out.stderr}`}`);
        const said = out.stdout.trim().split("\n").at(-1) ?? "";
        if (round === 2) check(/no pending migrations/.test(out.stdout), `second run for ${service} is a no-op ("${said}")`);
      }
    }
    const noMigrate = { LUNA_MIGRATE_ON_START: "false" };

    // ---- simulators, then the services in dependency waves, then the worker
    console.log("==> starting containers");
    const models = MODULES.flatMap((m) => m.simulatedModels ?? []).map((m) => `${m.name}:${m.maxModelLen}`).join(",");
    // Slow enough decoding that a reply is still streaming when chat-router gets SIGTERM below (~2-3 s a reply).
    await Promise.all([
      start("sim-vllm", { SIM_VLLM_PORT: String(vllmPort), SIM_VLLM_MODELS: models, SIM_VLLM_OUTPUT_TOKENS: "40:60", SIM_VLLM_SLOW_TOKEN_MS: "40" },
        { url: `http://127.0.0.1:${vllmPort}/health`, ok: (s) => s === 200 }),
      start("sim-comfyui", { SIM_COMFYUI_PORT: String(comfyPort) }, { url: `http://127.0.0.1:${comfyPort}/system_stats`, ok: (s) => s === 200 }),
    ]);
    const vllmUrl = `http://127.0.0.1:${vllmPort}`;
    const comfyUrl = `http://127.0.0.1:${comfyPort}`;
    await Promise.all([
      start("auth", { ...serviceEnv("auth"), ...noMigrate, AUTH_KEY_ENCRYPTION_KEY: authKek, AUTH_ADMIN_EMAIL: ADMIN.email,
        AUTH_ADMIN_PASSWORD: ADMIN.password, AUTH_TRUSTED_PROXY_HOPS: "1" }, readyz(api.auth!.adminPort)),
      start("billing", { ...serviceEnv("billing"), ...noMigrate }, readyz(api.billing!.adminPort)),
      start("model-registry", { ...serviceEnv("model-registry"), ...noMigrate, REGISTRY_SEED_VLLM_URL: vllmUrl,
        REGISTRY_SEED_COMFYUI_URL: comfyUrl, REGISTRY_HEALTH_INTERVAL: "1s" }, readyz(api["model-registry"]!.adminPort)),
    ]);
    const volume = ["-v", `${images}:/var/lib/luna/images:rw`];
    await Promise.all([
      start("chat-router", { ...serviceEnv("chat-router"), ...noMigrate, LUNA_SHUTDOWN_GRACE: "20s" }, readyz(api["chat-router"]!.adminPort)),
      start("image-job", { ...serviceEnv("image-job"), ...noMigrate, IMAGE_URL_SECRET: imageUrlSecret, IMAGE_LOCAL_DIR: "/var/lib/luna/images" },
        readyz(api["image-job"]!.adminPort), volume),
    ]);
    await start("image-worker", { ...common, LUNA_ADMIN_PORT: String(workerAdmin), COMFYUI_URL: comfyUrl, IMAGE_LOCAL_DIR: "/var/lib/luna/images" },
      readyz(workerAdmin), volume);

    // ---- every container: uid 10001, read-only root filesystem, /tmp writable
    console.log("==> container checks");
    for (const r of running) {
      const probe = "const fs=require('fs');let ro=false;try{fs.writeFileSync('/app/probe','x')}catch(e){ro=e.code==='EROFS'}" +
        "fs.writeFileSync('/tmp/probe','x');console.log(JSON.stringify({uid:process.getuid(),gid:process.getgid(),pid:process.pid,ro}))";
      const seen = JSON.parse(run(engine, ["exec", r.name, "node", "-e", probe]).trim()) as { uid: number; gid: number; ro: boolean };
      const pid1 = run(engine, ["exec", r.name, "node", "-e", "console.log(require('fs').readFileSync('/proc/1/cmdline','utf8').split('\\0')[0])"]).trim();
      check(seen.uid === 10001 && seen.gid === 10001 && seen.ro && pid1 === "node" && (r.readyMs ?? 0) <= READY_BUDGET,
        `${r.program}: uid/gid ${seen.uid}/${seen.gid}, root filesystem read-only, /tmp writable, PID 1 is ${pid1}` +
        (r.readyMs !== undefined ? `, ready in ${r.readyMs} ms (budget ${READY_BUDGET} ms)` : ""));
    }

    // ---- the dev gateway in front of the containers, as Envoy is in the cluster
    const gateway: Gateway = await startGateway({ upstream: (s) => (api[s] ? url(s) : undefined), host: "127.0.0.1", port: 0, shutdownGraceMs: 5000,
      log: { warn: (m) => console.log(`  gateway: ${m}`) } });
    cleanups.push(() => gateway.close());
    const gw = gateway.url;
    console.log(`==> through the gateway ${gw}`);

    const codes = await bootstrapInvites({ authUrl: url("auth"), admin: ADMIN, invitesFile: join(dataDir, "invites.txt") });
    const email = `smoke-${Date.now()}@smoke.test`;
    const signedUp = await clientsFor(gw).auth.signUp({ email, password: "a long enough passphrase", inviteCode: codes[0]!, displayName: "smoke" });
    const user = clientsFor(gw, signedUp.tokens!.accessToken);
    check(Boolean(signedUp.user?.id), `signed up ${email} with an invite code`);
    const grant = await eventually(async () => {
      const b = await user.billing.getBalance({});
      if (b.balance <= 0n) throw new Error("no sign-up grant yet");
      return b.balance;
    }, { timeoutMs: 15_000 });
    check(grant > 0n, `sign-up grant arrived: ${grant} credits`);

    const textModel = await eventually(async () => {
      const m = (await user.models.listModels({})).models.find((x) => x.kind === ModelKind.TEXT && x.status === ModelStatus.AVAILABLE);
      if (!m) throw new Error("no available text model");
      return m;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    const { conversation } = await user.chat.createConversation({ modelId: textModel.id });
    async function reply(text: string, onDelta?: (n: number, messageId: string) => void): Promise<{ events: ChatEvent[]; messageId: string; deltas: number }> {
      const events: ChatEvent[] = [];
      let messageId = "";
      let deltas = 0;
      for await (const msg of user.chat.sendMessage({ conversationId: conversation!.id, text, clientMessageId: `smoke-${Date.now()}-${deltas}` })) {
        events.push(msg.event!);
        if (msg.event!.event.case === "started") messageId = msg.event!.event.value.assistantMessageId;
        if (msg.event!.event.case === "delta") {
          deltas += 1;
          onDelta?.(deltas, messageId);
        }
      }
      return { events, messageId, deltas };
    }
    const first = await reply("Tell me about the moon.");
    const fin = first.events.at(-1)!;
    const described = (evs: ChatEvent[]): string => evs.map((e) => e.event.case === "delta" ? "delta" : `${e.event.case} ${JSON.stringify(e.event.value, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`).join("; ");
    check(fin.event.case === "finished" && first.deltas >= 2, `streamed chat reply: ${first.deltas} deltas, then finished (${textModel.id})` +
      (fin.event.case === "finished" && first.deltas >= 2 ? "" : `: ${described(first.events)}`));

    // ---- image job to SUCCEEDED, PNG downloaded through the gateway
    const workflow = await eventually(async () => {
      const w = (await user.models.listWorkflows({})).workflows.find((x) => x.status === ModelStatus.AVAILABLE);
      if (!w) throw new Error("no available workflow");
      return w;
    }, { timeoutMs: 30_000, intervalMs: 250 });
    const submitted = (await user.image.submitJob({ workflowId: workflow.id, prompt: "a lighthouse at dusk", count: 1, idempotencyKey: `smoke-${Date.now()}` })).job!;
    let job = submitted;
    for await (const u of user.image.watchJob({ jobId: submitted.id })) job = u.job!;
    check(job.status === JobStatus.SUCCEEDED && job.images.length === 1, `image job ${job.id} SUCCEEDED with ${job.images.length} image`);
    const res = await fetch(new URL(job.images[0]!.url, gw));
    const png = new Uint8Array(await res.arrayBuffer());
    check(res.status === 200 && PNG.every((b, i) => png[i] === b) && BigInt(png.length) === job.images[0]!.sizeBytes,
      `PNG downloaded through the gateway (${png.length} bytes, ${res.headers.get("content-type")})`);

    // ---- SIGTERM to chat-router with a reply in flight: it must finish (or be handed off), billed exactly once
    console.log("==> SIGTERM to chat-router with a reply streaming");
    let stopper: Promise<number> | undefined;
    const t0 = Date.now();
    const inflight = await reply("Write a long story about a lighthouse.", (n) => {
      if (n === 1) {
        stopper = new Promise((resolve) => {
          const p = spawn(engine.cmd, [...engine.global, "stop", "-t", "30", PREFIX + "chat-router"], { stdio: "ignore" });
          p.on("exit", (code) => resolve(code ?? 1));
        });
      }
    });
    check(stopper !== undefined, "chat-router got SIGTERM after the first delta");
    check(await stopper === 0, "podman/docker stop returned");
    const exit = Number(run(engine, ["inspect", "--format", "{{.State.ExitCode}}", PREFIX + "chat-router"]).trim());
    const last = inflight.events.at(-1)!;
    check(last.event.case === "finished", `the in-flight reply still finished (${inflight.deltas} deltas, last event ${last.event.case})`);
    const charged = last.event.case === "finished" ? last.event.value.creditsCharged : -1n;
    check(exit === 0, `chat-router exited ${exit} after draining (${Date.now() - t0} ms from the request)`);
    const charges = (await eventually(async () => {
      const e = (await allLedgerEntries(user)).filter((x) => x.kind === LedgerEntryKind.CHARGE && x.reference === inflight.messageId);
      if (e.length === 0) throw new Error("no charge yet");
      return e;
    }));
    check(charges.length === 1 && charges[0]!.amount === charged, `the drained reply is charged exactly once (${charged} credits)`);
    // Restart it (as the Deployment would) and read the reply back.
    const restarted = Date.now();
    run(engine, ["start", PREFIX + "chat-router"]);
    await httpReady(readyz(api["chat-router"]!.adminPort).url, (s) => s === 200, READY_TIMEOUT, () => alive(PREFIX + "chat-router"));
    console.log(`  ok  chat-router restarted, ready in ${Date.now() - restarted} ms`);
    const msgs = (await user.chat.getConversation({ conversationId: conversation!.id })).messages;
    const kept = msgs.find((m) => m.id === inflight.messageId);
    check(kept !== undefined && kept.creditsCharged === charged, "the drained reply is stored complete with its charge");

    // ---- ledger invariants: the user's balance is its entries' sum, nothing held; billing's own global check
    const balance = await eventually(async () => {
      const b = await user.billing.getBalance({});
      if (b.held !== 0n) throw new Error(`still ${b.held} held`);
      return b;
    });
    const entries = await allLedgerEntries(user);
    check(entries.reduce((s, e) => s + e.balanceDelta, 0n) === balance.balance, `balance ${balance.balance} = sum of ${entries.length} ledger entries, 0 held`);
    const adminToken = (await clientsFor(gw).auth.signIn({ email: ADMIN.email, password: ADMIN.password })).tokens!.accessToken;
    const inv = await clientsFor(gw, adminToken).billingAdmin.checkInvariants({});
    check(inv.ok && inv.violations.length === 0, `BillingAdminService.CheckInvariants ok (${inv.accountsChecked} accounts, ${inv.entriesChecked} entries, ${inv.holdsChecked} holds)`);

    // ---- everything stops cleanly on SIGTERM
    console.log("==> SIGTERM to every container");
    for (const r of [...running].reverse()) {
      run(engine, ["stop", "-t", "30", r.name]);
      const code = Number(run(engine, ["inspect", "--format", "{{.State.ExitCode}}", r.name]).trim());
      check(code === 0, `${r.program} exited ${code} on SIGTERM`);
    }

    console.log("\n==> image sizes and start-to-ready times (container start to /readyz 200, or the simulator's health)");
    for (const p of PROGRAMS) {
      const r = running.find((x) => x.program === p.name);
      const ready = r?.readyMs !== undefined ? `${r.readyMs} ms` : p.name === "migrate" ? "(a Job: runs and exits)" : "-";
      console.log(`  ${imageName(p.name, tag).padEnd(28)} ${mb(imageSize(engine, imageName(p.name, tag))).padStart(8)}   ${ready}`);
    }
    console.log("\nimage smoke: passed");
  } catch (err) {
    if (process.env.LUNA_SMOKE_KEEP_LOGS) for (const r of running) console.error(`---- ${r.name}\n${logsOf(r.name)}`);
    throw err;
  } finally {
    if (process.env.LUNA_SMOKE_KEEP_LOGS) for (const r of running) console.log(`---- ${r.name}\n${logsOf(r.name)}`);
    try {
      removeLeftovers(engine);
    } catch (e) {
      console.error(`cleanup: ${(e as Error).message}`);
    }
    for (const c of cleanups.reverse()) await Promise.resolve().then(c).catch((e: unknown) => console.error(`cleanup: ${(e as Error).message}`));
  }
}

try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(`\nmake image-smoke: ${(err as Error).message}`);
  process.exit(1);
}
