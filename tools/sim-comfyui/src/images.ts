/**
 * The simulated output/temp directories: PNG files kept in memory, named and numbered the way ComfyUI's
 * `folder_paths.get_save_image_path` and SaveImage name them (`<prefix>_00001_.png`, counting up per prefix and
 * subfolder), and looked up by `/view` with ComfyUI's path checks.
 */
import { posix } from "node:path";

/** The directories `/view` can read. */
export type ImageDirType = "output" | "temp" | "input";

/** One saved image as it appears in `executed` messages and `/history` outputs. */
export interface ImageRef {
  filename: string;
  subfolder: string;
  type: ImageDirType;
}

/** Raised for a filename_prefix that escapes the output directory (ComfyUI raises the same while saving). */
export class OutsideOutputError extends Error {}

function key(type: ImageDirType, subfolder: string, filename: string): string {
  return `${type}\u0000${subfolder}\u0000${filename}`;
}

/** Stand-in for the absolute output directory in messages (ComfyUI prints real paths). */
const OUTPUT_DIR = "/comfyui/output";

export class ImageStore {
  private readonly files = new Map<string, Buffer>();
  private readonly counters = new Map<string, number>();

  /** @param maxImages oldest images are forgotten beyond this many (real files would stay on disk). */
  constructor(private readonly maxImages: number) {}

  get size(): number {
    return this.files.size;
  }

  /**
   * Where SaveImage puts the next images for `filenamePrefix`: the subfolder, the base name and the first counter.
   * Supports ComfyUI's `%width%`/`%height%` (and date) variables and `sub/dir/prefix`.
   */
  savePath(filenamePrefix: string, width: number, height: number, type: ImageDirType = "output"): { subfolder: string; base: string; counter: number } {
    let prefix = filenamePrefix;
    if (prefix.includes("%")) prefix = computeVars(prefix, width, height);
    const normalized = posix.normalize(prefix === "" ? "." : prefix);
    const subfolder = posix.dirname(normalized) === "." ? "" : posix.dirname(normalized);
    const base = posix.basename(normalized);
    if (posix.isAbsolute(normalized) || subfolder === ".." || subfolder.startsWith("../")) {
      const full = posix.resolve(OUTPUT_DIR, subfolder);
      throw new OutsideOutputError(
        "**** ERROR: Saving image outside the output folder is not allowed." +
        `\n full_output_folder: ${full}\n         output_dir: ${OUTPUT_DIR}`,
      );
    }
    const counter = this.counters.get(key(type, subfolder, base)) ?? 1;
    return { subfolder, base, counter };
  }

  /** Stores a file; `counter` is the number in its name, so the next save of the prefix continues after it. */
  put(ref: ImageRef, png: Buffer, counterKey?: { base: string; counter: number }): void {
    const k = key(ref.type, ref.subfolder, ref.filename);
    this.files.delete(k);
    this.files.set(k, png);
    if (counterKey) {
      const ck = key(ref.type, ref.subfolder, counterKey.base);
      this.counters.set(ck, Math.max(this.counters.get(ck) ?? 1, counterKey.counter + 1));
    }
    while (this.files.size > this.maxImages) {
      const oldest = this.files.keys().next().value as string;
      this.files.delete(oldest);
    }
  }

  get(type: ImageDirType, subfolder: string, filename: string): Buffer | undefined {
    return this.files.get(key(type, subfolder, filename));
  }

  /** Drops the temp directory (ComfyUI empties it on start). */
  clearTemp(): void {
    for (const k of [...this.files.keys()]) if (k.startsWith("temp\u0000")) this.files.delete(k);
    for (const k of [...this.counters.keys()]) if (k.startsWith("temp\u0000")) this.counters.delete(k);
  }

  clear(): void {
    this.files.clear();
    this.counters.clear();
  }
}

function computeVars(input: string, width: number, height: number): string {
  const now = new Date();
  const pad = (n: number) => String(n).padStart(2, "0");
  return input
    .replaceAll("%width%", String(width))
    .replaceAll("%height%", String(height))
    .replaceAll("%year%", String(now.getFullYear()))
    .replaceAll("%month%", pad(now.getMonth() + 1))
    .replaceAll("%day%", pad(now.getDate()))
    .replaceAll("%hour%", pad(now.getHours()))
    .replaceAll("%minute%", pad(now.getMinutes()))
    .replaceAll("%second%", pad(now.getSeconds()));
}

/** The outcome of resolving a `/view` query, with ComfyUI's status codes. */
export type ViewLookup =
  | { status: 200; png: Buffer; filename: string }
  | { status: 400 | 403 | 404 };

/**
 * Resolves `/view?filename=&subfolder=&type=` like ComfyUI: 400 for a filename starting with `/` or containing `..`
 * (or an unknown type), 403 for a subfolder that leaves the directory, 404 when there is no such file. A filename may
 * carry ComfyUI's annotation suffix, e.g. `x.png [temp]`.
 */
export function lookupView(store: ImageStore, query: URLSearchParams): ViewLookup {
  let filename = query.get("filename");
  if (filename === null) return { status: 404 };
  let annotated: ImageDirType | undefined;
  const m = /^(.*) \[(output|input|temp)\]$/.exec(filename);
  if (m) {
    filename = m[1] as string;
    annotated = m[2] as ImageDirType;
  }
  if (filename === "" || filename.startsWith("/") || filename.includes("..")) return { status: 400 };
  const type = annotated ?? query.get("type") ?? "output";
  if (type !== "output" && type !== "temp" && type !== "input") return { status: 400 };
  let subfolder = "";
  const rawSub = query.get("subfolder");
  if (rawSub !== null && rawSub !== "") {
    // os.path.join(output_dir, subfolder) must stay inside output_dir (an absolute subfolder replaces it).
    const joined = posix.normalize(posix.join("/root", rawSub));
    if (posix.isAbsolute(rawSub) || !(joined === "/root" || joined.startsWith("/root/"))) return { status: 403 };
    subfolder = joined === "/root" ? "" : joined.slice("/root/".length);
  }
  const base = posix.basename(filename);
  const png = store.get(type, subfolder, base);
  return png ? { status: 200, png, filename: base } : { status: 404 };
}
