/** The remaining HTTP routes: /system_stats, /object_info, /view (incl. path checks), /free, /api prefix, errors. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { decodePng, getJson, postJson, sdxlGraph, waitForHistory } from "./helpers.js";

let sim: ComfySim;
let saved: { filename: string; subfolder: string; type: string };
let previewed: { filename: string; subfolder: string; type: string };

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 0, nodeMs: 0, maxBodyBytes: 64 * 1024 });
  const graph = sdxlGraph({ steps: 1, width: 320, height: 200, prefix: "tests/route" });
  graph["20"] = { class_type: "PreviewImage", inputs: { images: ["8", 0] }, _meta: { title: "Preview Image" } };
  const r = await postJson(sim.url, "/prompt", { prompt: graph });
  const id = (r.body as { prompt_id: string }).prompt_id;
  const outputs = (await waitForHistory(sim.url, id)).outputs as Record<string, { images: typeof saved[] }>;
  saved = outputs["9"]?.images[0] as typeof saved;
  previewed = outputs["20"]?.images[0] as typeof saved;
});

afterAll(async () => {
  await sim.close();
});

const view = (q: Record<string, string>) => fetch(`${sim.url}/view?${new URLSearchParams(q)}`);

describe("routes", () => {
  it("GET /system_stats has ComfyUI's system and devices fields", async () => {
    const r = await getJson(sim.url, "/system_stats");
    expect(r.status).toBe(200);
    const body = r.body as { system: Record<string, unknown>; devices: Record<string, unknown>[] };
    expect(body.system).toMatchObject({
      os: "posix", python_version: expect.any(String), embedded_python: false, comfyui_version: expect.any(String),
      pytorch_version: expect.any(String), ram_total: expect.any(Number), ram_free: expect.any(Number),
    });
    expect(body.devices).toEqual([{
      name: expect.any(String), type: "cuda", index: 0, vram_total: expect.any(Number), vram_free: expect.any(Number),
      torch_vram_total: expect.any(Number), torch_vram_free: expect.any(Number),
    }]);
  });

  it("GET /object_info describes the catalog in ComfyUI's format", async () => {
    const info = (await getJson(sim.url, "/object_info")).body as Record<string, Record<string, unknown>>;
    for (const name of ["CheckpointLoaderSimple", "LoraLoader", "CLIPTextEncode", "EmptyLatentImage", "EmptySD3LatentImage", "KSampler", "VAEDecode", "SaveImage", "PreviewImage"]) {
      expect(info[name], name).toMatchObject({ name, input: { required: expect.any(Object) }, output: expect.any(Array), output_name: expect.any(Array), category: expect.any(String), output_node: expect.any(Boolean) });
    }
    expect(info.CheckpointLoaderSimple).toMatchObject({ output: ["MODEL", "CLIP", "VAE"], output_name: ["MODEL", "CLIP", "VAE"], output_node: false, category: "loaders" });
    expect((info.KSampler?.input as { required: Record<string, unknown[]> }).required.steps).toEqual(["INT", expect.objectContaining({ default: 20, min: 1, max: 10000 })]);
    expect(info.SaveImage).toMatchObject({ output: [], output_node: true, input: { required: { filename_prefix: ["STRING", expect.objectContaining({ default: "ComfyUI" })] } } });
  });

  it("GET /object_info/{class} returns one class, or {} for an unknown one", async () => {
    const one = (await getJson(sim.url, "/api/object_info/KSampler")).body as Record<string, unknown>;
    expect(Object.keys(one)).toEqual(["KSampler"]);
    expect((await getJson(sim.url, "/object_info/NoSuchNode")).body).toEqual({});
  });

  it("GET /view returns the PNG with its headers, at the size from the latent node", async () => {
    const r = await view(saved);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("image/png");
    expect(r.headers.get("content-disposition")).toBe(`filename="${saved.filename}"`);
    const png = decodePng(Buffer.from(await r.arrayBuffer()));
    expect([png.width, png.height]).toEqual([320, 200]);
    expect(saved).toEqual({ filename: "route_00001_.png", subfolder: "tests", type: "output" });
  });

  it("PreviewImage outputs land in temp and are served with type=temp (or the [temp] annotation)", async () => {
    expect(previewed.type).toBe("temp");
    expect(previewed.filename).toMatch(/^ComfyUI_temp_[a-z]{5}_00001_\.png$/);
    expect((await view(previewed)).status).toBe(200);
    expect((await view({ filename: `${previewed.filename} [temp]` })).status).toBe(200);
    expect((await view({ ...previewed, type: "output" })).status).toBe(404);
  });

  it("GET /view refuses path traversal: 400 for .. or absolute filenames, 403 for a subfolder outside output", async () => {
    expect((await view({ filename: "../secret.png", type: "output" })).status).toBe(400);
    expect((await view({ filename: "tests/../../etc/passwd", type: "output" })).status).toBe(400);
    expect((await view({ filename: "/etc/passwd", type: "output" })).status).toBe(400);
    expect((await view({ filename: saved.filename, subfolder: "../../etc", type: "output" })).status).toBe(403);
    expect((await view({ filename: saved.filename, subfolder: "/etc", type: "output" })).status).toBe(403);
    expect((await view({ filename: saved.filename, subfolder: "tests/../tests", type: "output" })).status).toBe(200);
  });

  it("GET /view: 404 for an unknown file or no filename, 400 for an unknown type", async () => {
    expect((await view({ filename: "nope.png", type: "output" })).status).toBe(404);
    expect((await fetch(`${sim.url}/view`)).status).toBe(404);
    expect((await view({ ...saved, type: "elsewhere" })).status).toBe(400);
  });

  it("every route is also under /api", async () => {
    for (const path of ["/system_stats", "/queue", "/history", "/prompt", "/object_info/VAEDecode", "/embeddings", "/models/checkpoints"]) {
      const [plain, api] = await Promise.all([getJson(sim.url, path), getJson(sim.url, `/api${path}`)]);
      expect(api.status, path).toBe(200);
      expect(api.text, path).toBe(plain.text);
    }
    expect((await fetch(`${sim.url}/api/view?${new URLSearchParams(saved)}`)).status).toBe(200);
  });

  it("POST /free answers 200 with or without a body", async () => {
    expect((await postJson(sim.url, "/free", { unload_models: true, free_memory: true })).status).toBe(200);
    expect((await postJson(sim.url, "/free")).status).toBe(200);
  });

  it("unknown routes are 404, wrong methods 405, /ws without upgrade 400, oversized bodies 413, malformed bodies 400", async () => {
    expect((await getJson(sim.url, "/nope")).status).toBe(404);
    expect((await getJson(sim.url, "/ws")).status).toBe(400); // a plain GET, no websocket upgrade
    expect((await fetch(`${sim.url}/prompt`, { method: "DELETE" })).status).toBe(405);
    expect((await getJson(sim.url, "/interrupt")).status).toBe(405);
    const big = await postJson(sim.url, "/prompt", { prompt: sdxlGraph({ text: "x".repeat(100 * 1024) }) });
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ error: { type: "request_too_large" } });
    const bad = await postJson(sim.url, "/queue", "{not json");
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { message: "Invalid JSON body" } });
  });
});
