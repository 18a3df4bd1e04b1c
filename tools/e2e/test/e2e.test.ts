// Luna end to end, as a client sees it: one scenario, written once, run against both local topologies — the
// all-in-one process and one process per service behind the dev gateway. Steps run in order and build on each
// other (a user signs up, chats, makes an image, ...). Steps of a service the topology does not run yet are skipped;
// their assertions are complete and run as soon as the service is there.
import { Code } from "@connectrpc/connect";
import { LedgerEntryKind } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { FinishReason, MessageRole, MessageStatus, type ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { JobStatus, type Image, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ModelKind, ModelStatus, type Model, type Workflow } from "@luna/contracts/luna/models/v1/models_pb.js";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { allLedgerEntries, clientsFor, codeOf, eventually, streamCodeOf, type Clients } from "../src/clients.js";
import { ADMIN, TOPOLOGIES, servicesOf, startTopology, type Topology } from "../src/topologies.js";

const SIGNUP_CREDITS = 1000n;
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

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

describe.each(TOPOLOGIES)("Luna end to end: %s", (topologyName) => {
  const running = servicesOf(topologyName);
  const chatRuns = running.has("chat-router");
  // The split platform runs the worker as its own process; the all-in-one hosts it with image-job.
  const imagesRun = running.has("image-job") && (topologyName === "all-in-one" || running.has("image-worker"));

  let topo: Topology;
  let alice: User;
  let bob: User;
  let textModel: Model;
  let conversationId = "";
  const charged = new Map<string, { credits: bigint; promptTokens: bigint; completionTokens: bigint }>();
  let job: Job;
  let image: Image;
  let workflow: Workflow;

  async function signUp(email: string, inviteCode: string): Promise<User> {
    const res = await clientsFor(topo.url).auth.signUp({ email, password: "a long enough passphrase", inviteCode, displayName: email.split("@")[0]! });
    const token = res.tokens!.accessToken;
    return { id: res.user!.id, token, c: clientsFor(topo.url, token) };
  }

  beforeAll(async () => {
    topo = await startTopology(topologyName);
  }, 180_000);

  afterAll(async () => {
    await topo?.stop();
  }, 60_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail" && topo?.output()) {
      process.stderr.write(`---- last output of the ${topologyName} processes ----\n${topo.output().split("\n").slice(-60).join("\n")}\n`);
    }
  });

  it("redeems a dev invite code from invites.txt (once) and signs in, over Connect and gRPC-Web", async () => {
    const codes = topo.devInvites();
    expect(codes.length).toBeGreaterThanOrEqual(2);
    alice = await signUp(`alice-${topologyName}@e2e.test`, codes[0]!);
    expect(alice.token).toBeTruthy();
    // A single-use code works once.
    expect(await codeOf(signUp(`mallory-${topologyName}@e2e.test`, codes[0]!))).not.toBe("ok");
    const me = await clientsFor(topo.url, alice.token, "grpc-web").auth.getMe({});
    expect(me.user).toMatchObject({ id: alice.id, email: `alice-${topologyName}@e2e.test`, role: Role.USER });
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
    textModel = await eventually(async () => {
      const { models } = await anonymous.models.listModels({});
      expect(models.some((m) => m.kind === ModelKind.IMAGE)).toBe(true);
      const available = models.find((m) => m.kind === ModelKind.TEXT && m.status === ModelStatus.AVAILABLE);
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
    topo.vllm.setFaults({ hangRate: 1, hangAfterTokens: 6 });
    try {
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
    } finally {
      topo.vllm.setFaults({ hangRate: 0 });
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
    const request = { workflowId: workflow.id, prompt: "a lighthouse at dusk", count: 1, idempotencyKey: `e2e-${topologyName}-1` };
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
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    const bytes = new Uint8Array(await res.arrayBuffer());
    expect([...bytes.subarray(0, 8)]).toEqual(PNG_SIGNATURE);
    expect(BigInt(bytes.length)).toBe(image.sizeBytes);
    const sig = url.searchParams.get("sig")!;
    url.searchParams.set("sig", `${sig.slice(0, -1)}${sig.endsWith("A") ? "B" : "A"}`);
    expect((await fetch(url)).status).toBe(403);
  });

  it.skipIf(!imagesRun)("lists the image in the gallery", async () => {
    const { images } = await alice.c.image.listImages({});
    expect(images.map((i) => i.id)).toContain(image.id);
    const { jobs } = await alice.c.image.listJobs({});
    expect(jobs.map((j) => j.id)).toContain(job.id);
  });

  it("signs up a second user with another dev invite code", async () => {
    bob = await signUp(`bob-${topologyName}@e2e.test`, topo.devInvites()[1]!);
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

    it("signs in with the dev admin credentials, creates an invite, and a new user redeems it (once)", async () => {
      const signedIn = await clientsFor(topo.url).auth.signIn(ADMIN);
      expect(signedIn.user!.role).toBe(Role.ADMIN);
      admin = clientsFor(topo.url, signedIn.tokens!.accessToken, "connect-binary");
      const { invites } = await admin.authAdmin.createInvites({ count: 1, usesPerCode: 1, note: "e2e" });
      expect(invites).toHaveLength(1);
      carol = await signUp(`carol-${topologyName}@e2e.test`, invites[0]!.code);
      expect(await codeOf(signUp(`dave-${topologyName}@e2e.test`, invites[0]!.code))).not.toBe("ok");
    });

    it("grants credits to a user (idempotently)", async () => {
      await eventually(async () => expect((await carol.c.billing.getBalance({})).balance).toBe(SIGNUP_CREDITS));
      const grant = { accountId: carol.id, amount: 250n, reason: "e2e bonus", idempotencyKey: `e2e-grant-${topologyName}` };
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
