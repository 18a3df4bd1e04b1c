// Envoy's own v3 API, compiled here: @grpc/grpc-js-xds vendors envoy-api, xds (udpa), googleapis and
// protoc-gen-validate under deps/; buf (a devDependency) compiles them into a descriptor set, and protobuf-es parses a
// bootstrap against it with every `typed_config` resolved. Unknown fields, unknown `@type`s, bad enum values and
// malformed durations (`timeout: 0`) are errors, as in Envoy, and so are violations of the protoc-gen-validate rules
// the protos carry (pgv.ts). What protos cannot say (clusters that exist, filter order, ...) is checked by
// gateway/test/semantic.test.ts.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createFileRegistry, fromBinary, fromJson, toJson, type DescMessage, type JsonValue, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { parse } from "yaml";
import { validateMessage } from "./pgv.js";

const require = createRequire(import.meta.url);
const REPO = fileURLToPath(new URL("../../", import.meta.url));

function packageDir(name: string): string {
  return dirname(require.resolve(`${name}/package.json`));
}

function version(name: string): string {
  return (JSON.parse(readFileSync(join(packageDir(name), "package.json"), "utf8")) as { version: string }).version;
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".proto") ? [join(dir, e.name)] : []);
}

/** The vendored validate.proto predates `StringRules.ignore_empty`, which envoy-api uses: add it (in a copy). */
export function patchValidateProto(text: string): string {
  if (/\bignore_empty\s*=\s*26\b/.test(text)) return text;
  const patched = text.replace(/message StringRules \{(\r?\n)/, "message StringRules {$1    optional bool ignore_empty = 26;$1");
  if (patched === text) throw new Error("validate.proto: message StringRules not found (has @grpc/grpc-js-xds changed?)");
  return patched;
}

/**
 * Compiles every v3 file of the vendored envoy-api into a descriptor set (binary FileDescriptorSet). A few v3 files
 * import protos the package does not vendor (OpenCensus, OTLP); those and the files importing them are left out.
 */
export function buildEnvoyDescriptorSet(): Uint8Array {
  const deps = join(packageDir("@grpc/grpc-js-xds"), "deps");
  const work = mkdtempSync(join(tmpdir(), "luna-envoy-protos-"));
  try {
    for (const m of ["envoy-api", "xds", "googleapis"]) symlinkSync(join(deps, m), join(work, m));
    mkdirSync(join(work, "pgv", "validate"), { recursive: true });
    writeFileSync(join(work, "pgv", "validate", "validate.proto"),
      patchValidateProto(readFileSync(join(deps, "protoc-gen-validate", "validate", "validate.proto"), "utf8")));
    writeFileSync(join(work, "buf.yaml"), "version: v2\nmodules:\n  - path: envoy-api\n  - path: xds\n  - path: googleapis\n  - path: pgv\n");

    // Import graph of envoy-api (import paths are relative to a module root).
    const root = join(deps, "envoy-api");
    const imports = new Map<string, string[]>();
    for (const file of walk(root)) {
      const rel = relative(root, file);
      imports.set(rel, [...readFileSync(file, "utf8").matchAll(/^import\s+(?:public\s+)?"([^"]+)";/gm)].map((m) => m[1]!));
    }
    const bad = new Set<string>();
    const broken = (f: string, seen = new Set<string>()): boolean => {
      if (bad.has(f)) return true;
      if (seen.has(f)) return false;
      seen.add(f);
      return (imports.get(f) ?? []).some((i) => broken(i, seen));
    };
    const buf = join(REPO, "node_modules", ".bin", "buf");
    const out = join(work, "envoy.binpb");
    for (let attempt = 0; attempt < 6; attempt++) {
      const selected = [...imports.keys()].filter((f) => /\/v3\//.test(f) && !broken(f)).sort();
      try {
        execFileSync(buf, ["build", "-o", out, ...selected.flatMap((f) => ["--path", `envoy-api/${f}`])],
          { cwd: work, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 * 1024 * 1024 });
        return readFileSync(out);
      } catch (err) {
        const text = String((err as { stderr?: Buffer }).stderr ?? err);
        const failing = [...text.matchAll(/^envoy-api\/(\S+?\.proto):/gm)].map((m) => m[1]!);
        if (failing.length === 0) throw new Error(`buf build failed:\n${text.slice(0, 4000)}`);
        for (const f of failing) bad.add(f);
      }
    }
    throw new Error("buf build: envoy-api did not compile after leaving out the files with missing imports");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The cached descriptor set: built once per @grpc/grpc-js-xds and buf version under node_modules/.cache/luna/. */
export function envoyDescriptorSet(): Uint8Array {
  const cache = join(REPO, "node_modules", ".cache", "luna",
    `envoy-api-grpc-js-xds-${version("@grpc/grpc-js-xds")}-buf-${version("@bufbuild/buf")}.binpb`);
  if (existsSync(cache)) return readFileSync(cache);
  const bytes = buildEnvoyDescriptorSet();
  mkdirSync(dirname(cache), { recursive: true });
  // Written whole, then renamed: test workers building at once never read half a file.
  const tmp = `${cache}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, cache);
  return bytes;
}

let registry: Registry | undefined;

/** Every message of Envoy's v3 API (and its dependencies). */
export function envoyRegistry(): Registry {
  registry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, envoyDescriptorSet()));
  return registry;
}

export const BOOTSTRAP = "envoy.config.bootstrap.v3.Bootstrap";

function bootstrapSchema(): DescMessage {
  const desc = envoyRegistry().getMessage(BOOTSTRAP);
  if (!desc) throw new Error(`${BOOTSTRAP} is not in the descriptor set`);
  return desc;
}

/**
 * Parses a bootstrap (YAML text or an already parsed object) into Envoy's typed protos; throws on anything Envoy's
 * API does not define. Returns it in canonical proto JSON (camelCase, every Any expanded with its `@type`).
 */
export function parseBootstrap(config: string | JsonValue): JsonValue {
  const json = (typeof config === "string" ? parse(config) : config) as JsonValue;
  const registry = envoyRegistry();
  const msg = fromJson(bootstrapSchema(), json, { registry, ignoreUnknownFields: false });
  // Then the protoc-gen-validate rules Envoy enforces on load (required fields, lengths, bounds, defined enums).
  const violations = validateMessage(msg, bootstrapSchema(), registry);
  if (violations.length > 0) throw new Error(`invalid Envoy config (protoc-gen-validate rules):\n  ${violations.join("\n  ")}`);
  return toJson(bootstrapSchema(), msg, { registry });
}
