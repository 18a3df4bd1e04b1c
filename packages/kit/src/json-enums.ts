// JSON requests: unknown enum *names* are INVALID_ARGUMENT, like unknown enum numbers. Connect parses JSON with
// `ignoreUnknownFields` (on by default, so a newer client's extra fields do not break an older server), and
// protobuf-es applies that same flag to enum names: `{"kind":"MODEL_KIND_BOGUS"}` silently became "unset", and
// ListModels answered every model. Turning the flag off would also refuse unknown fields, which Luna keeps
// tolerating (documented in the kit README), so the kit checks enum names itself, per method, before the library
// parses: the JSON codec's text decoder is the one hook Connect gives into every JSON parse (unary, streams, GET,
// Connect, gRPC-Web and gRPC with +json).
import type { DescEnum, DescField, DescMessage, DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { invalidArgument } from "./errors.js";

function knownName(e: DescEnum, value: unknown): boolean {
  return typeof value !== "string" || e.values.some((v) => v.name === value);
}

/** The first enum value in `json` (a message of type `desc`) that names no value of its enum, as "<path>: <why>". */
export function unknownEnumName(desc: DescMessage, json: unknown, path = ""): ConnectError | undefined {
  // Well-known types have their own JSON forms (Timestamp strings, Struct objects, ...): nothing to check.
  if (desc.typeName.startsWith("google.protobuf.") || json === null || typeof json !== "object" || Array.isArray(json)) return undefined;
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    if (value === null) continue;
    const field: DescField | undefined = desc.fields.find((f) => f.jsonName === key || f.name === key);
    if (!field) continue; // unknown fields stay tolerated
    const at = path + field.name;
    const bad = (e: DescEnum, v: unknown) => invalidArgument(at, `unknown value ${JSON.stringify(v)} of ${e.typeName}`);
    switch (field.fieldKind) {
      case "enum":
        if (!knownName(field.enum, value)) return bad(field.enum, value);
        break;
      case "message": {
        const inner = unknownEnumName(field.message, value, `${at}.`);
        if (inner) return inner;
        break;
      }
      case "list":
        if (!Array.isArray(value)) break;
        for (const item of value as unknown[]) {
          if (field.listKind === "enum" && !knownName(field.enum, item)) return bad(field.enum, item);
          if (field.listKind === "message") {
            const inner = unknownEnumName(field.message, item, `${at}.`);
            if (inner) return inner;
          }
        }
        break;
      case "map":
        if (typeof value !== "object" || Array.isArray(value)) break;
        for (const item of Object.values(value as Record<string, unknown>)) {
          if (field.mapKind === "enum" && !knownName(field.enum, item)) return bad(field.enum, item);
          if (field.mapKind === "message") {
            const inner = unknownEnumName(field.message, item, `${at}.`);
            if (inner) return inner;
          }
        }
        break;
      default:
        break;
    }
  }
  return undefined;
}

/** Whether a message of type `desc` can hold an enum value anywhere (well-known types excluded, as above). */
export function holdsEnums(desc: DescMessage, seen = new Set<string>()): boolean {
  if (desc.typeName.startsWith("google.protobuf.") || seen.has(desc.typeName)) return false;
  seen.add(desc.typeName);
  return desc.fields.some((f) => {
    if (f.fieldKind === "enum" || (f.fieldKind === "list" && f.listKind === "enum") || (f.fieldKind === "map" && f.mapKind === "enum")) return true;
    const inner = f.fieldKind === "message" ? f.message
      : f.fieldKind === "list" && f.listKind === "message" ? f.message
        : f.fieldKind === "map" && f.mapKind === "message" ? f.message : undefined;
    return inner !== undefined && holdsEnums(inner, seen);
  });
}

/**
 * A text decoder for one method's JSON requests that throws INVALID_ARGUMENT on an unknown enum name. A request type
 * that holds no enum gets the plain decoder: no second JSON.parse on its requests.
 */
function enumCheckingDecoder(input: DescMessage): { decode(data: Uint8Array): string } {
  const plain = new TextDecoder();
  if (!holdsEnums(input)) return plain;
  return {
    decode(data) {
      const text = plain.decode(data);
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        return text; // the library reports malformed JSON itself
      }
      const err = unknownEnumName(input, json);
      if (err) throw err;
      return text;
    },
  };
}

type RouterOptions = Parameters<ConnectRouter["rpc"]>[2];

// `textDecoder` is read by the library's JSON serialization (JsonSerializationOptions in protocol/serialization.js)
// from the handler's jsonOptions, though the public type of jsonOptions does not list it; json-enums.test.ts fails
// if a library update stops honouring it.
function withEnumCheck(method: DescMethod, options: RouterOptions): NonNullable<RouterOptions> {
  const jsonOptions = { ...options?.jsonOptions, textDecoder: enumCheckingDecoder(method.input) };
  return { ...options, jsonOptions: jsonOptions as NonNullable<RouterOptions>["jsonOptions"] };
}

/**
 * Wraps a router so every method it registers (through `service` or `rpc`) rejects unknown enum names in JSON
 * requests. `service` registers each method on its own (`rpc`), exactly as the library would, so each gets its own
 * decoder.
 */
export function strictJsonEnums(router: ConnectRouter): ConnectRouter {
  type AnyImpl = Record<string, unknown>;
  const rpc = router.rpc as unknown as (method: DescMethod, impl: unknown, options: RouterOptions) => ConnectRouter;
  return new Proxy(router, {
    get(target, prop, receiver) {
      if (prop === "service") {
        return (desc: { typeName: string; methods: DescMethod[] }, impl: AnyImpl, options?: RouterOptions) => {
          for (const method of desc.methods) {
            const fn = impl[method.localName];
            const bound = typeof fn === "function" ? (fn as (...a: unknown[]) => unknown).bind(impl) : () => {
              throw new ConnectError(`${desc.typeName}.${method.name} is not implemented`, Code.Unimplemented);
            };
            rpc.call(target, method, bound, withEnumCheck(method, options));
          }
          return receiver;
        };
      }
      if (prop === "rpc") {
        return (method: DescMethod, impl: unknown, options?: RouterOptions) => {
          rpc.call(target, method, impl, withEnumCheck(method, options));
          return receiver;
        };
      }
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
}
