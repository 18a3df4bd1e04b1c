/** Test helpers: API-format graphs, a strict PNG reader, a recording websocket client, small HTTP helpers. */
import { inflateSync, crc32 } from "node:zlib";
import WebSocket from "ws";

/** An API-format graph as ComfyUI's "Export (API)" writes it, `_meta` titles included. */
export type Graph = Record<string, { class_type: string; inputs: Record<string, unknown>; _meta: { title: string } }>;

/** Adds `_meta.title` (the class name) to every node. */
function titled(nodes: Record<string, { class_type: string; inputs: Record<string, unknown> }>): Graph {
  return Object.fromEntries(Object.entries(nodes).map(([id, n]) => [id, { ...n, _meta: { title: n.class_type } }]));
}

export interface GraphParams {
  text?: string;
  negative?: string;
  seed?: number;
  width?: number;
  height?: number;
  batch?: number;
  steps?: number;
  prefix?: string;
  lora?: string;
}

/** The SDXL text-to-image graph from REFERENCE.md (optionally with a LoRA between checkpoint and encoders). */
export function sdxlGraph(p: GraphParams = {}): Graph {
  const g: Graph = titled({
    "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "sd_xl_base_1.0.safetensors" } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: p.text ?? "a lighthouse on a cliff at dusk", clip: ["4", 1] } },
    "7": { class_type: "CLIPTextEncode", inputs: { text: p.negative ?? "blurry, low quality", clip: ["4", 1] } },
    "5": { class_type: "EmptyLatentImage", inputs: { width: p.width ?? 1024, height: p.height ?? 1024, batch_size: p.batch ?? 1 } },
    "3": {
      class_type: "KSampler",
      inputs: {
        model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0],
        seed: p.seed ?? 156680208700286, steps: p.steps ?? 20, cfg: 7, sampler_name: "dpmpp_2m", scheduler: "karras", denoise: 1,
      },
    },
    "8": { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: p.prefix ?? "ComfyUI" } },
  });
  if (p.lora) {
    g["10"] = {
      class_type: "LoraLoader",
      inputs: { model: ["4", 0], clip: ["4", 1], lora_name: p.lora, strength_model: 0.8, strength_clip: 0.8 },
      _meta: { title: "Load LoRA" },
    };
    (g["6"] as Graph[string]).inputs.clip = ["10", 1];
    (g["7"] as Graph[string]).inputs.clip = ["10", 1];
    (g["3"] as Graph[string]).inputs.model = ["10", 0];
  }
  return g;
}

/** The FLUX.1 schnell (fp8 single file) graph from REFERENCE.md: empty negative, SD3 latent, 4 steps, cfg 1. */
export function fluxGraph(p: GraphParams = {}): Graph {
  return titled({
    "30": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "flux1-schnell-fp8.safetensors" } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: p.text ?? "a red fox in fresh snow, photo", clip: ["30", 1] } },
    "33": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["30", 1] } },
    "27": { class_type: "EmptySD3LatentImage", inputs: { width: p.width ?? 1024, height: p.height ?? 768, batch_size: p.batch ?? 1 } },
    "31": {
      class_type: "KSampler",
      inputs: {
        model: ["30", 0], positive: ["6", 0], negative: ["33", 0], latent_image: ["27", 0],
        seed: p.seed ?? 972054013131368, steps: p.steps ?? 4, cfg: 1.0, sampler_name: "euler", scheduler: "simple", denoise: 1,
      },
    },
    "8": { class_type: "VAEDecode", inputs: { samples: ["31", 0], vae: ["30", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: p.prefix ?? "ComfyUI" } },
  });
}

export interface DecodedPng {
  width: number;
  height: number;
  text: Record<string, string>;
  /** Scanlines after inflating IDAT (filter byte + RGB per row). */
  raw: Buffer;
}

/**
 * Reads a PNG strictly: signature, chunk CRCs, IHDR first and IEND last, 8-bit RGB, and IDAT that inflates to exactly
 * the scanlines the size calls for. Throws on any violation.
 */
export function decodePng(buf: Buffer): DecodedPng {
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (!buf.subarray(0, 8).equals(sig)) throw new Error("bad PNG signature");
  let at = 8;
  let width = 0;
  let height = 0;
  const idat: Buffer[] = [];
  const text: Record<string, string> = {};
  const types: string[] = [];
  while (at < buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString("latin1", at + 4, at + 8);
    const data = buf.subarray(at + 8, at + 8 + len);
    const crc = buf.readUInt32BE(at + 8 + len);
    if (crc32(buf.subarray(at + 4, at + 8 + len)) !== crc) throw new Error(`bad CRC in ${type}`);
    types.push(type);
    if (type === "IHDR") {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8 || data[9] !== 2) throw new Error("expected 8-bit RGB");
    } else if (type === "IDAT") idat.push(data);
    else if (type === "tEXt") {
      const nul = data.indexOf(0);
      text[data.toString("latin1", 0, nul)] = data.toString("latin1", nul + 1);
    }
    at += 12 + len;
  }
  if (types[0] !== "IHDR" || types.at(-1) !== "IEND") throw new Error(`bad chunk order ${types.join(",")}`);
  const raw = inflateSync(Buffer.concat(idat));
  if (raw.length !== (width * 3 + 1) * height) throw new Error("IDAT size does not match IHDR");
  return { width, height, text, raw };
}

export type WsMessage = { type: string; data: Record<string, unknown> } | { binary: Buffer };

/** A websocket client that records every message in arrival order. */
export class Recorder {
  readonly messages: WsMessage[] = [];
  private readonly ws: WebSocket;
  private listeners = new Set<() => void>();

  private constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on("message", (data, isBinary) => {
      const buf = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      this.messages.push(isBinary ? { binary: buf } : (JSON.parse(buf.toString("utf8")) as WsMessage));
      for (const l of [...this.listeners]) l();
    });
    this.ws.on("close", () => {
      for (const l of [...this.listeners]) l();
    });
  }

  /** Connects to `<wsUrl>?clientId=<clientId>` (no clientId: the server picks one). */
  static async open(wsUrl: string, clientId?: string): Promise<Recorder> {
    const r = new Recorder(clientId === undefined ? wsUrl : `${wsUrl}?clientId=${encodeURIComponent(clientId)}`);
    await new Promise<void>((resolve, reject) => {
      r.ws.once("open", () => resolve());
      r.ws.once("error", reject);
    });
    return r;
  }

  get closed(): boolean {
    return this.ws.readyState === WebSocket.CLOSED;
  }

  json(): { type: string; data: Record<string, unknown> }[] {
    return this.messages.filter((m): m is { type: string; data: Record<string, unknown> } => "type" in m);
  }

  binary(): Buffer[] {
    return this.messages.filter((m): m is { binary: Buffer } => "binary" in m).map((m) => m.binary);
  }

  /** Resolves when `pred` holds for the recorded messages; rejects after `timeoutMs`. */
  waitFor(pred: (r: Recorder) => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
    if (pred(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.json().map((m) => m.type))}`));
      }, timeoutMs);
      const check = () => {
        if (!pred(this)) return;
        clearTimeout(timer);
        this.listeners.delete(check);
        resolve();
      };
      this.listeners.add(check);
    });
  }

  /** Waits for `executing {node: null, prompt_id}`, ComfyUI's "prompt finished". */
  finished(promptId: string, timeoutMs = 5000): Promise<void> {
    return this.waitFor(
      (r) => r.json().some((m) => m.type === "executing" && m.data.node === null && m.data.prompt_id === promptId),
      timeoutMs,
      `prompt ${promptId} to finish`,
    );
  }

  close(): void {
    this.ws.close();
  }
}

export interface HttpResult {
  status: number;
  body: unknown;
  text: string;
}

async function toResult(res: Response): Promise<HttpResult> {
  const text = await res.text();
  let body: unknown = undefined;
  try {
    body = text === "" ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

export async function getJson(base: string, path: string): Promise<HttpResult> {
  return toResult(await fetch(base + path));
}

/** POSTs `body` (serialized unless it is already a string). */
export async function postJson(base: string, path: string, body?: unknown): Promise<HttpResult> {
  const init: RequestInit = { method: "POST", headers: { "Content-Type": "application/json" } };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  return toResult(await fetch(base + path, init));
}

/** Polls `/history/{id}` until the entry has a status; returns the entry. */
export async function waitForHistory(base: string, promptId: string, timeoutMs = 5000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await getJson(base, `/history/${encodeURIComponent(promptId)}`);
    const entry = (r.body as Record<string, Record<string, unknown>> | undefined)?.[promptId];
    if (entry) return entry;
    if (Date.now() > deadline) throw new Error(`no history for ${promptId} after ${timeoutMs} ms`);
    await new Promise((r2) => setTimeout(r2, 10));
  }
}

/** Polls until `pred()` is true. */
export async function eventually(pred: () => boolean | Promise<boolean>, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
