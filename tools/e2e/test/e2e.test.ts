// Luna end to end, as a client sees it: one scenario, written once, run against every topology — the all-in-one
// process, one process per service behind the dev gateway, and a Luna already running elsewhere (`remote`: a
// cluster, or here the all-in-one platform once more, known only by its URL, admin and simulator URLs). Steps run
// in order and build on each other (a user signs up, chats, makes an image, ...). Nothing assumes a fresh platform:
// users and keys are unique per run. Steps of a service the topology does not run yet are skipped; their
// assertions are complete and run as soon as the service is there.
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { LedgerEntryKind } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { FinishReason, MessageRole, MessageStatus, type ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { JobStatus, type Image, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelKind, ModelStatus, type Model, type Workflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePorts } from "@luna/kit/localstack";
import { allLedgerEntries, clientsFor, codeOf, eventually, streamCodeOf, type Clients } from "../src/clients.js";
import { connectRemote, remoteOptionsFromEnv } from "../src/remote.js";
import { TOPOLOGIES, servicesOf, startTopology, type Topology, type TopologyName } from "../src/topologies.js";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Local platforms, started once and shared: `remote` reuses the all-in-one one when no LUNA_E2E_REMOTE_URL is given. */
const platforms = new Map<TopologyName, Promise<Topology>>();
function platform(name: Exclude<TopologyName, "remote">): Promise<Topology> {
  let p = platforms.get(name);
  if (!p) platforms.set(name, (p = startTopology(name)));
  return p;
}
async function stopPlatform(name: TopologyName): Promise<void> {
  const p = platforms.get(name);
  platforms.delete(name);
  await p?.then((t) => t.stop(), () => undefined);
}
afterAll(async () => {
  for (const name of [...platforms.keys()]) await stopPlatform(name);
}, 60_000);

/** The platform a topology's scenario runs against; `remote` knows only a URL, an admin and the simulators' URLs. */
async function topologyFor(name: TopologyName): Promise<Topology> {
  if (name !== "remote") return platform(name);
  const remote = remoteOptionsFromEnv();
  if (remote) return connectRemote(remote);
  const local = await platform("all-in-one");
  return connectRemote({ url: local.url, admin: local.admin, vllmUrl: local.vllm.url, comfyUrl: local.comfy?.url });
}

/** The signature parameter of an image URL: ours (`sig`, the local store) or S3's presigned one. */
function signatureParam(url: URL): string {
  return ["sig", "X-Amz-Signature"].find((p) => url.searchParams.has(p)) ?? "sig";
}

interface User {
  id: string;
  token: string;
  c: Clients;
}

/** A chat reply as the client received it. */
interface Reply {
  events: ChatEvent[];
  text: string;
  assistantMessageId: string;
}

/** Reads a reply stream to its end; `onDelta` runs after each delta (e.g. to stop the reply mid-way). */
async function readReply(stream: AsyncIterable<{ event?: ChatEvent }>, onDelta?: (n: number, messageId: string) => Promise<void>): Promise<Reply> {
  const events: ChatEvent[] = [];
  let text = "";
  let assistantMessageId = "";
  let deltas = 0;
  for await (const msg of stream) {
    const ev = msg.event!;
    events.push(ev);
    if (ev.event.case === "started") assistantMessageId = ev.event.value.assistantMessageId;
    if (ev.event.case === "delta") {
      text += ev.event.value.text;
      await onDelta?.(++deltas, assistantMessageId);
    }
  }
  return { events, text, assistantMessageId };
}

/** Credits for a reply: ceil((prompt × input price + completion × output price) / 1000). */
function replyCost(model: Model, promptTokens: bigint, completionTokens: bigint): bigint {
  const milli = promptTokens * model.prices!.inputPer1kTokens + completionTokens * model.prices!.outputPer1kTokens;
  return milli <= 0n ? 0n : (milli + 999n) / 1000n;
}

// The remote topology's own checks, against the all-in-one platform the scenario runs on next (started here once
// and shared): settings that cannot work fail at once with a message saying which, never as a hang mid-scenario.
describe.runIf(TOPOLOGIES.includes("all-in-one") && TOPOLOGIES.includes("remote"))("the remote topology's settings", () => {
  const env = { LUNA_E2E_REMOTE_URL: "http://127.0.0.1:8080", LUNA_E2E_ADMIN_EMAIL: "admin@luna.local", LUNA_E2E_ADMIN_PASSWORD: "pw",
    LUNA_E2E_VLLM_URL: "http://127.0.0.1:18000" };
  let local: Topology;
  beforeAll(async () => {
    local = await platform("all-in-one");
  }, 180_000);

  it("are read from LUNA_E2E_* (unset: no remote topology), and every missing or malformed one is named", () => {
    expect(remoteOptionsFromEnv({})).toBeUndefined();
    expect(remoteOptionsFromEnv({ ...env, LUNA_E2E_SIGNUP_CREDITS: "500", LUNA_E2E_ORIGIN_MAP: "http://minio:9000=http://127.0.0.1:19000/" })).toEqual({
      url: env.LUNA_E2E_REMOTE_URL, admin: { email: "admin@luna.local", password: "pw" }, vllmUrl: env.LUNA_E2E_VLLM_URL, signupCredits: 500n,
      originMap: { "http://minio:9000": "http://127.0.0.1:19000" } });
    expect(() => remoteOptionsFromEnv({ LUNA_E2E_REMOTE_URL: "http://127.0.0.1:8080" }))
      .toThrow(/LUNA_E2E_ADMIN_EMAIL is not set; LUNA_E2E_VLLM_URL is not set; LUNA_E2E_ADMIN_PASSWORD is not set/);
    expect(() => remoteOptionsFromEnv({ ...env, LUNA_E2E_SIGNUP_CREDITS: "lots" })).toThrow(/LUNA_E2E_SIGNUP_CREDITS must be a whole number/);
    expect(() => remoteOptionsFromEnv({ ...env, LUNA_E2E_ORIGIN_MAP: "http://minio:9000" })).toThrow(/LUNA_E2E_ORIGIN_MAP: "http:\/\/minio:9000" is not from=to/);
    expect(() => remoteOptionsFromEnv({ ...env, LUNA_E2E_VLLM_URL: "127.0.0.1:18000" })).toThrow(/LUNA_E2E_VLLM_URL: "127.0.0.1:18000" is not a URL/);
    expect(() => remoteOptionsFromEnv({ ...env, LUNA_E2E_COMFYUI_URL: "ftp://127.0.0.1:18188" })).toThrow(/LUNA_E2E_COMFYUI_URL: "ftp:.*" is not an http\(s\) URL/);
  });

  it("a wrong admin password, a non-admin, nothing listening, or a wrong simulator URL fail at once, saying which", async () => {
    const good = { url: local.url, admin: local.admin, vllmUrl: local.vllm.url };
    const started = Date.now();
    await expect(connectRemote({ ...good, admin: { ...local.admin, password: "not the admin password" } }))
      .rejects.toThrow(/remote Luna at http:\/\/127\.0\.0\.1:\d+: the admin admin@e2e\.test cannot sign in: \[unauthenticated\].*LUNA_E2E_ADMIN_PASSWORD/);
    const nobody = `http://127.0.0.1:${(await freePorts(1))[0]}`;
    await expect(connectRemote({ ...good, url: nobody })).rejects.toThrow(new RegExp(`remote Luna at ${nobody}: the admin .* cannot sign in: .*ECONNREFUSED`));
    await expect(connectRemote({ ...good, vllmUrl: local.comfy!.url })).rejects.toThrow(/LUNA_E2E_VLLM_URL=.* is not the right simulator: GET \/_sim\/stats has no "requests"/);
    await expect(connectRemote({ ...good, vllmUrl: local.url })).rejects.toThrow(/LUNA_E2E_VLLM_URL=.* is not a simulator's control endpoint: .*HTTP 404/);
    await expect(connectRemote({ ...good, comfyUrl: local.vllm.url })).rejects.toThrow(/LUNA_E2E_COMFYUI_URL=.* is not the right simulator: .*"executions"/);
    expect(Date.now() - started).toBeLessThan(10_000);
    // An account that signs in but is no admin.
    const [code] = (await (await connectRemote(good)).invites());
    const user = { email: `not-admin-${Date.now()}@e2e.test`, password: "a long enough passphrase" };
    await clientsFor(local.url).auth.signUp({ ...user, inviteCode: code!, displayName: "not admin" });
    await expect(connectRemote({ ...good, admin: user })).rejects.toThrow(/signed in but is not an admin/);
  });

  it("downloads a URL naming an origin it cannot reach through the origin map, keeping the Host header presigned URLs sign", async () => {
    const hosts: string[] = [];
    const server = createServer((req, res) => {
      hosts.push(req.headers.host ?? "");
      res.writeHead(req.headers.host === "minio.invalid:9000" ? 200 : 403, { "content-type": "image/png" }).end("png");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const via = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const topo = await connectRemote({ url: local.url, admin: local.admin, vllmUrl: local.vllm.url, originMap: { "http://minio.invalid:9000": via } });
      const got = await topo.download("http://minio.invalid:9000/luna-images/a.png?X-Amz-Signature=abc");
      expect({ status: got.status, type: got.contentType, body: Buffer.from(got.bytes).toString() }).toEqual({ status: 200, type: "image/png", body: "png" });
      expect(hosts).toEqual(["minio.invalid:9000"]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe.each(TOPOLOGIES)("Luna end to end: %s", (topologyName) => {
  const running = servicesOf(topologyName);
  // Emails, idempotency keys and notes of this run: a remote platform has seen earlier runs.
  const run = `${topologyName.replace(/[^a-z0-9]/g, "")}-${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
  const email = (who: string): string => `${who}-${run}@e2e.test`;
  const chatRuns = running.has("chat-router");
  // The split platform runs the worker as its own process; the all-in-one hosts it with image-job.
  const imagesRun = running.has("image-job") && (topologyName === "all-in-one" || running.has("image-worker"));

  let topo: Topology;
  let SIGNUP_CREDITS: bigint;
  let invites: string[] = [];
  let alice: User;
  let bob: User;
  let textModel: Model;
  let conversationId = "";
  const charged = new Map<string, { credits: bigint; promptTokens: bigint; completionTokens: bigint }>();
  let job: Job;
  let image: Image;
  let workflow: Workflow;

  async function signUp(email: string, inviteCode: string): Promise<User> {
    // Through Envoy, sign-ups are limited per client address (billing's `signup` feature, 5 a minute by default),
    // and every client of the suite is one address, which a cluster may have seen sign up already this minute: wait
    // for the limit rather than fail.
    const deadline = Date.now() + 45_000;
    for (;;) {
      try {
        const res = await clientsFor(topo.url).auth.signUp({ email, password: "a long enough passphrase", inviteCode, displayName: email.split("@")[0]! });
        const token = res.tokens!.accessToken;
        return { id: res.user!.id, token, c: clientsFor(topo.url, token) };
      } catch (err) {
        if (ConnectError.from(err).code !== Code.ResourceExhausted || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  beforeAll(async () => {
    topo = await topologyFor(topologyName);
    SIGNUP_CREDITS = topo.signupCredits;
  }, 180_000);

  afterAll(async () => {
    // The all-in-one platform stays up for the remote topology's run, its last user (the file's afterAll stops it
    // when that run is filtered out). A remote Luna is left as it is.
    if (topologyName === "remote") {
      if (!remoteOptionsFromEnv()) await stopPlatform("all-in-one");
    } else if (!(topologyName === "all-in-one" && TOPOLOGIES.includes("remote"))) await stopPlatform(topologyName);
  }, 60_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail" && topo?.output()) {
      process.stderr.write(`---- last output of the ${topologyName} processes ----\n${topo.output().split("\n").slice(-60).join("\n")}\n`);
    }
  });

  it("redeems an invite code (the dev bootstrap's invites.txt; a remote Luna's admin API) once, and signs in, over Connect and gRPC-Web", async () => {
    invites = await topo.invites();
    expect(invites.length).toBeGreaterThanOrEqual(2);
    alice = await signUp(email("alice"), invites[0]!);
    expect(alice.token).toBeTruthy();
    // A single-use code works once.
    expect(await codeOf(signUp(email("mallory"), invites[0]!))).not.toBe("ok");
    const me = await clientsFor(topo.url, alice.token, "grpc-web").auth.getMe({});
    expect(me.user).toMatchObject({ id: alice.id, email: email("alice"), role: Role.USER });
  });

  it("gets the 1000 sign-up credits, granted once from the user.created event", async () => {
    const balance = await eventually(async () => {
      const b = await alice.c.billing.getBalance({});
      expect(b.balance).toBe(SIGNUP_CREDITS);
      return b;
    });
    expect(balance).toMatchObject({ held: 0n, available: SIGNUP_CREDITS });
    const entries = await allLedgerEntries(alice.c);
    expect(entries.map((e) => [e.kind, e.amount, e.balanceDelta])).toEqual([[LedgerEntryKind.GRANT, SIGNUP_CREDITS, SIGNUP_CREDITS]]);
  });

  it("lists the curated catalog over gRPC (HTTP/2) without signing in", async () => {
    const anonymous = clientsFor(topo.url, undefined, "grpc");
    // The scenario chats with a model of the simulator it controls (a cluster may run a simulator per model).
    const served = new Set(await topo.vllm.servedModels());
    textModel = await eventually(async () => {
      const { models } = await anonymous.models.listModels({});
      expect(models.some((m) => m.kind === ModelKind.IMAGE)).toBe(true);
      const available = models.find((m) => m.kind === ModelKind.TEXT && m.status === ModelStatus.AVAILABLE && served.has(m.id));
      expect(available).toBeDefined();
      return available!;
    }, { timeoutMs: 15_000, intervalMs: 250 });
    expect(textModel.prices!.inputPer1kTokens).toBeGreaterThan(0n);
    expect(textModel.contextWindow).toBeGreaterThan(0);
    const { workflows } = await anonymous.models.listWorkflows({});
    expect(workflows.length).toBeGreaterThan(0);
  });

  it.skipIf(!chatRuns)("streams a chat reply delta by delta and keeps it in the conversation", async () => {
    const { conversation } = await alice.c.chat.createConversation({ modelId: textModel.id });
    conversationId = conversation!.id;
    expect(conversation!.modelId).toBe(textModel.id);
    const reply = await readReply(alice.c.chat.sendMessage({ conversationId, text: "Tell me about the moon.", clientMessageId: "e2e-1" }));

    const [first, ...rest] = reply.events;
    const last = rest.at(-1)!;
    expect(first!.event.case).toBe("started");
    const started = first!.event.value as { creditsHeld: bigint; modelId: string; replayed: boolean };
    expect(started).toMatchObject({ modelId: textModel.id, replayed: false });
    expect(started.creditsHeld).toBeGreaterThan(0n);
    const deltas = rest.filter((e) => e.event.case === "delta").map((e) => e.event.value as { text: string; offset: bigint });
    expect(deltas.length).toBeGreaterThanOrEqual(2);
    // Offsets grow with every delta and end at the reply's length.
    expect(deltas.map((d) => d.offset)).toEqual([...deltas.map((d) => d.offset)].sort((a, b) => (a < b ? -1 : 1)));
    expect(deltas.at(-1)!.offset).toBe(BigInt(reply.text.length));
    expect(last.event.case).toBe("finished");
    const finished = last.event.value as { finishReason: FinishReason; promptTokens: bigint; completionTokens: bigint; creditsCharged: bigint; balanceAfter: bigint };
    expect([FinishReason.STOP, FinishReason.LENGTH]).toContain(finished.finishReason);
    expect(finished.creditsCharged).toBe(replyCost(textModel, finished.promptTokens, finished.completionTokens));
    expect(finished.balanceAfter).toBe(SIGNUP_CREDITS - finished.creditsCharged);

    const { messages } = await alice.c.chat.getConversation({ conversationId });
    expect(messages.map((m) => m.role)).toEqual([MessageRole.USER, MessageRole.ASSISTANT]);
    expect(messages[1]).toMatchObject({ id: reply.assistantMessageId, content: reply.text, status: MessageStatus.COMPLETE,
      creditsCharged: finished.creditsCharged, promptTokens: finished.promptTokens, completionTokens: finished.completionTokens });
    charged.set(reply.assistantMessageId, { credits: finished.creditsCharged, promptTokens: finished.promptTokens, completionTokens: finished.completionTokens });
  });

  it.skipIf(!chatRuns)("stops a long reply mid-way over gRPC; the partial reply is kept and billed", async () => {
    // The model stalls after a few tokens, as a long generation would look from outside.
    await topo.vllm.setFaults({ hangRate: 1, hangAfterTokens: 6 });
    try {
      expect(await topo.vllm.faults()).toMatchObject({ hangRate: 1, hangAfterTokens: 6 });
      const abortedBefore = (await topo.vllm.stats()).requests.aborted;
      const grpc = clientsFor(topo.url, alice.token, "grpc");
      let stopped: boolean | undefined;
      const reply = await readReply(
        grpc.chat.sendMessage({ conversationId, text: "Now write a very long story.", clientMessageId: "e2e-2" }),
        async (n, messageId) => {
          if (n === 1) stopped = (await alice.c.chat.stopGeneration({ messageId })).stopped;
        },
      );
      expect(stopped).toBe(true);
      const last = reply.events.at(-1)!;
      expect(last.event.case).toBe("finished");
      const finished = last.event.value as { finishReason: FinishReason; promptTokens: bigint; completionTokens: bigint; creditsCharged: bigint };
      expect(finished.finishReason).toBe(FinishReason.CANCELLED);
      expect(finished.completionTokens).toBeGreaterThan(0n);
      expect(finished.completionTokens).toBeLessThanOrEqual(6n);
      expect(finished.creditsCharged).toBe(replyCost(textModel, finished.promptTokens, finished.completionTokens));
      const { messages } = await alice.c.chat.getConversation({ conversationId });
      expect(messages.at(-1)).toMatchObject({ id: reply.assistantMessageId, content: reply.text, status: MessageStatus.STOPPED,
        creditsCharged: finished.creditsCharged, completionTokens: finished.completionTokens });
      charged.set(reply.assistantMessageId, { credits: finished.creditsCharged, promptTokens: finished.promptTokens, completionTokens: finished.completionTokens });
      // Stopping frees the model: the request to it is cancelled, not left to run (or hang) to its end.
      await eventually(async () => expect((await topo.vllm.stats()).requests.aborted).toBeGreaterThan(abortedBefore));
    } finally {
      await topo.vllm.setFaults({ hangRate: 0 });
    }
  });

  it.skipIf(!chatRuns)("bills exactly the tokens of each reply: balance = grant − charges = the ledger's sum", async () => {
    const totalCharged = [...charged.values()].reduce((sum, c) => sum + c.credits, 0n);
    const balance = await alice.c.billing.getBalance({});
    expect(balance).toEqual(expect.objectContaining({ balance: SIGNUP_CREDITS - totalCharged, held: 0n, available: SIGNUP_CREDITS - totalCharged }));
    const entries = await allLedgerEntries(alice.c);
    expect(entries.reduce((sum, e) => sum + e.balanceDelta, 0n)).toBe(balance.balance);
    const charges = entries.filter((e) => e.kind === LedgerEntryKind.CHARGE);
    expect(charges.map((e) => e.reference).sort()).toEqual([...charged.keys()].sort());
    for (const e of charges) {
      const reply = charged.get(e.reference)!;
      expect(e.amount).toBe(reply.credits);
      expect(e.balanceDelta).toBe(-reply.credits);
      expect(e.usage).toMatchObject({ model: textModel.id, inputTokens: reply.promptTokens, outputTokens: reply.completionTokens });
    }
  });

  it.skipIf(!imagesRun)("runs an image job to completion, followed with WatchJob; only the image produced is charged", async () => {
    const before = (await alice.c.billing.getBalance({})).balance;
    workflow = await eventually(async () => {
      const { workflows } = await alice.c.models.listWorkflows({});
      const w = workflows.find((x) => x.status === ModelStatus.AVAILABLE);
      expect(w).toBeDefined();
      return w!;
    }, { timeoutMs: 15_000, intervalMs: 250 });
    const request = { workflowId: workflow.id, prompt: "a lighthouse at dusk", count: 1, idempotencyKey: `e2e-${run}-1` };
    const submitted = (await alice.c.image.submitJob(request)).job!;
    expect(submitted).toMatchObject({ workflowId: workflow.id, creditsReserved: workflow.pricePerImage, count: 1 });
    expect([JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED]).toContain(submitted.status);
    // Idempotent: the same key returns the same job.
    expect((await alice.c.image.submitJob(request)).job!.id).toBe(submitted.id);

    const seen: JobStatus[] = [];
    let lastJob: Job | undefined;
    for await (const update of alice.c.image.watchJob({ jobId: submitted.id })) {
      lastJob = update.job!;
      if (seen.at(-1) !== lastJob.status) seen.push(lastJob.status);
    }
    expect(seen.at(-1)).toBe(JobStatus.SUCCEEDED);
    job = lastJob!;
    expect(job.images).toHaveLength(1);
    expect(job.creditsCharged).toBe(workflow.pricePerImage);
    image = job.images[0]!;
    expect(image).toMatchObject({ jobId: job.id, contentType: "image/png", prompt: request.prompt, workflowId: workflow.id });
    expect((await alice.c.image.getJob({ jobId: job.id })).job!.status).toBe(JobStatus.SUCCEEDED);

    const after = await eventually(async () => {
      const b = await alice.c.billing.getBalance({});
      expect(b.held).toBe(0n);
      return b;
    });
    expect(after.balance).toBe(before - workflow.pricePerImage);
    const charge = (await allLedgerEntries(alice.c)).filter((e) => e.kind === LedgerEntryKind.CHARGE && e.reference === job.id);
    expect(charge.map((e) => e.amount)).toEqual([workflow.pricePerImage]);
  });

  it.skipIf(!imagesRun)("downloads the PNG from its signed URL, and refuses a tampered one", async () => {
    const url = new URL(image.url, topo.url);
    const res = await topo.download(url.href);
    expect(res.status).toBe(200);
    expect(res.contentType).toBe("image/png");
    expect([...res.bytes.subarray(0, 8)]).toEqual(PNG_SIGNATURE);
    expect(BigInt(res.bytes.length)).toBe(image.sizeBytes);
    const param = signatureParam(url);
    const sig = url.searchParams.get(param)!;
    expect(sig).toBeTruthy();
    // The first character: all its bits are signature bits (a base64 string's last one holds padding too).
    url.searchParams.set(param, `${sig.startsWith("a") ? "b" : "a"}${sig.slice(1)}`);
    expect((await topo.download(url.href)).status).toBe(403);
  });

  it.skipIf(!imagesRun)("lists the image in the gallery", async () => {
    const { images } = await alice.c.image.listImages({});
    expect(images.map((i) => i.id)).toContain(image.id);
    const { jobs } = await alice.c.image.listJobs({});
    expect(jobs.map((j) => j.id)).toContain(job.id);
  });

  it("signs up a second user with another invite code", async () => {
    bob = await signUp(email("bob"), invites[1]!);
    await eventually(async () => expect((await bob.c.billing.getBalance({})).balance).toBe(SIGNUP_CREDITS));
  });

  it.skipIf(!chatRuns)("the second user cannot see or touch the first user's conversations (NOT_FOUND)", async () => {
    const assistantId = [...charged.keys()][0]!;
    expect((await bob.c.chat.listConversations({})).conversations).toEqual([]);
    expect(await codeOf(bob.c.chat.getConversation({ conversationId }))).toBe(Code.NotFound);
    expect(await codeOf(bob.c.chat.renameConversation({ conversationId, title: "mine now" }))).toBe(Code.NotFound);
    expect(await codeOf(bob.c.chat.deleteConversation({ conversationId }))).toBe(Code.NotFound);
    expect(await codeOf(bob.c.chat.stopGeneration({ messageId: assistantId }))).toBe(Code.NotFound);
    expect(await streamCodeOf(bob.c.chat.sendMessage({ conversationId, text: "hi", clientMessageId: "bob-1" }))).toBe(Code.NotFound);
    expect(await streamCodeOf(bob.c.chat.resumeStream({ messageId: assistantId, offset: 0n }))).toBe(Code.NotFound);
    // Still Alice's, untouched.
    const { conversation, messages } = await alice.c.chat.getConversation({ conversationId });
    expect(conversation!.title).not.toBe("mine now");
    expect(messages).toHaveLength(4);
  });

  it.skipIf(!imagesRun)("the second user cannot see or touch the first user's jobs and images (NOT_FOUND)", async () => {
    expect((await bob.c.image.listJobs({})).jobs).toEqual([]);
    expect((await bob.c.image.listImages({})).images).toEqual([]);
    expect(await codeOf(bob.c.image.getJob({ jobId: job.id }))).toBe(Code.NotFound);
    expect(await streamCodeOf(bob.c.image.watchJob({ jobId: job.id }))).toBe(Code.NotFound);
    expect(await codeOf(bob.c.image.cancelJob({ jobId: job.id }))).toBe(Code.NotFound);
    expect(await codeOf(bob.c.image.deleteImage({ imageId: image.id }))).toBe(Code.NotFound);
    expect((await alice.c.image.listImages({})).images.map((i) => i.id)).toContain(image.id);
  });

  it("keeps internal services and admin RPCs out of users' reach", async () => {
    // Internal services are not routed at all (as through Envoy): UNIMPLEMENTED whatever the token.
    expect(await codeOf(alice.c.credits.reserve({ accountId: alice.id, amount: 1n, reason: "chat", reference: "x", idempotencyKey: "x" })))
      .toBe(Code.Unimplemented);
    expect(await codeOf(alice.c.upstreams.getCatalogSnapshot({}))).toBe(Code.Unimplemented);
    const rls = await fetch(`${topo.url}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, {
      method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    expect(rls.status).toBe(404);
    // Admin RPCs are routed but refuse a user.
    expect(await codeOf(alice.c.authAdmin.createInvites({ count: 1, usesPerCode: 1 }))).toBe(Code.PermissionDenied);
    expect(await codeOf(alice.c.billingAdmin.grantCredits({ accountId: alice.id, amount: 1000n, reason: "x", idempotencyKey: "x" })))
      .toBe(Code.PermissionDenied);
    expect(await codeOf(alice.c.modelAdmin.setModelEnabled({ modelId: textModel.id, enabled: false }))).toBe(Code.PermissionDenied);
  });

  describe("admin", () => {
    let admin: Clients;
    let carol: User;

    it("signs in with the admin credentials, creates an invite, and a new user redeems it (once)", async () => {
      const signedIn = await clientsFor(topo.url).auth.signIn(topo.admin);
      expect(signedIn.user!.role).toBe(Role.ADMIN);
      admin = clientsFor(topo.url, signedIn.tokens!.accessToken, "connect-binary");
      const { invites } = await admin.authAdmin.createInvites({ count: 1, usesPerCode: 1, note: `e2e ${run}` });
      expect(invites).toHaveLength(1);
      carol = await signUp(email("carol"), invites[0]!.code);
      expect(await codeOf(signUp(email("dave"), invites[0]!.code))).not.toBe("ok");
    });

    it("grants credits to a user (idempotently)", async () => {
      await eventually(async () => expect((await carol.c.billing.getBalance({})).balance).toBe(SIGNUP_CREDITS));
      const grant = { accountId: carol.id, amount: 250n, reason: "e2e bonus", idempotencyKey: `e2e-grant-${run}` };
      const first = await admin.billingAdmin.grantCredits(grant);
      expect(first.balance).toBe(SIGNUP_CREDITS + 250n);
      const retry = await admin.billingAdmin.grantCredits(grant);
      expect(retry.transferId).toBe(first.transferId);
      expect(await carol.c.billing.getBalance({})).toEqual(expect.objectContaining({ balance: SIGNUP_CREDITS + 250n, available: SIGNUP_CREDITS + 250n }));
      const grants = (await allLedgerEntries(carol.c)).filter((e) => e.kind === LedgerEntryKind.GRANT).map((e) => e.amount);
      expect(grants).toEqual([SIGNUP_CREDITS, 250n]);
    });

    it("disables a model: it disappears for users within a second (and chat refuses it), then comes back", async () => {
      await admin.modelAdmin.setModelEnabled({ modelId: textModel.id, enabled: false, reason: "e2e maintenance" });
      try {
        await eventually(async () => {
          const { models } = await carol.c.models.listModels({});
          expect(models.map((m) => m.id)).not.toContain(textModel.id);
        }, { timeoutMs: 1000, intervalMs: 50 });
        expect((await carol.c.models.getModel({ modelId: textModel.id })).model!.status).toBe(ModelStatus.DISABLED);
        if (chatRuns) {
          // chat-router learns it from the model.changed event; a new reply on that model is refused.
          let attempt = 0;
          await eventually(async () => {
            const clientMessageId = `e2e-disabled-${++attempt}`;
            expect(await streamCodeOf(alice.c.chat.sendMessage({ conversationId, text: "still there?", clientMessageId })))
              .toBe(Code.FailedPrecondition);
          }, { timeoutMs: 5000, intervalMs: 200 });
        }
      } finally {
        await admin.modelAdmin.setModelEnabled({ modelId: textModel.id, enabled: true, reason: "" });
      }
      await eventually(async () => {
        const { models } = await carol.c.models.listModels({});
        expect(models.map((m) => m.id)).toContain(textModel.id);
      }, { timeoutMs: 1000, intervalMs: 50 });
    });
  });
});
