/** Fault injection: silent websockets, execution errors, crash/restart, slow /view, and the /_sim control endpoint. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { Recorder, eventually, getJson, postJson, sdxlGraph, waitForHistory } from "./helpers.js";

let sim: ComfySim;
const open: Recorder[] = [];

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 1, nodeMs: 0 });
});

afterEach(() => {
  for (const r of open.splice(0)) r.close();
  sim.reset();
});

afterAll(async () => {
  await sim.close();
});

async function connect(clientId: string, target: ComfySim = sim): Promise<Recorder> {
  const r = await Recorder.open(target.wsUrl, clientId);
  open.push(r);
  return r;
}

const quick = (text = "quick", steps = 3) => sdxlGraph({ steps, width: 64, height: 64, text });

async function submit(body: Record<string, unknown>, target: ComfySim = sim): Promise<string> {
  const r = await postJson(target.url, "/prompt", body);
  expect(r.status, r.text).toBe(200);
  return (r.body as { prompt_id: string }).prompt_id;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("websocket faults", () => {
  it("wsSilent: nothing arrives on the websocket, yet the prompt completes and only /history shows it", async () => {
    sim.setFaults({ wsSilent: true });
    const ws = await connect("silent");
    const id = await submit({ prompt: quick(), client_id: "silent" });
    const entry = await waitForHistory(sim.url, id);
    expect(entry.status).toMatchObject({ status_str: "success", completed: true });
    await sleep(50);
    expect(ws.messages).toEqual([]);

    // Lifting the fault brings messages back on the same connection.
    sim.setFaults({});
    const next = await submit({ prompt: quick("after"), client_id: "silent" });
    await ws.finished(next);
  });

  it("wsSilentAfter: the websocket stalls mid-prompt; completion is visible only through /history", async () => {
    sim.setFaults({ wsSilentAfter: 3 });
    const ws = await connect("stall");
    const id = await submit({ prompt: quick("stall", 5), client_id: "stall" });
    const entry = await waitForHistory(sim.url, id);
    expect(entry.status).toMatchObject({ status_str: "success" });
    await sleep(50);
    const mine = ws.json().filter((m) => m.data.prompt_id === id).map((m) => m.type);
    expect(mine).toEqual(["execution_start", "execution_cached", "executing"]);
    expect(ws.json().some((m) => m.type === "executing" && m.data.node === null)).toBe(false);
    expect(ws.binary()).toEqual([]);
  });
});

describe("execution errors", () => {
  it("failOnNth: the 2nd prompt fails with execution_error; the history records it; the queue goes on", async () => {
    sim.setFaults({ failOnNth: [2] });
    const ws = await connect("err");
    const ids: string[] = [];
    for (const t of ["a", "b", "c"]) ids.push(await submit({ prompt: quick(t), client_id: "err" }));
    await ws.finished(ids[2] as string);

    const error = ws.json().find((m) => m.type === "execution_error");
    expect(error?.data).toMatchObject({
      prompt_id: ids[1], node_id: "3", node_type: "KSampler", executed: ["6"],
      exception_message: expect.stringContaining("Simulated failure"), exception_type: "RuntimeError",
      traceback: expect.any(Array), current_inputs: {}, current_outputs: ["4", "5", "7"],
    });
    const mine = ws.json().filter((m) => m.data.prompt_id === ids[1]).map((m) => m.type);
    expect(mine).toEqual(["execution_start", "execution_cached", "executing", "executing", "execution_error", "executing"]);

    const failed = await waitForHistory(sim.url, ids[1] as string);
    expect(failed.status).toMatchObject({ status_str: "error", completed: false });
    expect((failed.status as { messages: [string][] }).messages.map((m) => m[0])).toEqual(["execution_start", "execution_cached", "execution_error"]);
    expect(failed.outputs).toEqual({});
    expect((await waitForHistory(sim.url, ids[2] as string)).status).toMatchObject({ status_str: "success" });
    expect(sim.stats()).toMatchObject({ failed: 1, succeeded: 2 });
  });

  it("failMarker with failNode: fails prompts containing the marker, at the named node, with the configured exception", async () => {
    sim.setFaults({ failMarker: "##boom##", failNode: "SaveImage", failExceptionType: "OSError", failMessage: "disk full" });
    const ws = await connect("marker");
    const ok = await submit({ prompt: quick("fine"), client_id: "marker" });
    const bad = await submit({ prompt: quick("please ##boom## now"), client_id: "marker" });
    await ws.finished(bad);
    expect((await waitForHistory(sim.url, ok)).status).toMatchObject({ status_str: "success" });
    const error = ws.json().find((m) => m.type === "execution_error");
    expect(error?.data).toMatchObject({ prompt_id: bad, node_id: "9", node_type: "SaveImage", exception_type: "OSError", exception_message: "disk full\n" });
    expect(error?.data.executed).toEqual(expect.arrayContaining(["3", "6", "8"]));
  });

  it("failRate draws from a seeded PRNG: the same seed fails the same prompts", async () => {
    const pattern = async (seed: number) => {
      const s = await startComfySim({ stepMs: 0, nodeMs: 0, faultSeed: seed, faults: { failRate: 0.5 } });
      try {
        const out: string[] = [];
        for (let i = 0; i < 12; i++) {
          const id = await submit({ prompt: quick(`r${i}`, 1) }, s);
          out.push(((await waitForHistory(s.url, id)).status as { status_str: string }).status_str);
        }
        return out;
      } finally {
        await s.close();
      }
    };
    const a = await pattern(7);
    expect(await pattern(7)).toEqual(a);
    expect(a).toContain("error");
    expect(a).toContain("success");
  });

  it("a batch too large for the simulated GPU fails with torch.OutOfMemoryError", async () => {
    const small = await startComfySim({ stepMs: 0, nodeMs: 0, maxBatchPixels: 512 * 512 });
    try {
      const ws = await connect("oom", small);
      const id = await submit({ prompt: sdxlGraph({ width: 512, height: 512, batch: 2 }), client_id: "oom" }, small);
      await ws.finished(id);
      expect(ws.json().find((m) => m.type === "execution_error")?.data).toMatchObject({
        node_type: "KSampler", exception_type: "torch.OutOfMemoryError", exception_message: expect.stringContaining("ran out of memory"),
      });
    } finally {
      await small.close();
    }
  });

  it("a filename_prefix outside the output folder fails at SaveImage, as in ComfyUI", async () => {
    const ws = await connect("escape");
    const id = await submit({ prompt: sdxlGraph({ steps: 1, width: 64, height: 64, prefix: "../../etc/x" }), client_id: "escape" });
    await ws.finished(id);
    expect(ws.json().find((m) => m.type === "execution_error")?.data).toMatchObject({
      node_type: "SaveImage", exception_type: "Exception", exception_message: expect.stringContaining("Saving image outside the output folder is not allowed"),
    });
  });
});

describe("crash and restart", () => {
  it("restart() loses the queue, the running prompt and the history; images and stats survive; same port", async () => {
    const done = await submit({ prompt: quick("done") });
    const doneEntry = await waitForHistory(sim.url, done);
    const image = (doneEntry.outputs as Record<string, { images: Record<string, string>[] }>)["9"]?.images[0] as Record<string, string>;

    const ws = await connect("crash");
    const running = await submit({ prompt: quick("running", 5000), client_id: "crash" });
    const pending = await submit({ prompt: quick("pending") });
    await ws.waitFor((r) => r.json().some((m) => m.type === "progress"));

    const port = sim.port;
    const restarting = sim.restart({ downMs: 100 });
    await ws.waitFor((r) => r.closed, 2000, "websocket to close");
    await expect(fetch(`${sim.url}/queue`)).rejects.toThrow(); // down: connection refused
    await restarting;

    expect(sim.port).toBe(port);
    expect((await getJson(sim.url, "/queue")).body).toEqual({ queue_running: [], queue_pending: [] });
    expect((await getJson(sim.url, `/history/${running}`)).body).toEqual({});
    expect((await getJson(sim.url, `/history/${done}`)).body).toEqual({});
    expect((await fetch(`${sim.url}/view?${new URLSearchParams(image)}`)).status).toBe(200);
    const stats = sim.stats();
    expect(stats).toMatchObject({ restarts: 1, lost: 1, succeeded: 1 });
    expect(stats.executions[running]).toBe(1);
    expect(stats.executions[pending]).toBeUndefined();

    // It works normally afterwards, and numbering of queue positions restarted.
    const again = await postJson(sim.url, "/prompt", { prompt: quick("again") });
    expect(again.body).toMatchObject({ number: 0 });
  });

  it("keepHistoryOnRestart keeps finished prompts' history", async () => {
    const keeper = await startComfySim({ stepMs: 0, nodeMs: 0, keepHistoryOnRestart: true });
    try {
      const id = await submit({ prompt: quick() }, keeper);
      await waitForHistory(keeper.url, id);
      await keeper.restart();
      expect(Object.keys((await getJson(keeper.url, `/history/${id}`)).body as object)).toEqual([id]);
    } finally {
      await keeper.close();
    }
  });

  it("after restart() resolves, a client's next request succeeds (its pooled keep-alive sockets were already closed)", async () => {
    for (let i = 0; i < 20; i++) {
      expect((await fetch(`${sim.url}/prompt`)).status).toBe(200);
      await sim.restart();
      expect((await fetch(`${sim.url}/prompt`)).status).toBe(200);
    }
  });

  it("crashOnNth: the server dies half-way through the Nth prompt's sampling and comes back empty", async () => {
    sim.setFaults({ crashOnNth: 2, crashDownMs: 50 });
    const ws = await connect("crashnth");
    const first = await submit({ prompt: quick("first", 4), client_id: "crashnth" });
    const second = await submit({ prompt: quick("second", 10), client_id: "crashnth" });
    const third = await submit({ prompt: quick("third", 4), client_id: "crashnth" });
    await ws.waitFor((r) => r.closed, 5000, "crash");
    const progress = ws.json().filter((m) => m.type === "progress" && m.data.prompt_id === second).map((m) => m.data.value);
    expect(progress).toEqual([1, 2, 3, 4]);
    await eventually(async () => (await fetch(`${sim.url}/prompt`).then((r) => r.ok, () => false)), 5000, "server back");
    expect((await getJson(sim.url, `/history/${second}`)).body).toEqual({});
    expect((await getJson(sim.url, "/queue")).body).toEqual({ queue_running: [], queue_pending: [] });
    expect(sim.stats()).toMatchObject({ restarts: 1, lost: 1, succeeded: 1, executions: { [first]: 1, [second]: 1 } });
    expect(sim.stats().executions[third]).toBeUndefined();
  });
});

describe("slow /view", () => {
  it("viewDelayMs delays image downloads by at least that long", async () => {
    const id = await submit({ prompt: quick() });
    const image = ((await waitForHistory(sim.url, id)).outputs as Record<string, { images: Record<string, string>[] }>)["9"]?.images[0] as Record<string, string>;
    sim.setFaults({ viewDelayMs: 150 });
    const started = performance.now();
    const r = await fetch(`${sim.url}/view?${new URLSearchParams(image)}`);
    expect(r.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
  });
});

describe("/_sim control endpoint", () => {
  it("POST /_sim/faults sets faults, GET reads them back, invalid ones are a 400 naming the field", async () => {
    const set = await postJson(sim.url, "/_sim/faults", { failOnNth: [3], wsSilent: true });
    expect(set.status).toBe(200);
    expect(set.body).toEqual({ failOnNth: [3], wsSilent: true });
    expect((await getJson(sim.url, "/_sim/faults")).body).toEqual({ failOnNth: [3], wsSilent: true });
    expect(sim.faults()).toEqual({ failOnNth: [3], wsSilent: true });

    const bad = await postJson(sim.url, "/_sim/faults", { failRate: 2 });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { type: "invalid_faults", message: expect.stringContaining("failRate") } });
    expect((await postJson(sim.url, "/_sim/faults", { bogus: 1 })).status).toBe(400);
    expect(() => sim.setFaults({ crashOnNth: 0 })).toThrow(RangeError);
  });

  it("GET /_sim/stats counts executions per prompt id; POST /_sim/reset clears state and faults", async () => {
    const id = await submit({ prompt: quick(), prompt_id: "stat-me" });
    await waitForHistory(sim.url, id);
    const stats = (await getJson(sim.url, "/_sim/stats")).body as Record<string, unknown>;
    expect(stats).toMatchObject({ executions: { "stat-me": 1 }, imagesByPrompt: { "stat-me": 1 }, queued: 1, succeeded: 1, imagesGenerated: 1 });

    sim.setFaults({ wsSilent: true });
    expect((await postJson(sim.url, "/_sim/reset")).status).toBe(200);
    expect(sim.faults()).toEqual({});
    expect(sim.stats().executions).toEqual({});
    expect((await getJson(sim.url, "/history")).body).toEqual({});
  });

  it("POST /_sim/restart answers 202, then restarts", async () => {
    const id = await submit({ prompt: quick() });
    await waitForHistory(sim.url, id);
    const r = await postJson(sim.url, "/_sim/restart", { downMs: 0 });
    expect(r.status).toBe(202);
    await eventually(() => sim.stats().restarts === 1, 2000, "restart");
    await eventually(async () => (await fetch(`${sim.url}/history/${id}`).then((x) => x.json(), () => null)) !== null, 2000, "server back");
    expect((await getJson(sim.url, `/history/${id}`)).body).toEqual({});
    expect((await postJson(sim.url, "/_sim/restart", { downMs: -1 })).status).toBe(400);
  });
});

describe("cold-start mode", () => {
  it("refuses prompts (503) for the configured time after start, then runs them", async () => {
    const cold = await startComfySim({ stepMs: 1, nodeMs: 0, coldStartMs: 400 });
    try {
      const started = Date.now();
      const refused = await postJson(cold.url, "/prompt", { prompt: quick("cold") });
      expect(refused.status).toBe(503);
      expect((await getJson(cold.url, "/system_stats")).status).toBe(503);
      expect((await getJson(cold.url, "/queue")).status).toBe(503);
      expect(cold.stats().queued).toBe(0);
      expect((await getJson(cold.url, "/_sim/cold-start")).body).toMatchObject({ loading: true, coldStartMs: 400 });
      await eventually(async () => (await getJson(cold.url, "/system_stats")).status === 200, 5000, "the end of the cold start");
      expect(Date.now() - started).toBeGreaterThanOrEqual(390);
      const id = await submit({ prompt: quick("warm") }, cold);
      await waitForHistory(cold.url, id);
    } finally {
      await cold.close();
    }
  });

  it("starts a cold start on POST /_sim/cold-start and after POST /_sim/reset; rejects bad lengths", async () => {
    expect((await postJson(sim.url, "/_sim/cold-start", { ms: 300 })).status).toBe(200);
    expect((await postJson(sim.url, "/prompt", { prompt: quick() })).status).toBe(503);
    await eventually(async () => (await getJson(sim.url, "/queue")).status === 200, 5000, "the end of the cold start");
    expect((await postJson(sim.url, "/_sim/cold-start", { ms: -1 })).status).toBe(400);
    expect((await postJson(sim.url, "/_sim/cold-start", { seconds: 1 })).status).toBe(400);
    const c = await startComfySim({ coldStartMs: 200 });
    try {
      await eventually(async () => (await getJson(c.url, "/queue")).status === 200, 5000, "the end of the cold start");
      expect((await postJson(c.url, "/_sim/reset")).status).toBe(200);
      expect((await getJson(c.url, "/queue")).status).toBe(503);
    } finally {
      await c.close();
    }
    await expect(startComfySim({ coldStartMs: -1 })).rejects.toThrow(/coldStartMs/);
  });
});
