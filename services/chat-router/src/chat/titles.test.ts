import http, { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import type { Lease } from "../upstream/pool.js";
import { cleanTitle, TitleWriter } from "./titles.js";

describe("cleanTitle", () => {
  it("keeps the first line, without quotes, prefixes, markdown or a trailing period", () => {
    expect(cleanTitle('"Trip to Lisbon"')).toBe("Trip to Lisbon");
    expect(cleanTitle("Title: Baking sourdough bread.\nHope this helps!")).toBe("Baking sourdough bread");
    expect(cleanTitle("**Rust lifetimes explained**")).toBe("Rust lifetimes explained");
    expect(cleanTitle("<think>the user asks about cats</think>\nCats and their habits")).toBe("Cats and their habits");
    expect(cleanTitle("\n\n  spaced    out   title  ")).toBe("spaced out title");
  });

  it("shortens long answers and gives up on empty ones", () => {
    const t = cleanTitle("word ".repeat(50));
    expect(t.length).toBeLessThanOrEqual(80);
    expect(t.endsWith("…")).toBe(true);
    expect(cleanTitle('  ""  ')).toBe("");
  });
});

describe("TitleWriter.drain (shutdown)", () => {
  it("abandons a title whose model does not answer instead of waiting for CHAT_TITLE_TIMEOUT", async () => {
    // A model that takes the request and never answers (a stalled replica).
    let arrived!: () => void;
    const requested = new Promise<void>((r) => { arrived = r; });
    const server = createServer(() => arrived());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const agent = new http.Agent({ keepAlive: true });
    const released: string[] = [];
    const saved: string[] = [];
    const writer = new TitleWriter({
      pool: {
        pick: async () => ({ replica: {} as Lease["replica"], model: "m", endpoint: { baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, agent } }),
        release: (_lease, outcome) => void released.push(outcome),
      },
      catalog: { getModel: () => undefined },
      save: async (_id, title) => { saved.push(title); return true; },
      titleModel: "", maxTokens: 16, timeoutMs: 30_000, concurrency: 1,
      log: { warn: () => undefined, debug: () => undefined },
    });
    try {
      writer.schedule({ conversationId: "c1", modelId: "m", userText: "hi", replyText: "hello" });
      writer.schedule({ conversationId: "c2", modelId: "m", userText: "queued", replyText: "behind c1" });
      await requested;
      const started = Date.now();
      await writer.drain();
      expect(Date.now() - started).toBeLessThan(5000); // not the 30 s timeout
      expect(released).toEqual(["neutral"]); // the replica is not blamed, and the queued title never ran
      expect(saved).toEqual([]);
      writer.schedule({ conversationId: "c3", modelId: "m", userText: "late", replyText: "after shutdown" });
      await new Promise((r) => setTimeout(r, 100));
      expect(released).toEqual(["neutral"]);
    } finally {
      agent.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
