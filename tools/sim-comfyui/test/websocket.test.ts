/** The /ws protocol: greeting, message order, binary preview frames, routing by clientId, the node cache. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { Recorder, decodePng, postJson, sdxlGraph } from "./helpers.js";

let sim: ComfySim;
const open: Recorder[] = [];

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 2, nodeMs: 0 });
});

afterEach(() => {
  for (const r of open.splice(0)) r.close();
  sim.reset();
});

afterAll(async () => {
  await sim.close();
});

async function connect(clientId?: string): Promise<Recorder> {
  const r = await Recorder.open(sim.wsUrl, clientId);
  open.push(r);
  return r;
}

async function submit(body: Record<string, unknown>): Promise<string> {
  const r = await postJson(sim.url, "/prompt", body);
  expect(r.status).toBe(200);
  return (r.body as { prompt_id: string }).prompt_id;
}

describe("/ws", () => {
  it("greets with status {exec_info: {queue_remaining}} and the sid (the clientId, or a new hex id)", async () => {
    const named = await connect("alice");
    await named.waitFor((r) => r.json().length > 0);
    expect(named.json()[0]).toEqual({ type: "status", data: { status: { exec_info: { queue_remaining: 0 } }, sid: "alice" } });

    const anonymous = await connect();
    await anonymous.waitFor((r) => r.json().length > 0);
    expect(anonymous.json()[0]?.data.sid).toMatch(/^[0-9a-f]{32}$/);
  });

  it("sends the submitting client ComfyUI's sequence, with one progress + preview per step", async () => {
    const ws = await connect("seq");
    const id = await submit({ prompt: sdxlGraph({ steps: 3, width: 512, height: 512 }), client_id: "seq" });
    await ws.finished(id);

    const seq = ws.json().map((m) => (m.type === "executing" ? `executing:${String(m.data.node)}` : m.type));
    expect(seq).toEqual([
      "status", // greeting
      "status", // queued
      "status", // started
      "execution_start",
      "execution_cached",
      "executing:4", "executing:6", "executing:7", "executing:5", "executing:3",
      "progress", "progress", "progress",
      "executing:8", "executing:9",
      "executed",
      "execution_success",
      "status", // finished
      "executing:null",
    ]);
    const json = ws.json();
    expect(json.find((m) => m.type === "execution_start")?.data).toEqual({ prompt_id: id, timestamp: expect.any(Number) });
    expect(json.find((m) => m.type === "execution_cached")?.data).toEqual({ nodes: [], prompt_id: id, timestamp: expect.any(Number) });
    expect(json.filter((m) => m.type === "progress").map((m) => m.data)).toEqual([1, 2, 3].map((value) => ({ value, max: 3, prompt_id: id, node: "3" })));
    expect(json.find((m) => m.type === "executed")?.data).toEqual({
      node: "9", display_node: "9", prompt_id: id,
      output: { images: [{ filename: "ComfyUI_00001_.png", subfolder: "", type: "output" }] },
    });
    expect(json.filter((m) => m.type === "status").map((m) => (m.data.status as { exec_info: { queue_remaining: number } }).exec_info.queue_remaining))
      .toEqual([0, 1, 1, 0]);
    expect(json.at(-1)?.data).toEqual({ node: null, prompt_id: id });

    // Each progress message is followed by its binary preview frame.
    const kinds = ws.messages.map((m) => ("binary" in m ? "binary" : m.type)).filter((k) => k === "progress" || k === "binary");
    expect(kinds).toEqual(["progress", "binary", "progress", "binary", "progress", "binary"]);
  });

  it("frames previews as 4-byte big-endian type 1, 4-byte format 2 (PNG), then a PNG at 1/8 of the image size", async () => {
    const ws = await connect("frames");
    const id = await submit({ prompt: sdxlGraph({ steps: 2, width: 1024, height: 768 }), client_id: "frames" });
    await ws.finished(id);
    const frames = ws.binary();
    expect(frames).toHaveLength(2);
    for (const f of frames) {
      expect(f.readUInt32BE(0)).toBe(1);
      expect(f.readUInt32BE(4)).toBe(2);
      const png = decodePng(f.subarray(8));
      expect([png.width, png.height]).toEqual([128, 96]);
    }
    // The preview fades in: the last frame differs from the first.
    expect(frames[0]?.equals(frames[1] as Buffer)).toBe(false);
  });

  it("routes prompt events only to the submitting client; status goes to everyone", async () => {
    const mine = await connect("mine");
    const other = await connect("other");
    const id = await submit({ prompt: sdxlGraph({ steps: 2, width: 64, height: 64 }), client_id: "mine" });
    await mine.finished(id);
    await other.waitFor((r) => r.json().filter((m) => m.type === "status").length >= 4);
    expect(new Set(other.json().map((m) => m.type))).toEqual(new Set(["status"]));
    expect(other.binary()).toHaveLength(0);
  });

  it("without client_id: no executing/executed messages, but progress and previews are broadcast (as ComfyUI does)", async () => {
    const watcher = await connect("watcher");
    const id = await submit({ prompt: sdxlGraph({ steps: 2, width: 64, height: 64 }) });
    await watcher.waitFor((r) => r.json().filter((m) => m.type === "status").length >= 4);
    const types = watcher.json().map((m) => m.type);
    expect(types.filter((t) => t === "progress")).toHaveLength(2);
    expect(types).not.toContain("executing");
    expect(types).not.toContain("executed");
    expect(watcher.binary()).toHaveLength(2);
    expect(sim.stats().executions[id]).toBe(1);
  });

  it("reconnecting with the same clientId mid-prompt takes over the session and is told the current node", async () => {
    const first = await connect("rejoin");
    const id = await submit({ prompt: sdxlGraph({ steps: 200, width: 64, height: 64 }), client_id: "rejoin" });
    await first.waitFor((r) => r.json().some((m) => m.type === "progress"));
    const second = await connect("rejoin");
    await second.waitFor((r) => r.json().length >= 2);
    expect(second.json().slice(0, 2)).toEqual([
      { type: "status", data: { status: { exec_info: { queue_remaining: 1 } }, sid: "rejoin" } },
      { type: "executing", data: { node: "3" } },
    ]);
    const before = first.json().length;
    await postJson(sim.url, "/interrupt", { prompt_id: id });
    await second.finished(id);
    // The replaced socket gets nothing more.
    expect(first.json().length).toBe(before);
  });

  it("classic cache: a re-run skips unchanged nodes and re-sends the cached output without generating it again", async () => {
    const ws = await connect("cache");
    const first = await submit({ prompt: sdxlGraph({ steps: 2, width: 64, height: 64 }), client_id: "cache" });
    await ws.finished(first);
    const same = await submit({ prompt: sdxlGraph({ steps: 2, width: 64, height: 64 }), client_id: "cache" });
    await ws.finished(same);
    const changed = await submit({ prompt: sdxlGraph({ steps: 2, width: 64, height: 64, text: "something else" }), client_id: "cache" });
    await ws.finished(changed);

    const of = (id: string) => ws.json().filter((m) => m.data.prompt_id === id);
    const cached = (id: string) => of(id).find((m) => m.type === "execution_cached")?.data.nodes;
    const executing = (id: string) => of(id).filter((m) => m.type === "executing" && m.data.node !== null).map((m) => m.data.node);
    expect(cached(same)).toEqual(["3", "4", "5", "6", "7", "8", "9"]);
    expect(executing(same)).toEqual([]);
    expect(of(same).find((m) => m.type === "executed")?.data.output).toEqual(of(first).find((m) => m.type === "executed")?.data.output);
    expect(cached(changed)).toEqual(["4", "5", "7"]);
    expect(executing(changed)).toEqual(["6", "3", "8", "9"]);
    expect(sim.stats().imagesByPrompt).toEqual({ [first]: 1, [same]: 0, [changed]: 1 });
  });

  it("cache none: every prompt executes every node", async () => {
    const uncached = await startComfySim({ stepMs: 0, nodeMs: 0, cache: "none" });
    try {
      const ws = await Recorder.open(uncached.wsUrl, "nc");
      open.push(ws);
      for (let i = 0; i < 2; i++) {
        const r = await postJson(uncached.url, "/prompt", { prompt: sdxlGraph({ steps: 1, width: 64, height: 64 }), client_id: "nc" });
        const id = (r.body as { prompt_id: string }).prompt_id;
        await ws.finished(id);
        expect(ws.json().find((m) => m.type === "execution_cached" && m.data.prompt_id === id)?.data.nodes).toEqual([]);
      }
      expect(uncached.stats().imagesGenerated).toBe(2);
    } finally {
      await uncached.close();
    }
  });

  it("refuses websocket upgrades on other paths", async () => {
    await expect(Recorder.open(sim.url.replace("http", "ws") + "/not-ws")).rejects.toThrow(/404/);
  });
});
