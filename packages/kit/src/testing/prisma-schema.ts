// Reads a schema.prisma into Prisma's DMMF without the native schema engine: the prisma CLI package ships its
// schema parser as WebAssembly (build/prisma_schema_build_bg.wasm, the same module `prisma format`/`validate` use).
// The CLI bundles wasm-bindgen glue we cannot import, so this file carries the few lines of glue `get_dmmf` needs.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** The parts of Prisma's DMMF datamodel the drift check reads. */
export interface DmmfField {
  name: string;
  dbName?: string | null;
  kind: "scalar" | "object" | "enum" | "unsupported";
  isList: boolean;
  isRequired: boolean;
  type: string;
  /** [native type name, args], e.g. ["VarChar", ["100"]] for @db.VarChar(100). */
  nativeType?: [string, string[]] | null;
}

export interface DmmfModel {
  name: string;
  dbName: string | null;
  schema?: string | null;
  fields: DmmfField[];
}

export interface DmmfEnum {
  name: string;
  dbName?: string | null;
}

export interface DmmfIndex {
  model: string;
  type: "id" | "normal" | "unique" | "fulltext";
  isDefinedOnField: boolean;
  /** The database name given with `map:`; absent when Prisma's default name applies. */
  dbName?: string | null;
  fields: { name: string; sortOrder?: "asc" | "desc" }[];
}

export interface DmmfDatamodel {
  models: DmmfModel[];
  enums: DmmfEnum[];
  indexes: DmmfIndex[];
}

// Minimal WebAssembly typings: @types/node does not declare the global (it lives in lib.dom).
interface WasmExports {
  memory: { buffer: ArrayBuffer };
  __wbindgen_externrefs: { get(i: number): unknown; grow(n: number): number; set(i: number, v: unknown): void };
  __wbindgen_malloc(size: number, align: number): number;
  __wbindgen_free(ptr: number, size: number, align: number): void;
  __externref_table_dealloc(i: number): void;
  __wbindgen_start(): void;
  get_dmmf(ptr: number, len: number): [number, number, number, number];
}
interface WasmApi {
  Module: { new (bytes: Uint8Array): object; imports(m: object): { module: string; name: string }[] };
  Instance: new (m: object, imports: Record<string, Record<string, unknown>>) => { exports: unknown };
}

let wasm: WasmExports | undefined;

function wasmPath(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("prisma/package.json")), "build", "prisma_schema_build_bg.wasm");
}

function loadWasm(): WasmExports {
  if (wasm) return wasm;
  const api = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
  const module = new api.Module(readFileSync(wasmPath()));
  const decoder = new TextDecoder();
  // The imports are called later (from __wbindgen_start and get_dmmf) and reach the instance exports through this.
  const instance: { exports?: WasmExports } = {};
  const text = (ptr: number, len: number) => decoder.decode(new Uint8Array(instance.exports!.memory.buffer, ptr >>> 0, len));
  // wasm-bindgen import names carry a hash that changes between builds; match them by prefix.
  const env: Record<string, unknown> = {};
  for (const imp of api.Module.imports(module)) {
    const n = imp.name;
    if (n.startsWith("__wbg_set_message_")) env[n] = () => {}; // panic message hook; the panic surfaces as a trap
    else if (n.startsWith("__wbg_Error_")) env[n] = (ptr: number, len: number) => new Error(text(ptr, len));
    else if (n.startsWith("__wbg___wbindgen_throw_")) env[n] = (ptr: number, len: number) => {
      throw new Error(text(ptr, len));
    };
    else if (n === "__wbindgen_init_externref_table") env[n] = () => {
      const table = instance.exports!.__wbindgen_externrefs;
      const offset = table.grow(4);
      table.set(0, undefined);
      table.set(offset, undefined);
      table.set(offset + 1, null);
      table.set(offset + 2, true);
      table.set(offset + 3, false);
    };
    else {
      throw new Error(
        `the prisma schema WebAssembly module (${wasmPath()}) needs an unknown import ${n}; ` +
          `this Prisma version is not supported by @luna/kit/testing's schema reader`,
      );
    }
  }
  const exports = new api.Instance(module, { __wbindgen_placeholder__: env }).exports as WasmExports;
  instance.exports = exports;
  exports.__wbindgen_start(); // calls __wbindgen_init_externref_table
  wasm = exports;
  return exports;
}

function getDmmfJson(params: string): string {
  const w = loadWasm();
  const bytes = new TextEncoder().encode(params);
  const ptr = w.__wbindgen_malloc(bytes.length, 1) >>> 0;
  new Uint8Array(w.memory.buffer, ptr, bytes.length).set(bytes); // get_dmmf takes ownership of the buffer
  const [outPtr, outLen, errRef, isErr] = w.get_dmmf(ptr, bytes.length);
  if (isErr) {
    const err = w.__wbindgen_externrefs.get(errRef);
    w.__externref_table_dealloc(errRef);
    throw err;
  }
  try {
    return new TextDecoder().decode(new Uint8Array(w.memory.buffer, outPtr >>> 0, outLen));
  } finally {
    w.__wbindgen_free(outPtr, outLen, 1);
  }
}

/** Reads one schema file, or every *.prisma file under a folder (multi-file schemas). */
export function readSchemaFiles(schemaPath: string): [string, string][] {
  if (!statSync(schemaPath).isDirectory()) return [[schemaPath, readFileSync(schemaPath, "utf8")]];
  const files: [string, string][] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".prisma")) files.push([path, readFileSync(path, "utf8")]);
    }
  };
  walk(schemaPath);
  return files;
}

/** Parses schema files into Prisma's DMMF datamodel; invalid schemas throw Prisma's validation message. */
export function getDatamodel(files: [string, string][]): DmmfDatamodel {
  let json: string;
  try {
    json = getDmmfJson(JSON.stringify({ prismaSchema: files, noColor: true }));
  } catch (err) {
    const raw = err instanceof Error ? err.message : String(err);
    let message = raw;
    try {
      message = (JSON.parse(raw) as { message?: string }).message ?? raw;
    } catch {
      // not JSON: keep the raw text
    }
    throw new Error(`invalid Prisma schema (${files.map(([p]) => p).join(", ")}):\n${message}`);
  }
  const datamodel = (JSON.parse(json) as { datamodel: DmmfDatamodel }).datamodel;
  if (!Array.isArray(datamodel.indexes)) throw new Error("this Prisma version's DMMF has no `indexes`; the schema check needs Prisma ≥ 5");
  return datamodel;
}
