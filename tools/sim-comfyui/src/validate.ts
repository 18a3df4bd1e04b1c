/**
 * Prompt validation, mirroring ComfyUI's `execution.validate_prompt`: the same checks in the same order, the same error
 * `type`/`message`/`details` strings and the same `node_errors` shape (including `dependent_outputs`), so a client's
 * error handling can be exercised without a GPU.
 *
 * Where real ComfyUI only fails by a Python exception (a link to a missing node, a bad output slot), the simulator
 * reports the same error types (`exception_during_validation` / `exception_during_inner_validation`) with the
 * message Python would give, attached to the node that holds the bad link.
 */
import type { Catalog, InputSpec } from "./catalog.js";

/** One error as ComfyUI reports it (top-level `error` and each entry of `node_errors[id].errors`). */
export interface ErrorInfo {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}

/** Per node: its errors, the outputs that depend on it, and its class. */
export interface NodeErrorEntry {
  errors: ErrorInfo[];
  dependent_outputs: string[];
  class_type: string;
}

export type NodeErrors = Record<string, NodeErrorEntry>;

/** A node of an API-format graph after validation. */
export interface PromptNode {
  class_type: string;
  inputs: Record<string, unknown>;
  [extra: string]: unknown;
}

/** An API-format graph: `{"<id>": {class_type, inputs}}`. */
export type Prompt = Record<string, PromptNode>;

export type ValidationResult =
  | { ok: true; prompt: Prompt; outputs: string[]; nodeErrors: NodeErrors }
  | { ok: false; error: ErrorInfo; nodeErrors: NodeErrors };

/** A dictionary keyed by client-chosen strings (node ids): no prototype, so `"__proto__"` is an ordinary key. */
export function dict<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function pyRepr(v: unknown): string {
  if (typeof v === "string") return `'${v}'`;
  if (v === null || v === undefined) return "None";
  if (typeof v === "boolean") return v ? "True" : "False";
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  if (typeof v === "object") return `{${Object.entries(v).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
  return String(v);
}

function pyStr(v: unknown): string {
  return typeof v === "string" ? v : pyRepr(v);
}

function pyTypeName(v: unknown): string {
  if (v === null || v === undefined) return "NoneType";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "string") return "str";
  if (Array.isArray(v)) return "list";
  return "dict";
}

class Conversion extends Error {}

/** Python's default recursion limit bounds how long a chain of links ComfyUI can validate; so does the simulator. */
const MAX_LINK_DEPTH = 1000;

const INT_LITERAL = /^\s*[+-]?\d+(_\d+)*\s*$/;
const FLOAT_LITERAL = /^\s*[+-]?((\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|inf(inity)?|nan)\s*$/i;

/** Python's `int(v)`. */
function toInt(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return Math.trunc(v);
  if (typeof v === "string") {
    if (!INT_LITERAL.test(v)) throw new Conversion(`invalid literal for int() with base 10: ${pyRepr(v)}`);
    return Number(v.replace(/_/g, ""));
  }
  throw new Conversion(`int() argument must be a string, a bytes-like object or a real number, not '${pyTypeName(v)}'`);
}

/** Python's `float(v)`. */
function toFloat(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return v;
  if (typeof v === "string") {
    if (!FLOAT_LITERAL.test(v)) throw new Conversion(`could not convert string to float: ${pyRepr(v)}`);
    const t = v.trim().toLowerCase().replace(/^\+/, "");
    if (/^-?inf(inity)?$/.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
    if (/^-?nan$/.test(t)) return NaN;
    return Number(t);
  }
  throw new Conversion(`float() argument must be a string or a real number, not '${pyTypeName(v)}'`);
}

/** Python truthiness, for `bool(v)`. */
function toBool(v: unknown): boolean {
  if (Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return Boolean(v);
}

/** ComfyUI's `validate_node_input`: equal types, the `*` wildcard, or comma-separated unions. */
function typesCompatible(received: string, expected: string | readonly (string | number)[]): boolean {
  if (typeof expected !== "string") return false;
  if (received === expected || received === "*" || expected === "*") return true;
  const r = new Set(received.split(",").map((s) => s.trim()));
  const e = new Set(expected.split(",").map((s) => s.trim()));
  for (const t of r) if (e.has(t)) return true;
  return false;
}

interface NodeVerdict {
  valid: boolean;
  errors: ErrorInfo[];
}

/** A bad link: Python would raise this exception type with this message. */
interface BadLink {
  exceptionType: string;
  message: string;
}

/**
 * Validates an API-format graph against the catalog. On success the returned prompt is a copy with literal inputs
 * converted to their declared types (as ComfyUI does in place), plus the output node ids to execute.
 */
export function validatePrompt(raw: unknown, catalog: Catalog): ValidationResult {
  const invalid = (message: string, details = ""): ValidationResult => ({
    ok: false,
    error: { type: "invalid_prompt", message, details, extra_info: {} },
    nodeErrors: dict(),
  });
  if (!isObject(raw)) return invalid("Cannot execute because the prompt is not an object of nodes.", pyTypeName(raw));

  const prompt = structuredClone(raw) as Prompt;
  const outputs: string[] = [];
  for (const [id, node] of Object.entries(prompt)) {
    if (!isObject(node) || !Object.hasOwn(node, "class_type")) {
      return invalid("Cannot execute because a node is missing the class_type property.", `Node ID '#${id}'`);
    }
    const classType = node.class_type;
    const info = typeof classType === "string" ? catalog.get(classType) : undefined;
    if (!info) return invalid(`Cannot execute because node ${pyStr(classType)} does not exist.`, `Node ID '#${id}'`);
    // ComfyUI would fail with a KeyError on a node without `inputs`; treating it as empty reports what is missing.
    if (!isObject(node.inputs)) node.inputs = {};
    if (info.output_node) outputs.push(id);
  }
  if (outputs.length === 0) {
    return {
      ok: false,
      error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} },
      nodeErrors: dict(),
    };
  }

  const validated = new Map<string, NodeVerdict>();
  const inProgress = new Set<string>();

  const linkProblem = (link: readonly unknown[]): BadLink | undefined => {
    const [src, slot] = link;
    if (typeof src !== "string" || !Object.hasOwn(prompt, src)) return { exceptionType: "KeyError", message: pyRepr(src) };
    const node = prompt[src] as PromptNode;
    const outputTypes = (catalog.get(node.class_type) as { output: string[] }).output;
    if (typeof slot !== "number" || !Number.isInteger(slot)) {
      return { exceptionType: "TypeError", message: `tuple indices must be integers or slices, not ${pyTypeName(slot)}` };
    }
    // Python tuples accept negative indices from the end.
    if (slot >= outputTypes.length || slot < -outputTypes.length) {
      return { exceptionType: "IndexError", message: "tuple index out of range" };
    }
    return undefined;
  };

  const validateNode = (id: string, isOutput: boolean): NodeVerdict => {
    const known = validated.get(id);
    if (known) return known;
    const node = prompt[id] as PromptNode;
    const info = catalog.get(node.class_type);
    if (!info) throw new Error(`unreachable: ${node.class_type} checked above`);
    const inputs = node.inputs;
    const errors: ErrorInfo[] = [];
    let valid = true;
    inProgress.add(id);
    const exception = (inputName: string, link: unknown, problem: BadLink): NodeVerdict => ({
      valid: false,
      errors: [{
        type: isOutput ? "exception_during_validation" : "exception_during_inner_validation",
        message: isOutput ? "Exception when validating node" : "Exception when validating inner node",
        details: problem.message,
        extra_info: {
          input_name: inputName,
          exception_message: problem.message,
          exception_type: problem.exceptionType,
          traceback: [],
          linked_node: link,
        },
      }],
    });

    const declared: [string, InputSpec, boolean][] = [
      ...Object.entries(info.input.required).map(([k, s]): [string, InputSpec, boolean] => [k, s, true]),
      ...Object.entries(info.input.optional ?? {}).map(([k, s]): [string, InputSpec, boolean] => [k, s, false]),
    ];
    for (const [name, spec, required] of declared) {
      const [inputType, options = {}] = spec;
      const inputConfig = [inputType, options];
      if (!Object.hasOwn(inputs, name)) {
        if (required) {
          errors.push({
            type: "required_input_missing", message: "Required input is missing", details: name,
            extra_info: { input_name: name },
          });
        }
        continue;
      }
      let value = inputs[name];
      if (Array.isArray(value)) {
        if (value.length !== 2) {
          errors.push({
            type: "bad_linked_input",
            message: "Bad linked input, must be a length-2 list of [node_id, slot_index]",
            details: name,
            extra_info: { input_name: name, input_config: inputConfig, received_value: value },
          });
          continue;
        }
        const problem = linkProblem(value);
        if (problem) {
          // Python aborts validating this node at the first exception.
          const verdict = exception(name, value, problem);
          validated.set(id, verdict);
          inProgress.delete(id);
          return verdict;
        }
        const src = value[0] as string;
        const srcTypes = (catalog.get((prompt[src] as PromptNode).class_type) as { output: string[] }).output;
        const slot = value[1] as number;
        const receivedType = srcTypes[slot < 0 ? srcTypes.length + slot : slot] as string;
        if (!typesCompatible(receivedType, inputType)) {
          errors.push({
            type: "return_type_mismatch",
            message: "Return type mismatch between linked nodes",
            details: `${name}, ${receivedType} != ${pyStr(inputType)}`,
            extra_info: { input_name: name, input_config: inputConfig, received_type: receivedType, linked_node: value },
          });
          continue;
        }
        if (inProgress.size >= MAX_LINK_DEPTH) {
          const verdict = exception(name, value, { exceptionType: "RecursionError", message: "maximum recursion depth exceeded" });
          validated.set(id, verdict);
          inProgress.delete(id);
          return verdict;
        }
        if (inProgress.has(src)) {
          // Python would recurse until RecursionError; ComfyUI's executor calls this a dependency cycle.
          const verdict = exception(name, value, { exceptionType: "comfy_execution.graph.DependencyCycleError", message: "Dependency cycle detected" });
          validated.set(id, verdict);
          inProgress.delete(id);
          return verdict;
        }
        if (!validateNode(src, false).valid) valid = false;
        continue;
      }

      if (isObject(value) && Object.hasOwn(value, "__value__")) {
        value = value.__value__;
        inputs[name] = value;
      }
      try {
        if (inputType === "INT") value = toInt(value);
        else if (inputType === "FLOAT") value = toFloat(value);
        else if (inputType === "STRING") value = pyStr(value);
        else if (inputType === "BOOLEAN") value = toBool(value);
        inputs[name] = value;
      } catch (err) {
        if (!(err instanceof Conversion)) throw err;
        errors.push({
          type: "invalid_input_type",
          message: `Failed to convert an input value to a ${pyStr(inputType)} value`,
          details: `${name}, ${pyStr(value)}, ${err.message}`,
          extra_info: { input_name: name, input_config: inputConfig, received_value: value, exception_message: err.message },
        });
        continue;
      }
      if (typeof value === "number") {
        const min = options.min;
        const max = options.max;
        if (typeof min === "number" && value < min) {
          errors.push({
            type: "value_smaller_than_min", message: `Value ${value} smaller than min of ${min}`, details: name,
            extra_info: { input_name: name, input_config: inputConfig, received_value: value },
          });
          continue;
        }
        if (typeof max === "number" && value > max) {
          errors.push({
            type: "value_bigger_than_max", message: `Value ${value} bigger than max of ${max}`, details: name,
            extra_info: { input_name: name, input_config: inputConfig, received_value: value },
          });
          continue;
        }
      }
      if (typeof inputType !== "string" && !inputType.includes(value as string | number)) {
        // ComfyUI leaves huge lists (e.g. hundreds of model files) out of the message.
        const long = inputType.length > 20;
        errors.push({
          type: "value_not_in_list",
          message: "Value not in list",
          details: `${name}: ${pyRepr(value)} not in ${long ? `(list of length ${inputType.length})` : pyRepr(inputType)}`,
          extra_info: { input_name: name, input_config: long ? null : inputConfig, received_value: value },
        });
        continue;
      }
    }

    const verdict: NodeVerdict = errors.length > 0 || !valid ? { valid: false, errors } : { valid: true, errors: [] };
    validated.set(id, verdict);
    inProgress.delete(id);
    return verdict;
  };

  const goodOutputs: string[] = [];
  const failed: [string, ErrorInfo[]][] = [];
  const nodeErrors = dict<NodeErrorEntry>();
  for (const o of outputs) {
    const verdict = validateNode(o, true);
    if (verdict.valid) {
      goodOutputs.push(o);
      continue;
    }
    failed.push([o, verdict.errors]);
    // As in ComfyUI: every node that failed so far (with reasons of its own) lists this output as dependent.
    for (const [id, v] of validated) {
      if (v.valid || v.errors.length === 0) continue;
      const entry = nodeErrors[id] ?? (nodeErrors[id] = {
        errors: v.errors, dependent_outputs: [], class_type: (prompt[id] as PromptNode).class_type,
      });
      entry.dependent_outputs.push(o);
    }
  }

  if (goodOutputs.length === 0) {
    const lines = failed.flatMap(([, errs]) => errs.map((e) => `${e.message}: ${e.details}`));
    return {
      ok: false,
      error: {
        type: "prompt_outputs_failed_validation",
        message: "Prompt outputs failed validation",
        details: lines.join("\n"),
        extra_info: {},
      },
      nodeErrors,
    };
  }
  return { ok: true, prompt, outputs: goodOutputs, nodeErrors };
}
