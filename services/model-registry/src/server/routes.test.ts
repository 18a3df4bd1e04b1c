import { beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { ImageSizeSchema, ModelKind, ModelStatus, UpstreamProbe } from "@luna/contracts/luna/models/v1/models_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelAdminService, ModelSpecSchema, type ModelSpec, type WorkflowSpec } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";
import { invalidPageSize, invalidPageToken } from "@luna/kit";
import { createMemoryStore, type MemoryStore } from "../data/memory-store.js";
import { modelInputToSpec, workflowInputToSpec } from "../domain/convert.js";
import { defaultCatalog } from "../domain/seed-catalog.js";
import { createTestAuth, type TestAuth } from "../../test/support.js";
import { routes } from "./routes.js";

const catalog = defaultCatalog({ vllmUrl: "http://vllm:8000", comfyuiUrl: "http://comfy:8188" });
const silent = { info() {} };

let store: MemoryStore;
let auth: TestAuth;
let publicClient: Client<typeof ModelService>;
let adminClient: Client<typeof ModelAdminService>;
let upstreamClient: Client<typeof ModelUpstreamService>;
let changed: string[];

async function codeOf(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}

/** A message's fields as a plain init object (spreading a message would keep its $typeName, and create() would
 * then take nested plain objects as messages). */
function fieldsOf<T extends { $typeName: string }>(m: T): Omit<T, "$typeName"> {
  const { $typeName: _, ...rest } = m;
  return rest;
}

function textSpec(over: Partial<Omit<ModelSpec, "$typeName" | "$unknown">> = {}): ModelSpec {
  return create(ModelSpecSchema, { ...fieldsOf(modelInputToSpec(catalog.models[0]!)), id: "new-model", ...over });
}

function sdxlSpec(): WorkflowSpec {
  return workflowInputToSpec(catalog.workflows.find((w) => w.id === "sdxl")!);
}

beforeEach(async () => {
  store = createMemoryStore();
  await store.seed(catalog.models, catalog.workflows);
  store.events.length = 0;
  auth ??= await createTestAuth();
  changed = [];
  const transport = createRouterTransport(routes({ store, log: silent, onModelChanged: (m) => changed.push(m.id) }), {
    router: { interceptors: [auth.interceptor] },
  });
  publicClient = createClient(ModelService, transport);
  adminClient = createClient(ModelAdminService, transport);
  upstreamClient = createClient(ModelUpstreamService, transport);
});

describe("ModelService (public)", () => {
  it("lists enabled models without sign-in, in display order, with prices and limits", async () => {
    const { models, page } = await publicClient.listModels({});
    expect(models.map((m) => m.id)).toEqual(catalog.models.map((m) => m.id));
    const llama = models[0]!;
    expect(llama).toMatchObject({ kind: ModelKind.TEXT, contextWindow: 32768, maxOutputTokens: 4096, tags: ["abliterated", "fast"] });
    expect(llama.prices).toMatchObject({ inputPer1kTokens: 10n, outputPer1kTokens: 10n, perImage: 0n });
    expect(llama.status).toBe(ModelStatus.OFFLINE); // not probed yet
    expect(page?.nextPageToken).toBe("");
  });

  it("filters by kind", async () => {
    const text = await publicClient.listModels({ kind: ModelKind.TEXT });
    const image = await publicClient.listModels({ kind: ModelKind.IMAGE });
    expect(text.models.every((m) => m.kind === ModelKind.TEXT) && text.models.length === 3).toBe(true);
    expect(image.models.map((m) => m.id)).toEqual(["flux1-schnell", "sdxl-base-1.0"]);
  });

  it("pages with opaque tokens", async () => {
    const first = await publicClient.listModels({ page: { pageSize: 2 } });
    const second = await publicClient.listModels({ page: { pageSize: 2, pageToken: first.page!.nextPageToken } });
    const third = await publicClient.listModels({ page: { pageSize: 2, pageToken: second.page!.nextPageToken } });
    expect([...first.models, ...second.models, ...third.models].map((m) => m.id)).toEqual(catalog.models.map((m) => m.id));
    expect(third.page?.nextPageToken).toBe("");
  });

  it.each<[string, object, string, string?]>([
    ["an unknown kind", { kind: 7 }, "kind"],
    // Page errors in the kit's wording, as in every service's lists.
    ["a negative page size", { page: { pageSize: -1 } }, "page.page_size", invalidPageSize("page.page_size", -1).rawMessage],
    ["a forged page token", { page: { pageToken: "not-a-token" } }, "page.page_token", invalidPageToken("page.page_token").rawMessage],
  ])("rejects %s", async (_name, req, field, exact) => {
    const { code, message } = await codeOf(publicClient.listModels(req));
    expect(code).toBe(Code.InvalidArgument);
    expect(message.startsWith(`${field}:`)).toBe(true);
    if (exact) expect(message).toBe(exact);
  });

  it("hides disabled models from the list but still shows them by id, with the reason", async () => {
    await adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false, reason: "license review" }, await auth.as("admin"));
    expect((await publicClient.listModels({})).models.map((m) => m.id)).not.toContain("qwen2.5-7b-instruct");
    const { model } = await publicClient.getModel({ modelId: "qwen2.5-7b-instruct" });
    expect(model).toMatchObject({ status: ModelStatus.DISABLED, statusReason: "license review" });
  });

  it("answers NOT_FOUND for an unknown model and INVALID_ARGUMENT for a malformed id", async () => {
    expect((await codeOf(publicClient.getModel({ modelId: "nope" }))).code).toBe(Code.NotFound);
    const bad = await codeOf(publicClient.getModel({ modelId: "../../etc/passwd" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.message).toMatch(/^model_id:/);
    expect((await codeOf(publicClient.getModel({ modelId: "" }))).message).toBe("model_id: is required");
  });

  it("lists workflows with their user-visible parameters and price, never their template", async () => {
    const { workflows } = await publicClient.listWorkflows({});
    expect(workflows.map((w) => w.id)).toEqual(["flux-schnell", "sdxl"]);
    const sdxl = workflows[1]!;
    expect(sdxl.pricePerImage).toBe(50n);
    expect(sdxl.parameters).toMatchObject({ maxImages: 4, minSteps: 15, maxSteps: 50, defaultSteps: 30, negativePromptSupported: true, defaultStyleId: "" });
    expect(sdxl.parameters?.styles.map((s) => s.id)).toEqual(["pixel-art", "extra-detail"]);
    expect(JSON.stringify(sdxl, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toMatch(/safetensors|class_type/);
    expect(workflows[0]!.parameters?.negativePromptSupported).toBe(false);
    expect((await publicClient.listWorkflows({ modelId: "flux1-schnell" })).workflows.map((w) => w.id)).toEqual(["flux-schnell"]);
    // Unknown ids (luna.common.v1's rule): the resource asked for is NOT_FOUND, an unknown filter INVALID_ARGUMENT.
    expect(await codeOf(publicClient.listWorkflows({ modelId: "no-such-model" }))).toMatchObject({ code: Code.InvalidArgument, message: expect.stringMatching(/model_id: the catalog has no model "no-such-model"/) });
    expect((await codeOf(publicClient.getModel({ modelId: "no-such-model" }))).code).toBe(Code.NotFound);
  });

  it("hides workflows that are disabled or whose model is disabled", async () => {
    const admin = await auth.as("admin");
    await adminClient.setWorkflowEnabled({ workflowId: "flux-schnell", enabled: false }, admin);
    await adminClient.setModelEnabled({ modelId: "sdxl-base-1.0", enabled: false }, admin);
    expect((await publicClient.listWorkflows({})).workflows).toEqual([]);
    const { workflow } = await publicClient.getWorkflow({ workflowId: "sdxl" });
    expect(workflow?.status).toBe(ModelStatus.DISABLED);
    expect(workflow?.statusReason).toMatch(/model sdxl-base-1.0 disabled/);
    expect((await codeOf(publicClient.getWorkflow({ workflowId: "nope" }))).code).toBe(Code.NotFound);
    expect((await codeOf(publicClient.getWorkflow({ workflowId: "Bad Id" }))).code).toBe(Code.InvalidArgument);
    expect((await codeOf(publicClient.listWorkflows({ modelId: "Bad Id" }))).code).toBe(Code.InvalidArgument);
  });
});

describe("access rules", () => {
  const adminCalls: Array<[string, (o?: object) => Promise<unknown>]> = [
    ["UpsertModel", (o) => adminClient.upsertModel({ model: textSpec() }, o)],
    ["SetModelEnabled", (o) => adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false }, o)],
    ["UpsertWorkflow", (o) => adminClient.upsertWorkflow({ workflow: sdxlSpec() }, o)],
    ["SetWorkflowEnabled", (o) => adminClient.setWorkflowEnabled({ workflowId: "sdxl", enabled: false }, o)],
    ["GetAdminCatalog", (o) => adminClient.getAdminCatalog({}, o)],
  ];

  it.each(adminCalls)("%s needs an admin token", async (_name, call) => {
    expect((await codeOf(call())).code).toBe(Code.Unauthenticated);
    expect((await codeOf(call(await auth.as("user")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(call(await auth.as("internal")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(call({ headers: { authorization: "Bearer forged.token.here" } }))).code).toBe(Code.Unauthenticated);
    expect(store.events).toEqual([]);
    await expect(call(await auth.as("admin"))).resolves.toBeDefined();
  });

  it.each<[string, (o?: object) => Promise<unknown>]>([
    ["GetCatalogSnapshot", (o) => upstreamClient.getCatalogSnapshot({}, o)],
    ["GetModelUpstream", (o) => upstreamClient.getModelUpstream({ modelId: "qwen2.5-7b-instruct" }, o)],
  ])("%s is internal only (never a user or admin token)", async (_name, call) => {
    expect((await codeOf(call())).code).toBe(Code.Unauthenticated);
    expect((await codeOf(call(await auth.as("user")))).code).toBe(Code.PermissionDenied);
    expect((await codeOf(call(await auth.as("admin")))).code).toBe(Code.PermissionDenied);
    await expect(call(await auth.as("internal"))).resolves.toBeDefined();
  });
});

describe("ModelAdminService", () => {
  it("creates then updates a model, bumping its version and announcing each change", async () => {
    const admin = await auth.as("admin");
    const created = await adminClient.upsertModel({ model: textSpec() }, admin);
    expect(created.created).toBe(true);
    expect(created.model?.model).toMatchObject({ id: "new-model", version: 1n, status: ModelStatus.OFFLINE });
    const updated = await adminClient.upsertModel({ model: textSpec({ displayName: "Renamed", prices: { inputPer1kTokens: 20n, outputPer1kTokens: 30n, perImage: 0n } as never }), expectedVersion: 1n }, admin);
    expect(updated.created).toBe(false);
    expect(updated.model?.model).toMatchObject({ displayName: "Renamed", version: 2n, prices: { inputPer1kTokens: 20n, outputPer1kTokens: 30n } });
    expect(store.events.map((e) => [e.case, e.case === "model" ? e.value.model?.version : 0n])).toEqual([["model", 1n], ["model", 2n]]);
    expect(changed).toEqual(["new-model", "new-model"]);
  });

  const badSpecs: Array<[string, Partial<Omit<ModelSpec, "$typeName" | "$unknown">>, string]> = [
    ["id", { id: "Bad/Id" }, "model.id"],
    ["display_name", { displayName: "" }, "model.display_name"],
    ["description", { description: "x".repeat(5000) }, "model.description"],
    ["kind", { kind: ModelKind.UNSPECIFIED }, "model.kind"],
    ["tags", { tags: ["UPPER"] }, "model.tags[0]"],
    ["context_window", { contextWindow: -1 }, "model.context_window"],
    ["max_output_tokens", { maxOutputTokens: 0 }, "model.max_output_tokens"],
    ["prices", { prices: { inputPer1kTokens: -5n, outputPer1kTokens: 10n, perImage: 0n } as never }, "model.prices.input_per_1k_tokens"],
    ["upstream URL", { upstream: { baseUrls: ["javascript:alert(1)"], resolveUrl: "", apiKeyEnv: "", servedModelName: "" } as never }, "model.upstream.base_urls[0]"],
    ["api key env", { upstream: { baseUrls: ["http://a:1"], resolveUrl: "", apiKeyEnv: "hunter2 secret", servedModelName: "" } as never }, "model.upstream.api_key_env"],
    ["cold start without scale to zero", { coldStartSeconds: 60 }, "model.cold_start_seconds"],
    ["scale to zero without a cold start", { scaleToZero: true }, "model.cold_start_seconds"],
    ["cold start of a day", { scaleToZero: true, coldStartSeconds: 86_400 }, "model.cold_start_seconds"],
  ];

  it.each(badSpecs)("rejects a bad %s with INVALID_ARGUMENT naming the field and writes nothing", async (_name, over, field) => {
    const { code, message } = await codeOf(adminClient.upsertModel({ model: textSpec(over) }, await auth.as("admin")));
    expect(code).toBe(Code.InvalidArgument);
    expect(message.startsWith(`${field}:`)).toBe(true);
    expect(await store.getModel("new-model")).toBeUndefined();
    expect(store.events).toEqual([]);
  });

  it("rejects an update of a seeded model with a bad field without changing it", async () => {
    const before = await store.getModel("llama-3.1-8b-abliterated");
    const spec = modelInputToSpec(catalog.models[0]!);
    spec.maxOutputTokens = 999_999;
    expect((await codeOf(adminClient.upsertModel({ model: spec }, await auth.as("admin")))).code).toBe(Code.InvalidArgument);
    expect(await store.getModel("llama-3.1-8b-abliterated")).toEqual(before);
  });

  it("rejects a missing spec and a negative expected version", async () => {
    const admin = await auth.as("admin");
    expect((await codeOf(adminClient.upsertModel({}, admin))).message).toBe("model: is required");
    expect((await codeOf(adminClient.upsertModel({ model: textSpec(), expectedVersion: -1n }, admin))).message).toMatch(/^expected_version:/);
  });

  it("refuses a stale expected version with ABORTED", async () => {
    const admin = await auth.as("admin");
    const spec = modelInputToSpec(catalog.models[0]!);
    const { code, message } = await codeOf(adminClient.upsertModel({ model: { ...spec, displayName: "X" }, expectedVersion: 7n }, admin));
    expect(code).toBe(Code.Aborted);
    expect(message).toMatch(/version 1, not 7/);
    expect((await store.getModel(spec.id))?.displayName).toBe(catalog.models[0]!.displayName);
  });

  it("refuses to turn an image model with workflows into a text model", async () => {
    const spec = modelInputToSpec(catalog.models.find((m) => m.id === "sdxl-base-1.0")!);
    const asText = { ...fieldsOf(spec), upstream: { ...spec.upstream!, probe: UpstreamProbe.UNSPECIFIED }, kind: ModelKind.TEXT, contextWindow: 4096, maxOutputTokens: 512, prices: { inputPer1kTokens: 1n, outputPer1kTokens: 1n, perImage: 0n } as never };
    expect((await codeOf(adminClient.upsertModel({ model: asText }, await auth.as("admin")))).code).toBe(Code.FailedPrecondition);
  });

  it("disables and re-enables a model; repeating a switch changes nothing", async () => {
    const admin = await auth.as("admin");
    const off = await adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false, reason: "bad outputs" }, admin);
    expect(off.model?.model).toMatchObject({ status: ModelStatus.DISABLED, statusReason: "bad outputs", version: 2n });
    await adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false, reason: "bad outputs" }, admin);
    expect(store.events).toHaveLength(1);
    const on = await adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: true }, admin);
    expect(on.model?.model).toMatchObject({ status: ModelStatus.OFFLINE, version: 3n });
    expect(store.events).toHaveLength(2);
    expect((await codeOf(adminClient.setModelEnabled({ modelId: "nope", enabled: false }, admin))).code).toBe(Code.NotFound);
    expect((await codeOf(adminClient.setModelEnabled({ modelId: "NOPE", enabled: false }, admin))).message).toMatch(/^model_id:/);
    expect((await codeOf(adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false, reason: "x".repeat(501) }, admin))).message).toMatch(/^reason:/);
  });

  it("creates and updates a workflow", async () => {
    const admin = await auth.as("admin");
    const spec = { ...sdxlSpec(), id: "sdxl-fast" };
    spec.parameters!.maxSteps = 20;
    spec.parameters!.defaultSteps = 20;
    const res = await adminClient.upsertWorkflow({ workflow: spec }, admin);
    expect(res.created).toBe(true);
    expect(res.workflow?.workflow).toMatchObject({ id: "sdxl-fast", version: 1n });
    expect(res.workflow?.template?.graphJson).toBe(spec.template!.graphJson);
    const again = await adminClient.upsertWorkflow({ workflow: { ...spec, pricePerImage: 80n }, expectedVersion: 1n }, admin);
    expect(again.workflow?.workflow).toMatchObject({ pricePerImage: 80n, version: 2n });
    expect(store.events.map((e) => e.case)).toEqual(["workflow", "workflow"]);
  });

  it.each<[string, (s: WorkflowSpec) => void, string]>([
    ["an unknown model", (s) => (s.modelId = "nope"), "workflow.model_id"],
    ["a text model", (s) => (s.modelId = "qwen2.5-7b-instruct"), "workflow.model_id"],
    ["a graph that is not JSON", (s) => (s.template!.graphJson = "{\"1\":"), "workflow.template.graph_json"],
    ["an undeclared placeholder", (s) => (s.template!.graphJson = s.template!.graphJson.replace('"sd_xl_base_1.0.safetensors"', '"{{checkpoint}}"')), "workflow.template.graph_json"],
    ["a negative price", (s) => (s.pricePerImage = -50n), "workflow.price_per_image"],
    ["a default size not offered", (s) => (s.parameters!.defaultSize = create(ImageSizeSchema, { width: 640, height: 640 })), "workflow.parameters.default_size"],
  ])("rejects a workflow on %s with INVALID_ARGUMENT and writes nothing", async (_name, mutate, field) => {
    const spec = { ...sdxlSpec(), id: "sdxl-2" };
    mutate(spec);
    const { code, message } = await codeOf(adminClient.upsertWorkflow({ workflow: spec }, await auth.as("admin")));
    expect(code).toBe(Code.InvalidArgument);
    expect(message.startsWith(`${field}:`)).toBe(true);
    expect(await store.getWorkflow("sdxl-2")).toBeUndefined();
    expect(store.events).toEqual([]);
  });

  it("disables a workflow and reports unknown ones", async () => {
    const admin = await auth.as("admin");
    const res = await adminClient.setWorkflowEnabled({ workflowId: "sdxl", enabled: false, reason: "LoRA update" }, admin);
    expect(res.workflow).toMatchObject({ enabled: false, disabledReason: "LoRA update" });
    expect(res.workflow?.workflow).toMatchObject({ status: ModelStatus.DISABLED, statusReason: "LoRA update" });
    expect((await codeOf(adminClient.setWorkflowEnabled({ workflowId: "nope", enabled: false }, admin))).code).toBe(Code.NotFound);
  });

  it("shows admins everything, disabled entries and upstreams included", async () => {
    const admin = await auth.as("admin");
    await adminClient.setModelEnabled({ modelId: "qwen2.5-7b-instruct", enabled: false }, admin);
    const res = await adminClient.getAdminCatalog({}, admin);
    expect(res.models.map((m) => m.model?.id)).toContain("qwen2.5-7b-instruct");
    expect(res.models[0]?.upstream?.baseUrls).toEqual(["http://vllm:8000"]);
    expect(res.workflows.map((w) => w.workflow?.id)).toEqual(["flux-schnell", "sdxl"]);
  });
});

describe("ModelUpstreamService (internal)", () => {
  it("returns the full catalog with upstreams and templates", async () => {
    const internal = await auth.as("internal");
    const snap = await upstreamClient.getCatalogSnapshot({}, internal);
    expect(snap.models).toHaveLength(5);
    expect(snap.models.find((m) => m.model?.id === "flux1-schnell")?.upstream?.baseUrls).toEqual(["http://comfy:8188"]);
    expect(snap.workflows.find((w) => w.workflow?.id === "sdxl")?.template?.bindings.length).toBeGreaterThan(5);
    const one = await upstreamClient.getModelUpstream({ modelId: "qwen2.5-7b-instruct" }, internal);
    expect(one.model?.upstream).toMatchObject({ modelId: "qwen2.5-7b-instruct", baseUrls: ["http://vllm:8000"], apiKeyEnv: "" });
    expect((await codeOf(upstreamClient.getModelUpstream({ modelId: "nope" }, internal))).code).toBe(Code.NotFound);
  });
});
