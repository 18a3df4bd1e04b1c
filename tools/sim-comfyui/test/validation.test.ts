/** POST /prompt validation: each kind of error with ComfyUI's 400 body and node_errors. */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startComfySim, type ComfySim } from "../src/index.js";
import { postJson, sdxlGraph } from "./helpers.js";

let sim: ComfySim;

beforeAll(async () => {
  sim = await startComfySim({ stepMs: 0, nodeMs: 0 });
});

afterAll(async () => {
  await sim.close();
});

type Body = {
  error: { type: string; message: string; details: string; extra_info: Record<string, unknown> };
  node_errors: Record<string, { errors: { type: string; message: string; details: string; extra_info: Record<string, unknown> }[]; dependent_outputs: string[]; class_type: string }>;
};

async function reject(prompt: unknown): Promise<Body> {
  const r = await postJson(sim.url, "/prompt", { prompt, client_id: "v" });
  expect(r.status).toBe(400);
  return r.body as Body;
}

describe("POST /prompt validation", () => {
  it("accepts a valid graph with 200 {prompt_id, number, node_errors: {}}", async () => {
    const r = await postJson(sim.url, "/prompt", { prompt: sdxlGraph({ steps: 1, width: 64, height: 64 }), client_id: "v" });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ prompt_id: expect.stringMatching(/^[0-9a-f-]{36}$/), number: expect.any(Number), node_errors: {} });
  });

  it("unknown class_type → invalid_prompt naming the node", async () => {
    const g = sdxlGraph();
    g["11"] = { class_type: "UpscaleModelLoaderX", inputs: {}, _meta: { title: "x" } };
    const body = await reject(g);
    expect(body).toEqual({
      error: { type: "invalid_prompt", message: "Cannot execute because node UpscaleModelLoaderX does not exist.", details: "Node ID '#11'", extra_info: {} },
      node_errors: {},
    });
  });

  it("node without class_type → invalid_prompt", async () => {
    const g: Record<string, unknown> = sdxlGraph();
    g["12"] = { inputs: {} };
    const body = await reject(g);
    expect(body.error).toMatchObject({ type: "invalid_prompt", message: "Cannot execute because a node is missing the class_type property.", details: "Node ID '#12'" });
  });

  it("no output node → prompt_no_outputs", async () => {
    const g = sdxlGraph();
    delete g["9"];
    const body = await reject(g);
    expect(body).toEqual({ error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} }, node_errors: {} });
  });

  it("missing required input → required_input_missing on that node, with dependent outputs", async () => {
    const g = sdxlGraph();
    delete g["3"]!.inputs.latent_image;
    const body = await reject(g);
    expect(body.error.type).toBe("prompt_outputs_failed_validation");
    expect(body.error.message).toBe("Prompt outputs failed validation");
    expect(body.node_errors).toEqual({
      "3": {
        errors: [{ type: "required_input_missing", message: "Required input is missing", details: "latent_image", extra_info: { input_name: "latent_image" } }],
        dependent_outputs: ["9"],
        class_type: "KSampler",
      },
    });
  });

  it("link to a missing node → exception_during_inner_validation (KeyError) on the linking node", async () => {
    const g = sdxlGraph();
    g["8"]!.inputs.samples = ["99", 0];
    const body = await reject(g);
    const err = body.node_errors["8"]?.errors[0];
    expect(err).toMatchObject({ type: "exception_during_inner_validation", details: "'99'", extra_info: { exception_type: "KeyError", input_name: "samples", linked_node: ["99", 0] } });
    expect(body.node_errors["8"]?.dependent_outputs).toEqual(["9"]);
  });

  it("a bad link on the output node itself → exception_during_validation", async () => {
    const g = sdxlGraph();
    g["9"]!.inputs.images = ["nope", 0];
    const body = await reject(g);
    expect(body.node_errors["9"]?.errors[0]).toMatchObject({ type: "exception_during_validation", message: "Exception when validating node" });
  });

  it("out-of-range output index → IndexError", async () => {
    const g = sdxlGraph();
    g["6"]!.inputs.clip = ["4", 3];
    const body = await reject(g);
    expect(body.node_errors["6"]?.errors[0]).toMatchObject({
      type: "exception_during_inner_validation", details: "tuple index out of range", extra_info: { exception_type: "IndexError" },
    });
  });

  it("malformed link → bad_linked_input", async () => {
    const g = sdxlGraph();
    g["8"]!.inputs.vae = ["4"];
    const body = await reject(g);
    expect(body.node_errors["8"]?.errors[0]).toMatchObject({ type: "bad_linked_input", details: "vae" });
  });

  it("wrong type on a link → return_type_mismatch", async () => {
    const g = sdxlGraph();
    g["3"]!.inputs.model = ["4", 1]; // CLIP where MODEL is expected
    const body = await reject(g);
    expect(body.node_errors["3"]?.errors[0]).toEqual({
      type: "return_type_mismatch",
      message: "Return type mismatch between linked nodes",
      details: "model, CLIP != MODEL",
      extra_info: { input_name: "model", input_config: ["MODEL", { tooltip: "The model used for denoising the input latent." }], received_type: "CLIP", linked_node: ["4", 1] },
    });
  });

  it("value out of range, unconvertible value and unknown combo value are each reported", async () => {
    const g = sdxlGraph();
    g["3"]!.inputs.steps = 0;
    g["3"]!.inputs.cfg = "lots";
    g["3"]!.inputs.scheduler = "wobbly";
    g["5"]!.inputs.width = 100000;
    const body = await reject(g);
    const types = body.node_errors["3"]?.errors.map((e) => e.type);
    expect(types).toEqual(["value_smaller_than_min", "invalid_input_type", "value_not_in_list"]);
    expect(body.node_errors["3"]?.errors[0]?.message).toBe("Value 0 smaller than min of 1");
    expect(body.node_errors["3"]?.errors[2]?.details).toBe(
      "scheduler: 'wobbly' not in ['simple', 'sgm_uniform', 'karras', 'exponential', 'ddim_uniform', 'beta', 'normal', 'linear_quadratic', 'kl_optimal']",
    );
    expect(body.node_errors["5"]?.errors[0]).toMatchObject({ type: "value_bigger_than_max", message: "Value 100000 bigger than max of 16384" });
  });

  it("an unknown checkpoint is value_not_in_list, as on a server without that file", async () => {
    const g = sdxlGraph();
    g["4"]!.inputs.ckpt_name = "missing.safetensors";
    const body = await reject(g);
    expect(body.node_errors["4"]?.errors[0]).toMatchObject({ type: "value_not_in_list", extra_info: { input_name: "ckpt_name", received_value: "missing.safetensors" } });
  });

  it("converts numeric strings like ComfyUI (int('20') works) and stores the converted prompt", async () => {
    const g = sdxlGraph({ width: 64, height: 64 });
    g["3"]!.inputs.steps = "2";
    g["3"]!.inputs.seed = { __value__: 7 };
    const r = await postJson(sim.url, "/prompt", { prompt: g });
    expect(r.status).toBe(200);
    const id = (r.body as { prompt_id: string }).prompt_id;
    const queue = await (await fetch(`${sim.url}/queue`)).json() as { queue_running: unknown[][]; queue_pending: unknown[][] };
    const entry = [...queue.queue_running, ...queue.queue_pending].find((t) => t[1] === id);
    const history = await (await fetch(`${sim.url}/history/${id}`)).json() as Record<string, { prompt: unknown[] }>;
    const stored = ((entry ?? history[id]?.prompt) as unknown[])[2] as Record<string, { inputs: Record<string, unknown> }>;
    expect(stored["3"]?.inputs.steps).toBe(2);
    expect(stored["3"]?.inputs.seed).toBe(7);
  });

  it("one broken output among two valid ones: 200 with the broken node in node_errors, only good outputs run", async () => {
    const g = sdxlGraph({ width: 64, height: 64, steps: 1 });
    g["20"] = { class_type: "PreviewImage", inputs: { images: ["21", 0] }, _meta: { title: "Preview Image" } };
    g["21"] = { class_type: "VAEDecode", inputs: { samples: ["3", 0] }, _meta: { title: "VAE Decode" } }; // vae missing
    const r = await postJson(sim.url, "/prompt", { prompt: g });
    expect(r.status).toBe(200);
    const body = r.body as { prompt_id: string; node_errors: Body["node_errors"] };
    expect(Object.keys(body.node_errors)).toEqual(["21"]);
    expect(body.node_errors["21"]?.dependent_outputs).toEqual(["20"]);
  });

  it("a dependency cycle is a validation error, not a hang", async () => {
    const g = sdxlGraph();
    g["3"]!.inputs.latent_image = ["3", 0];
    const body = await reject(g);
    expect(body.node_errors["3"]?.errors[0]?.details).toBe("Dependency cycle detected");
  });

  it("missing prompt, non-object prompt and bad prompt_id each get a 400 JSON error", async () => {
    const noPrompt = await postJson(sim.url, "/prompt", { client_id: "x" });
    expect(noPrompt.status).toBe(400);
    expect(noPrompt.body).toEqual({ error: { type: "no_prompt", message: "No prompt provided", details: "No prompt provided", extra_info: {} }, node_errors: {} });
    const notObject = await postJson(sim.url, "/prompt", { prompt: [1, 2] });
    expect((notObject.body as Body).error.type).toBe("invalid_prompt");
    const badId = await postJson(sim.url, "/prompt", { prompt: sdxlGraph(), prompt_id: { a: 1 } });
    expect(badId.status).toBe(400);
    expect((badId.body as Body).error.message).toMatch(/prompt_id/);
  });

  it("counts rejected prompts in stats", () => {
    // The 15 rejections above: 12 graph errors and 3 malformed requests.
    expect(sim.stats().rejected).toBe(15);
  });
});
