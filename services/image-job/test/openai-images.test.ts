// Issue 22: `POST /v1/images/generations` with the official `openai` SDK against the real image platform (billing,
// model-registry, image-job, an in-process worker, the ComfyUI simulator): the request waits for the job and answers
// with signed URLs or base64 PNGs; one hold and one charge per call; SDK error classes for an unknown workflow, a
// size the workflow does not offer, no credits and a bad token.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { eventually, PNG_SIGNATURE, startHarness, type Harness } from "./harness.js";

let h: Harness;

beforeAll(async () => {
  h = await startHarness({ signupCredits: 1000 });
});

afterAll(async () => {
  await h?.close();
});

async function client(): Promise<{ id: string; openai: OpenAI }> {
  const user = await h.newUser();
  return { id: user.id, openai: new OpenAI({ apiKey: await h.userToken(user.id), baseURL: `${h.baseUrl}/v1`, maxRetries: 0 }) };
}

describe("POST /v1/images/generations with the openai SDK", () => {
  it("waits for the job and answers signed URLs serving the PNGs; charges the images once", async () => {
    const { id, openai } = await client();
    const r = await openai.images.generate({ model: "flux-schnell", prompt: "a lighthouse at dusk", n: 2, size: "1024x1024" });
    expect(r.data).toHaveLength(2);
    for (const img of r.data!) {
      expect(img.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/images\//);
      const png = Buffer.from(await (await fetch(img.url!)).arrayBuffer());
      expect(png.subarray(0, 8)).toEqual(PNG_SIGNATURE);
    }
    const job = (r as unknown as { luna: { job_id: string; credits_charged: string } }).luna;
    expect(job.credits_charged).toBe("100");
    expect(await h.balance(id)).toMatchObject({ balance: 900n, held: 0n });
    await h.assertLedgerConsistent();
  });

  it("answers base64 PNGs with response_format b64_json", async () => {
    const { id, openai } = await client();
    const r = await openai.images.generate({ model: "flux-schnell", prompt: "a red fox", response_format: "b64_json" });
    expect(r.data).toHaveLength(1);
    expect(r.data![0]!.url).toBeUndefined();
    expect(Buffer.from(r.data![0]!.b64_json!, "base64").subarray(0, 8)).toEqual(PNG_SIGNATURE);
    expect(await h.balance(id)).toMatchObject({ balance: 950n, held: 0n });
  });

  it("gives NotFoundError for an unknown workflow, BadRequestError for a bad size or format, AuthenticationError for a bad token", async () => {
    const { id, openai } = await client();
    const nf = await openai.images.generate({ model: "no-such-workflow", prompt: "x" }).catch((e: unknown) => e);
    expect(nf).toBeInstanceOf(OpenAI.NotFoundError);
    const size = await openai.images.generate({ model: "flux-schnell", prompt: "x", size: "7x7" as never }).catch((e: unknown) => e);
    expect(size).toBeInstanceOf(OpenAI.BadRequestError);
    const format = await openai.images.generate({ model: "flux-schnell", prompt: "x", response_format: "gif" as never }).catch((e: unknown) => e);
    expect(format).toBeInstanceOf(OpenAI.BadRequestError);
    expect((format as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("response_format");
    expect(await h.balance(id)).toMatchObject({ balance: 1000n, held: 0n });
    const bad = new OpenAI({ apiKey: "not-a-token", baseURL: `${h.baseUrl}/v1`, maxRetries: 0 });
    expect(await bad.images.generate({ model: "flux-schnell", prompt: "x" }).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("cancels the job, releasing its credits, when the client leaves before the image is ready", async () => {
    const { id, openai } = await client();
    const before = h.sim.timing();
    h.sim.setTiming({ stepMs: 500 });
    try {
      const ac = new AbortController();
      const pending = openai.images.generate({ model: "flux-schnell", prompt: "a slow painting" }, { signal: ac.signal }).catch((e: unknown) => e);
      // Wait until the job holds its credits, then leave.
      await eventually(async () => ((await h.balance(id)).held > 0n ? true : undefined), 10_000, "the hold");
      ac.abort();
      expect(await pending).toBeInstanceOf(OpenAI.APIUserAbortError);
      await eventually(async () => ((await h.balance(id)).held === 0n ? true : undefined), 15_000, "the hold released");
      expect(await h.balance(id)).toMatchObject({ balance: 1000n, held: 0n });
    } finally {
      h.sim.setTiming(before);
    }
  });

  it("gives RateLimitError insufficient_quota when the credits do not cover the images", async () => {
    const { openai } = await client();
    // Six jobs of 4 images (50 credits each) at once: 1200 credits asked of 1000, so at least one is refused for credits.
    const results = await Promise.all(Array.from({ length: 6 }, () =>
      openai.images.generate({ model: "flux-schnell", prompt: "x", n: 4 }).then(() => "ok" as const, (e: unknown) => e)));
    const refused = results.filter((r) => r !== "ok");
    expect(refused.length).toBeGreaterThanOrEqual(1);
    for (const e of refused) {
      expect(e).toBeInstanceOf(OpenAI.RateLimitError);
      expect((e as InstanceType<typeof OpenAI.RateLimitError>).code).toBe("insufficient_quota");
    }
    await h.assertLedgerConsistent();
  });
});
