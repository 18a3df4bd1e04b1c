/** Queueing: client prompt ids, one-at-a-time execution, /queue, /interrupt and /history. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { Recorder, eventually, getJson, postJson, sdxlGraph, waitForHistory } from "./helpers.js";

let sim: ComfySim;
const open: Recorder[] = [];

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 2, nodeMs: 0 });
});

afterEach(async () => {
  // Leave nothing running for the next test.
  await postJson(sim.url, "/queue", { clear: true });
  await postJson(sim.url, "/interrupt");
  for (const r of open.splice(0)) r.close();
  await eventually(async () => ((await getJson(sim.url, "/prompt")).body as { exec_info: { queue_remaining: number } }).exec_info.queue_remaining === 0);
  sim.reset();
});

afterAll(async () => {
  await sim.close();
});

/** A prompt that runs for seconds unless interrupted. */
const slow = (text = "slow") => sdxlGraph({ steps: 2000, width: 64, height: 64, text });
const quick = (text = "quick") => sdxlGraph({ steps: 2, width: 64, height: 64, text });

async function submit(body: Record<string, unknown>): Promise<{ prompt_id: string; number: number }> {
  const r = await postJson(sim.url, "/prompt", body);
  expect(r.status, r.text).toBe(200);
  return r.body as { prompt_id: string; number: number };
}

type Tuple = [number, string, Record<string, unknown>, Record<string, unknown>, string[]];
async function queue(): Promise<{ queue_running: Tuple[]; queue_pending: Tuple[] }> {
  return (await getJson(sim.url, "/queue")).body as { queue_running: Tuple[]; queue_pending: Tuple[] };
}

describe("queue and history", () => {
  it("accepts a client prompt_id and keys the history by it", async () => {
    const r = await submit({ prompt: quick(), prompt_id: "job-123", client_id: "c" });
    expect(r.prompt_id).toBe("job-123");
    const entry = await waitForHistory(sim.url, "job-123");
    expect((entry.prompt as Tuple)[1]).toBe("job-123");
    expect(entry.status).toMatchObject({ status_str: "success", completed: true });
    expect(sim.stats().executions["job-123"]).toBe(1);
  });

  it("refuses a prompt_id that is queued or running; a finished one runs again (and is counted twice)", async () => {
    await submit({ prompt: slow(), prompt_id: "dup-running" });
    await submit({ prompt: quick(), prompt_id: "dup-pending" });
    for (const id of ["dup-running", "dup-pending"]) {
      const again = await postJson(sim.url, "/prompt", { prompt: quick("other"), prompt_id: id });
      expect(again.status).toBe(400);
      expect(again.body).toMatchObject({ error: { type: "duplicate_prompt_id", details: id }, node_errors: {} });
    }
    await postJson(sim.url, "/interrupt");
    await waitForHistory(sim.url, "dup-pending");
    await submit({ prompt: quick("second run"), prompt_id: "dup-pending" });
    await eventually(() => sim.stats().executions["dup-pending"] === 2, 5000, "second execution");
  });

  it("lists [number, prompt_id, prompt, extra_data, outputs_to_execute]; front and number order the pending queue", async () => {
    const running = await submit({ prompt: slow(), client_id: "lister", extra_data: { extra_pnginfo: { workflow: { v: 1 } } } });
    await eventually(async () => (await queue()).queue_running.length === 1);
    const a = await submit({ prompt: quick("a") });
    const b = await submit({ prompt: quick("b") });
    const front = await submit({ prompt: quick("front"), front: true });
    const numbered = await submit({ prompt: quick("numbered"), number: 1.5 });
    expect(front.number).toBeLessThan(0);

    const q = await queue();
    const [tuple] = q.queue_running;
    expect(tuple?.[1]).toBe(running.prompt_id);
    expect(tuple?.[0]).toBe(running.number);
    expect((tuple?.[2] as Record<string, { class_type: string }>)["9"]?.class_type).toBe("SaveImage");
    expect(tuple?.[3]).toEqual({ extra_pnginfo: { workflow: { v: 1 } }, client_id: "lister", create_time: expect.any(Number) });
    expect(tuple?.[4]).toEqual(["9"]);
    expect(q.queue_pending.map((t) => t[1])).toEqual([front.prompt_id, a.prompt_id, numbered.prompt_id, b.prompt_id]);
    expect(((await getJson(sim.url, "/prompt")).body)).toEqual({ exec_info: { queue_remaining: 5 } });
  });

  it("executes one prompt at a time, in queue order", async () => {
    const ws = await Recorder.open(sim.wsUrl, "order");
    open.push(ws);
    const ids: string[] = [];
    for (const t of ["one", "two", "three"]) ids.push((await submit({ prompt: quick(t), client_id: "order" })).prompt_id);
    await ws.finished(ids[2] as string);
    const events = ws.json()
      .filter((m) => m.type === "execution_start" || (m.type === "executing" && m.data.node === null))
      .map((m) => `${m.type === "execution_start" ? "start" : "end"}:${ids.indexOf(m.data.prompt_id as string)}`);
    expect(events).toEqual(["start:0", "end:0", "start:1", "end:1", "start:2", "end:2"]);
  });

  it("POST /queue deletes pending prompts by id and clears the rest; the running one is untouched", async () => {
    const running = await submit({ prompt: slow() });
    const p1 = await submit({ prompt: quick("1") });
    const p2 = await submit({ prompt: quick("2") });
    const p3 = await submit({ prompt: quick("3") });
    expect((await postJson(sim.url, "/queue", { delete: [p2.prompt_id, running.prompt_id, "unknown"] })).status).toBe(200);
    let q = await queue();
    expect(q.queue_running.map((t) => t[1])).toEqual([running.prompt_id]);
    expect(q.queue_pending.map((t) => t[1])).toEqual([p1.prompt_id, p3.prompt_id]);
    await postJson(sim.url, "/api/queue", { clear: true });
    q = await queue();
    expect(q.queue_pending).toEqual([]);
    expect(q.queue_running.map((t) => t[1])).toEqual([running.prompt_id]);
    expect(sim.stats().executions[p1.prompt_id]).toBeUndefined();
  });

  it("POST /interrupt with another prompt's id does nothing; with the running id it interrupts that prompt", async () => {
    const ws = await Recorder.open(sim.wsUrl, "intr");
    open.push(ws);
    const running = await submit({ prompt: slow(), client_id: "intr" });
    const pending = await submit({ prompt: quick() });
    await ws.waitFor((r) => r.json().some((m) => m.type === "progress"));
    await postJson(sim.url, "/interrupt", { prompt_id: pending.prompt_id });
    await postJson(sim.url, "/interrupt", { prompt_id: "no-such-prompt" });
    const progressBefore = ws.json().filter((m) => m.type === "progress").length;
    await ws.waitFor((r) => r.json().filter((m) => m.type === "progress").length > progressBefore + 5);
    expect((await queue()).queue_running.map((t) => t[1])).toEqual([running.prompt_id]);

    await postJson(sim.url, "/interrupt", { prompt_id: running.prompt_id });
    await ws.finished(running.prompt_id);
    const interrupted = ws.json().find((m) => m.type === "execution_interrupted");
    expect(interrupted?.data).toEqual({
      prompt_id: running.prompt_id, node_id: "3", node_type: "KSampler", executed: ["4", "6", "7", "5"], timestamp: expect.any(Number),
    });
    const entry = await waitForHistory(sim.url, running.prompt_id);
    expect(entry.status).toMatchObject({ status_str: "error", completed: false });
    expect((entry.status as { messages: [string][] }).messages.map((m) => m[0])).toEqual(["execution_start", "execution_cached", "execution_interrupted"]);
    expect(entry.outputs).toEqual({});
    // The queue moves on.
    expect((await waitForHistory(sim.url, pending.prompt_id)).status).toMatchObject({ status_str: "success" });
    expect(sim.stats().interrupted).toBe(1);
  });

  it("POST /interrupt without a body interrupts whatever runs", async () => {
    const running = await submit({ prompt: slow() });
    await eventually(async () => (await queue()).queue_running.length === 1);
    const r = await fetch(`${sim.url}/interrupt`, { method: "POST" });
    expect(r.status).toBe(200);
    expect((await waitForHistory(sim.url, running.prompt_id)).status).toMatchObject({ status_str: "error", completed: false });
  });

  it("GET /history returns the newest max_items in order, honours offset; POST /history deletes and clears", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const { prompt_id } = await submit({ prompt: quick(`h${i}`) });
      ids.push(prompt_id);
      await waitForHistory(sim.url, prompt_id);
    }
    expect(Object.keys((await getJson(sim.url, "/history")).body as object)).toEqual(ids);
    expect(Object.keys((await getJson(sim.url, "/history?max_items=2")).body as object)).toEqual(ids.slice(2));
    expect(Object.keys((await getJson(sim.url, "/api/history?max_items=2&offset=1")).body as object)).toEqual(ids.slice(1, 3));
    expect((await getJson(sim.url, "/history?max_items=lots")).status).toBe(400);
    expect((await getJson(sim.url, "/history/unknown-id")).body).toEqual({});

    await postJson(sim.url, "/history", { delete: [ids[0]] });
    expect(Object.keys((await getJson(sim.url, "/history")).body as object)).toEqual(ids.slice(1));
    await postJson(sim.url, "/history", { clear: true });
    expect((await getJson(sim.url, "/history")).body).toEqual({});
  });

  it("a history entry has ComfyUI's shape", async () => {
    const { prompt_id, number } = await submit({ prompt: sdxlGraph({ steps: 1, width: 64, height: 64, batch: 2, prefix: "luna/job" }), client_id: "h" });
    const entry = await waitForHistory(sim.url, prompt_id);
    expect(entry).toEqual({
      prompt: [number, prompt_id, expect.any(Object), { client_id: "h", create_time: expect.any(Number) }, ["9"]],
      outputs: { "9": { images: [
        { filename: "job_00001_.png", subfolder: "luna", type: "output" },
        { filename: "job_00002_.png", subfolder: "luna", type: "output" },
      ] } },
      status: {
        status_str: "success",
        completed: true,
        messages: [
          ["execution_start", { prompt_id, timestamp: expect.any(Number) }],
          ["execution_cached", { nodes: [], prompt_id, timestamp: expect.any(Number) }],
          ["execution_success", { prompt_id, timestamp: expect.any(Number) }],
        ],
      },
      meta: { "9": { node_id: "9", display_node: "9", parent_node: null, real_node_id: "9" } },
    });
    // The next save with the same prefix continues the numbering.
    const next = await submit({ prompt: sdxlGraph({ steps: 1, width: 64, height: 64, prefix: "luna/job", seed: 5 }) });
    const nextEntry = await waitForHistory(sim.url, next.prompt_id);
    expect((nextEntry.outputs as Record<string, { images: { filename: string }[] }>)["9"]?.images[0]?.filename).toBe("job_00003_.png");
  });
});

describe("generation pace", () => {
  it("setTiming changes the time per step for the next prompts, and reset restores the startup pace", async () => {
    sim.setTiming({ stepMs: 40 });
    expect(sim.timing()).toEqual({ stepMs: 40, nodeMs: 0 });
    await submit({ prompt: sdxlGraph({ steps: 5, width: 64, height: 64, text: "paced" }), prompt_id: "paced" });
    const entry = await waitForHistory(sim.url, "paced");
    const messages = (entry.status as { messages: Array<[string, { timestamp: number }]> }).messages;
    const at = (name: string) => messages.find((m) => m[0] === name)![1].timestamp;
    // Five sampler steps of 40 ms each at least (more on a busy machine, never less).
    expect(at("execution_success") - at("execution_start")).toBeGreaterThanOrEqual(5 * 40 - 1);
    sim.reset();
    expect(sim.timing()).toEqual({ stepMs: 2, nodeMs: 0 });
  });

  it("setTiming refuses what is not a pace", () => {
    expect(() => sim.setTiming({ stepMs: -1 })).toThrow(RangeError);
    expect(() => sim.setTiming({ nodeMs: Number.NaN })).toThrow(/nodeMs must be a non-negative number/);
    expect(() => sim.setTiming({ speed: 2 } as never)).toThrow(/unknown timing field speed/);
    expect(sim.timing()).toEqual({ stepMs: 2, nodeMs: 0 });
  });
});
