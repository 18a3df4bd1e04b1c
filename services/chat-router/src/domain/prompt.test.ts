import { describe, expect, it } from "vitest";
import { buildPrompt, type HistoryMessage } from "./prompt.js";

const overhead = { perMessage: 5, perPrompt: 3 };
const msg = (role: "user" | "assistant", tokens: number, content = `${role}-${tokens}`): HistoryMessage => ({ role, content, tokens });

describe("buildPrompt", () => {
  it("keeps everything when it fits, with the system prompt first", () => {
    const history = [msg("user", 10, "u1"), msg("assistant", 20, "a1"), msg("user", 5, "u2")];
    const p = buildPrompt({ systemPrompt: "be brief", systemTokens: 4, history, contextWindow: 1000, maxOutputTokens: 100, minOutputTokens: 16, overhead });
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    expect(p.messages.map((m) => m.content)).toEqual(["be brief", "u1", "a1", "u2"]);
    // 3 + (4+5) + (10+5) + (20+5) + (5+5)
    expect(p.promptTokens).toBe(62);
    expect(p.outputTokens).toBe(100);
    expect(p.dropped).toBe(0);
  });

  it("drops whole turns oldest first at the window edge, never half a turn", () => {
    const history = [msg("user", 10, "u1"), msg("assistant", 10, "a1"), msg("user", 10, "u2"), msg("assistant", 10, "a2"), msg("user", 10, "u3")];
    // fixed = 3 + 15 (u3) = 18; each turn costs 30; window 100 with 40 output leaves 42 for history: one turn.
    const p = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 100, maxOutputTokens: 40, minOutputTokens: 16, overhead });
    expect(p.ok && p.messages.map((m) => m.content)).toEqual(["u2", "a2", "u3"]);
    expect(p.ok && p.promptTokens).toBe(48);
    expect(p.ok && p.dropped).toBe(2);
    // One token short of both turns: still one.
    const q = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 117, maxOutputTokens: 40, minOutputTokens: 16, overhead });
    expect(q.ok && q.messages.map((m) => m.content)).toEqual(["u2", "a2", "u3"]);
    // Exactly enough for both turns.
    const r = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 118, maxOutputTokens: 40, minOutputTokens: 16, overhead });
    expect(r.ok && r.messages.map((m) => m.content)).toEqual(["u1", "a1", "u2", "a2", "u3"]);
    expect(r.ok && r.promptTokens + r.outputTokens).toBe(118);
  });

  it("never starts the history with a reply", () => {
    const history = [msg("assistant", 1, "orphan"), msg("user", 1, "u1")];
    const p = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 1000, maxOutputTokens: 10, minOutputTokens: 1, overhead });
    expect(p.ok && p.messages.map((m) => m.content)).toEqual(["u1"]);
  });

  it("keeps a turn whose reply is missing (a failed reply)", () => {
    const history = [msg("user", 1, "u1"), msg("user", 1, "u2")];
    const p = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 1000, maxOutputTokens: 10, minOutputTokens: 1, overhead });
    expect(p.ok && p.messages.map((m) => m.content)).toEqual(["u1", "u2"]);
  });

  it("lowers the output budget when the new message leaves less room, down to the minimum", () => {
    const history = [msg("user", 900)];
    const p = buildPrompt({ systemPrompt: "", systemTokens: 0, history, contextWindow: 1000, maxOutputTokens: 500, minOutputTokens: 16, overhead });
    expect(p.ok && p.outputTokens).toBe(1000 - 908);
    const q = buildPrompt({ systemPrompt: "", systemTokens: 0, history: [msg("user", 980)], contextWindow: 1000, maxOutputTokens: 500, minOutputTokens: 16, overhead });
    expect(q).toEqual({ ok: false, reason: "message_too_long", requiredTokens: 3 + 985 + 16, contextWindow: 1000 });
  });

  it("requires the history to end with the new user message", () => {
    expect(() => buildPrompt({ systemPrompt: "", systemTokens: 0, history: [msg("assistant", 1)], contextWindow: 100, maxOutputTokens: 10, minOutputTokens: 1, overhead })).toThrow();
  });
});
