// Unknown enum names in JSON requests are INVALID_ARGUMENT (issue 20: ListModels {"kind":"MODEL_KIND_BOGUS"} used to
// answer every model), over real HTTP in each JSON flavour; unknown fields stay tolerated.
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { ModelKind } from "@luna/contracts/luna/models/v1/models_pb.js";
import {
  GetModelRequestSchema, GetModelResponseSchema, ListModelsRequestSchema, ListModelsResponseSchema, ListModelsResponseSchema as Listed, ListWorkflowsResponseSchema, GetWorkflowResponseSchema, ModelService,
} from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { holdsEnums, unknownEnumName } from "./json-enums.js";
import { createLogger } from "./log.js";
import { createServer, type LunaServer } from "./server.js";

let server: LunaServer;
let base: string;
const seenKinds: ModelKind[] = [];

beforeAll(async () => {
  const routes = (router: ConnectRouter) => router.service(ModelService, {
    listModels(req) {
      seenKinds.push(req.kind);
      return create(ListModelsResponseSchema, {});
    },
    getModel: () => create(GetModelResponseSchema, {}),
    listWorkflows: () => create(ListWorkflowsResponseSchema, {}),
    getWorkflow: () => create(GetWorkflowResponseSchema, {}),
  });
  server = createServer({ routes, log: createLogger({ service: "test", level: "silent" }), shutdownGraceMs: 10 });
  base = `http://127.0.0.1:${(await server.listen(0, "127.0.0.1")).port}`;
});
afterAll(() => server.close());

const path = "/luna.models.v1.ModelService/ListModels";
const post = (body: unknown, contentType = "application/json") =>
  fetch(base + path, { method: "POST", headers: { "content-type": contentType }, body: typeof body === "string" ? body : JSON.stringify(body) });

function envelope(json: unknown): Buffer {
  const data = Buffer.from(JSON.stringify(json));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.byteLength, 1);
  return Buffer.concat([head, data]);
}

describe("unknown enum names in JSON", () => {
  it("Connect JSON: an unknown name is invalid_argument naming the field; known names and numbers work", async () => {
    const bogus = await post({ kind: "MODEL_KIND_BOGUS" });
    expect(bogus.status).toBe(400);
    expect(await bogus.json()).toEqual({ code: "invalid_argument", message: 'kind: unknown value "MODEL_KIND_BOGUS" of luna.models.v1.ModelKind' });
    seenKinds.length = 0;
    expect((await post({ kind: "MODEL_KIND_IMAGE" })).status).toBe(200);
    expect((await post({ kind: 1 })).status).toBe(200);
    expect(seenKinds).toEqual([ModelKind.IMAGE, ModelKind.TEXT]);
  });

  it("unknown fields stay tolerated (a newer client's extra field does not break an older server)", async () => {
    seenKinds.length = 0;
    expect((await post({ kind: "MODEL_KIND_TEXT", someFutureField: { nested: true } })).status).toBe(200);
    expect(seenKinds).toEqual([ModelKind.TEXT]);
  });

  it("gRPC-Web with JSON, too", async () => {
    const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/grpc-web+json" }, body: envelope({ kind: "NOPE" }) });
    const text = Buffer.from(await res.arrayBuffer()).toString("latin1");
    expect(text).toMatch(/grpc-status: 3\r\n/);
    expect(decodeURIComponent(/grpc-message: ([^\r]*)/.exec(text)![1]!)).toContain('kind: unknown value "NOPE"');
  });

  it("checks nested messages and lists, and leaves malformed JSON to the parser", () => {
    expect(unknownEnumName(Listed, { models: [{ kind: "MODEL_KIND_TEXT" }, { kind: "MODEL_KIND_SIDEWAYS" }] })?.rawMessage)
      .toBe('models.kind: unknown value "MODEL_KIND_SIDEWAYS" of luna.models.v1.ModelKind');
    expect(unknownEnumName(Listed, { models: [{ kind: "MODEL_KIND_TEXT", status: "MODEL_STATUS_AVAILABLE" }] })).toBeUndefined();
    expect(unknownEnumName(Listed, { models: [{ status: "NOT_A_STATUS" }] })?.rawMessage).toMatch(/^models\.status: unknown value/);
  });

  it("checks only request types that can hold an enum (the others skip the second JSON.parse)", () => {
    expect(holdsEnums(ListModelsRequestSchema)).toBe(true); // kind
    expect(holdsEnums(Listed)).toBe(true); // through the repeated Model
    expect(holdsEnums(GetModelRequestSchema)).toBe(false); // a model id only
  });

  it("malformed JSON is still the parser's invalid_argument", async () => {
    const res = await post("{not json");
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
  });
});
