// The protoc-gen-validate rules Envoy's API carries in its protos (`(validate.rules)`, `(validate.required)` on
// oneofs), checked on a parsed message the way Envoy checks them when it loads a config: required messages and
// oneofs, string lengths, number and duration bounds, enum values that exist, item counts, recursively through
// every `typed_config`. Only the rule kinds Envoy's v3 API uses on the fields Luna sets are modelled; others are
// ignored (the workflow's `envoy --mode validate` remains the final word).
import { getOption, type DescExtension, type DescField, type DescMessage, type Message, type Registry } from "@bufbuild/protobuf";
import { anyUnpack, type Any } from "@bufbuild/protobuf/wkt";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";


const WRAPPERS = new Set(["google.protobuf.UInt32Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
  "google.protobuf.Int64Value", "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.StringValue",
  "google.protobuf.BoolValue"]);

function seconds(d: unknown): number {
  const x = d as { seconds?: bigint; nanos?: number } | undefined;
  return Number(x?.seconds ?? 0n) + (x?.nanos ?? 0) / 1e9;
}

/** Checks `msg` and everything inside it; returns one line per violation (`path: rule`). */
export function validateMessage(msg: Message, desc: DescMessage, registry: Registry): string[] {
  const rulesExt = registry.getExtension("validate.rules");
  const requiredExt = registry.getExtension("validate.required");
  const disabledExt = registry.getExtension("validate.disabled");
  if (!rulesExt || !requiredExt) throw new Error("validate.proto extensions are not in the registry");
  const out: string[] = [];
  walk(reflect(desc, msg), "", { rulesExt, requiredExt, disabledExt, registry }, out);
  return out;
}

interface Ctx { rulesExt: DescExtension; requiredExt: DescExtension; disabledExt: DescExtension | undefined; registry: Registry }

function walk(m: ReflectMessage, path: string, ctx: Ctx, out: string[]): void {
  const desc = m.desc;
  if (ctx.disabledExt && desc.proto.options && getOption(desc, ctx.disabledExt) === true) return;
  if (desc.typeName === "google.protobuf.Any") {
    const inner = anyUnpack(m.message as Any, ctx.registry);
    const innerDesc = inner ? ctx.registry.getMessage(inner.$typeName) : undefined;
    if (inner && innerDesc) walk(reflect(innerDesc, inner), path, ctx, out);
    return;
  }
  for (const oneof of desc.oneofs) {
    if (oneof.proto.options && getOption(oneof, ctx.requiredExt) === true && !oneof.fields.some((f) => m.isSet(f))) {
      out.push(`${path || desc.typeName}: one of ${oneof.fields.map((f) => f.name).join(", ")} is required`);
    }
  }
  for (const field of desc.fields) {
    const at = path ? `${path}.${field.name}` : field.name;
    const rules = field.proto.options ? (getOption(field, ctx.rulesExt) as Message | undefined) : undefined;
    if (rules) checkField(m, field, rules, at, ctx, out);
    if (!m.isSet(field)) continue;
    if (field.fieldKind === "message") walk(m.get(field) as ReflectMessage, at, ctx, out);
    else if (field.fieldKind === "list" && field.listKind === "message") {
      let i = 0;
      for (const item of m.get(field) as Iterable<ReflectMessage>) walk(item, `${at}[${i++}]`, ctx, out);
    } else if (field.fieldKind === "map" && field.mapKind === "message") {
      for (const [k, v] of m.get(field) as Iterable<[unknown, ReflectMessage]>) walk(v, `${at}[${String(k)}]`, ctx, out);
    }
  }
}

/** A rules message as plain values: only the fields that are set (proto2 defaults are not rules). */
function setFields(msg: Message | undefined, registry: Registry): Record<string, unknown> | undefined {
  if (!msg) return undefined;
  const desc = registry.getMessage(msg.$typeName);
  if (!desc) return undefined;
  const r = reflect(desc, msg);
  const out: Record<string, unknown> = {};
  for (const f of desc.fields) {
    if (!r.isSet(f)) continue;
    const v = r.get(f);
    out[f.localName] = f.fieldKind === "message" ? (v as ReflectMessage).message : v;
  }
  return out;
}

function checkField(m: ReflectMessage, field: DescField, rulesMsg: Message, at: string, ctx: Ctx, out: string[]): void {
  const set = m.isSet(field);
  // A rule on a oneof member applies only when that member is the one set.
  if (field.oneof && !set) return;
  const rules = setFields(rulesMsg, ctx.registry)!;
  const messageRules = setFields(rules.message as Message | undefined, ctx.registry);
  if (messageRules?.required && !set) out.push(`${at}: required`);
  const kinds = ["float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64",
    "bool", "string", "bytes", "enum", "repeated", "map", "any", "duration", "timestamp"];
  const kind = kinds.find((k) => rules[k] !== undefined);
  if (!kind) return;
  const r = setFields(rules[kind] as Message, ctx.registry)!;
  if (kind === "repeated" && field.fieldKind === "list") {
    const n = set ? [...(m.get(field) as Iterable<unknown>)].length : 0;
    if (r.minItems !== undefined && BigInt(n) < (r.minItems as bigint)) out.push(`${at}: at least ${String(r.minItems)} items`);
    if (r.maxItems !== undefined && BigInt(n) > (r.maxItems as bigint)) out.push(`${at}: at most ${String(r.maxItems)} items`);
    const items = setFields(r.items as Message | undefined, ctx.registry);
    const itemString = setFields(items?.string as Message | undefined, ctx.registry);
    if (set && itemString && field.listKind === "scalar") {
      let i = 0;
      for (const v of m.get(field) as Iterable<string>) checkString(v, itemString, `${at}[${i++}]`, out);
    }
    return;
  }
  if (kind === "duration") {
    if (r.required && !set) out.push(`${at}: required`);
    if (!set) return;
    const v = seconds((m.get(field) as ReflectMessage).message);
    if (r.gt !== undefined && !(v > seconds(r.gt))) out.push(`${at}: must be > ${seconds(r.gt)}s`);
    if (r.gte !== undefined && !(v >= seconds(r.gte))) out.push(`${at}: must be >= ${seconds(r.gte)}s`);
    if (r.lt !== undefined && !(v < seconds(r.lt))) out.push(`${at}: must be < ${seconds(r.lt)}s`);
    if (r.lte !== undefined && !(v <= seconds(r.lte))) out.push(`${at}: must be <= ${seconds(r.lte)}s`);
    return;
  }
  if (kind === "any") {
    if (r.required && !set) out.push(`${at}: required`);
    return;
  }
  // Scalar rules, on the field itself or on a wrapper message's value (checked only when the wrapper is set).
  let value: unknown;
  if (field.fieldKind === "scalar" || field.fieldKind === "enum") value = m.get(field);
  else if (field.fieldKind === "message" && WRAPPERS.has(field.message.typeName)) {
    if (!set) return;
    const w = m.get(field) as ReflectMessage;
    value = w.get(w.desc.fields[0]!);
  } else return;
  if (kind === "string") checkString(value as string, r, at, out);
  else if (kind === "enum") {
    if (r.definedOnly && field.fieldKind === "enum" && !field.enum.values.some((v) => v.number === value)) out.push(`${at}: ${String(value)} is not a defined value`);
  } else if (kind !== "bool" && kind !== "bytes" && kind !== "map" && kind !== "timestamp") {
    // ignore_empty: the zero value is not checked.
    if (r.ignoreEmpty && (value === 0 || value === 0n)) return;
    const v = Number(value);
    if (r.gt !== undefined && !(v > Number(r.gt))) out.push(`${at}: must be > ${String(r.gt)}`);
    if (r.gte !== undefined && !(v >= Number(r.gte))) out.push(`${at}: must be >= ${String(r.gte)}`);
    if (r.lt !== undefined && !(v < Number(r.lt))) out.push(`${at}: must be < ${String(r.lt)}`);
    if (r.lte !== undefined && !(v <= Number(r.lte))) out.push(`${at}: must be <= ${String(r.lte)}`);
  }
}

function checkString(v: string, r: Record<string, unknown>, at: string, out: string[]): void {
  if (r.ignoreEmpty && v === "") return;
  const len = [...v].length;
  if (r.minLen !== undefined && BigInt(len) < (r.minLen as bigint)) out.push(`${at}: at least ${String(r.minLen)} characters`);
  if (r.maxLen !== undefined && BigInt(len) > (r.maxLen as bigint)) out.push(`${at}: at most ${String(r.maxLen)} characters`);
  if (r.minBytes !== undefined && BigInt(Buffer.byteLength(v)) < (r.minBytes as bigint)) out.push(`${at}: at least ${String(r.minBytes)} bytes`);
  if (typeof r.prefix === "string" && r.prefix && !v.startsWith(r.prefix)) out.push(`${at}: must start with ${r.prefix}`);
}
