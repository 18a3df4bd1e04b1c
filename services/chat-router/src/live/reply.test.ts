import { describe, expect, it } from "vitest";
import { LiveReply } from "./reply.js";

describe("LiveReply", () => {
  it("gives each reader every delta once, joining what it fell behind on, then the final event", async () => {
    const r = new LiveReply("m");
    const a = r.read(0);
    r.push("Hel");
    expect(await a.next()).toMatchObject({ case: "delta", value: { text: "Hel", offset: 3n } });
    r.push("lo");
    r.push(" world");
    expect(await a.next()).toMatchObject({ case: "delta", value: { text: "lo world", offset: 11n } });
    const pending = a.next();
    r.push("!");
    expect(await pending).toMatchObject({ case: "delta", value: { text: "!", offset: 12n } });
    r.finish({ case: "error", value: { $typeName: "luna.chat.v1.ReplyError", code: "x", message: "", promptTokens: 0n, completionTokens: 0n, creditsCharged: 0n, balanceAfter: 0n } });
    expect((await a.next())?.case).toBe("error");
    expect(await a.next()).toBeUndefined();
    expect(r.text()).toBe("Hello world!");
    expect(r.deltas).toBe(4);
  });

  it("resumes from any offset, also inside a delta", async () => {
    const r = new LiveReply("m");
    r.push("abc");
    r.push("def");
    expect(await r.read(4).next()).toMatchObject({ value: { text: "ef", offset: 6n } });
    expect(await r.read(3).next()).toMatchObject({ value: { text: "def", offset: 6n } });
    const beyond = r.read(100);
    r.push("g");
    expect(await beyond.next()).toMatchObject({ value: { text: "g", offset: 7n } });
  });

  it("tells when the last reader leaves before the end, and not after", () => {
    const r = new LiveReply("m");
    let gone = 0;
    r.onReadersGone = () => gone++;
    const a = r.read();
    const b = r.read();
    a.close();
    expect(gone).toBe(0);
    b.close();
    expect(gone).toBe(1);
    const c = r.read();
    r.finish({ case: "finished", value: { $typeName: "luna.chat.v1.ReplyFinished", finishReason: 1, promptTokens: 0n, completionTokens: 0n, creditsCharged: 0n, balanceAfter: 0n } });
    c.close();
    expect(gone).toBe(1);
  });

  it("unblocks a waiting reader when it is closed", async () => {
    const r = new LiveReply("m");
    const a = r.read();
    const p = a.next();
    a.close();
    expect(await p).toBeUndefined();
  });
});
