// A small ComfyUI client for the image worker: HTTP calls with deadlines and defensive parsing (a malformed answer
// is an error, never a crash), plus one websocket per worker that routes events to the prompt they belong to. The
// websocket is a fast path only: it is known to stall, so callers also poll /history.
import { EventEmitter } from "node:events";
import http from "node:http";
import https from "node:https";
import WebSocket from "ws";

/** A file ComfyUI wrote (`/view?filename=&subfolder=&type=`). */
export interface ComfyImageRef {
  filename: string;
  subfolder: string;
  type: string;
}

/** What /history says about a finished prompt. */
export type HistoryState =
  | { state: "success"; images: ComfyImageRef[] }
  | { state: "error"; message: string; interrupted: boolean };

export type SubmitResult =
  | { ok: true }
  /** ComfyUI refused the graph (400): never retried. */
  | { ok: false; kind: "invalid"; message: string }
  /** The prompt id is already queued or running (a simulator answer; ComfyUI itself would queue a copy). */
  | { ok: false; kind: "duplicate" };

/** A transient failure (network, timeout, 5xx, unparsable answer): the caller may retry. */
export class ComfyUnavailableError extends Error {
  override name = "ComfyUnavailableError";
}

/** Events of one prompt from the websocket. */
export type PromptEvent =
  | { type: "progress"; value: number; max: number }
  | { type: "preview"; image: Buffer; contentType: string }
  | { type: "finished" };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

/** Parses one `/history/{id}` entry; undefined when it is not a finished prompt's entry. */
export function parseHistoryEntry(entry: unknown): HistoryState | undefined {
  if (!isObject(entry)) return undefined;
  const status = isObject(entry.status) ? entry.status : undefined;
  const messages = status && Array.isArray(status.messages) ? status.messages : [];
  const find = (name: string): Record<string, unknown> | undefined => {
    for (const m of messages) {
      if (Array.isArray(m) && m[0] === name && isObject(m[1])) return m[1];
    }
    return undefined;
  };
  if (status && status.status_str === "error") {
    const err = find("execution_error");
    if (err) {
      const node = str(err.node_type) || str(err.node_id);
      const exc = str(err.exception_type);
      const text = str(err.exception_message).trim() || "execution failed";
      return { state: "error", interrupted: false, message: `${node ? `${node}: ` : ""}${exc ? `${exc}: ` : ""}${text}`.slice(0, 2000) };
    }
    if (find("execution_interrupted")) return { state: "error", interrupted: true, message: "interrupted" };
    return { state: "error", interrupted: false, message: "execution failed" };
  }
  if (status && status.completed === false && status.status_str !== "success") return undefined;
  const images: ComfyImageRef[] = [];
  const outputs = isObject(entry.outputs) ? entry.outputs : {};
  // Node ids are usually numbers as strings: sort numerically so the batch order is stable.
  const nodeIds = Object.keys(outputs).sort((a, b) => (Number(a) - Number(b)) || (a < b ? -1 : a > b ? 1 : 0));
  for (const id of nodeIds) {
    const out = outputs[id];
    if (!isObject(out) || !Array.isArray(out.images)) continue;
    for (const img of out.images) {
      if (!isObject(img) || typeof img.filename !== "string" || img.filename === "") continue;
      const type = str(img.type) || "output";
      if (type !== "output") continue; // previews ("temp") are not results
      images.push({ filename: img.filename, subfolder: str(img.subfolder), type });
    }
  }
  return { state: "success", images };
}

/** Pulls a human message out of a 400 answer of POST /prompt (both the object and the older string shape). */
export function promptErrorMessage(body: unknown): string {
  if (!isObject(body)) return "ComfyUI refused the workflow";
  const err = body.error;
  let message = typeof err === "string" ? err : isObject(err) ? [str(err.message), str(err.details)].filter(Boolean).join(": ") : "";
  if (isObject(body.node_errors)) {
    const details: string[] = [];
    for (const [id, ne] of Object.entries(body.node_errors)) {
      if (!isObject(ne) || !Array.isArray(ne.errors)) continue;
      for (const e of ne.errors) {
        if (isObject(e)) details.push(`node ${id} (${str(ne.class_type)}): ${str(e.message)}${str(e.details) ? ` — ${str(e.details)}` : ""}`);
      }
    }
    if (details.length > 0) message = `${message}${message ? "; " : ""}${details.join("; ")}`;
  }
  return (message || "ComfyUI refused the workflow").slice(0, 2000);
}

/** Width and height from a PNG's IHDR chunk; undefined when the bytes are not a PNG. */
export function pngSize(bytes: Buffer): { width: number; height: number } | undefined {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length < 24 || !sig.every((b, i) => bytes[i] === b) || bytes.toString("latin1", 12, 16) !== "IHDR") return undefined;
  const width = bytes.readUInt32BE(16);
  const height = bytes.readUInt32BE(20);
  return width > 0 && height > 0 ? { width, height } : undefined;
}

export interface ComfyClientOptions {
  baseUrl: string;
  /** Websocket client id; prompts are submitted with it so their events come to us. */
  clientId: string;
  /** Deadline of one HTTP request. */
  requestTimeoutMs: number;
  log: { warn(obj: object, msg?: string): void; debug(obj: object, msg?: string): void };
  /** Wait before reconnecting a closed websocket (default 1 s). */
  reconnectMs?: number;
}

/** An HTTP answer of ComfyUI, read completely (JSON documents and output images: small enough to buffer). */
interface ComfyResponse {
  status: number;
  body: Buffer;
}

export class ComfyClient {
  private readonly base: string;
  private readonly url: URL;
  /**
   * node:http with a keep-alive agent rather than fetch: the worker makes a handful of small requests per job to
   * one host, and undici's fetch (WHATWG streams, abort signals) cost several times the CPU of a plain request.
   */
  private readonly agent: http.Agent;
  private ws: WebSocket | undefined;
  private stopped = true;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly events = new EventEmitter();
  /** Prompt whose binary previews are arriving (ComfyUI does not tag binary frames). */
  private currentPrompt: string | undefined;

  constructor(private readonly opts: ComfyClientOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, "");
    this.url = new URL(this.base);
    this.agent = this.url.protocol === "https:" ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    this.events.setMaxListeners(0);
  }

  get clientId(): string {
    return this.opts.clientId;
  }

  /** When ComfyUI last answered (any HTTP status below 500). */
  lastAnswerAt = 0;

  /** One request with a deadline over the whole exchange (connect, answer, body); network faults are transient. */
  private request(path: string, init: { method?: "GET" | "POST"; body?: string } = {}): Promise<ComfyResponse> {
    const method = init.method ?? "GET";
    const what = `ComfyUI ${method} ${path.split("?")[0]}`;
    const lib = this.url.protocol === "https:" ? https : http;
    return new Promise<ComfyResponse>((resolve, reject) => {
      const body = init.body === undefined ? undefined : Buffer.from(init.body);
      const req = lib.request({
        protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port || undefined,
        path: `${this.url.pathname.replace(/\/+$/, "")}${path}`, method, agent: this.agent,
        headers: body ? { "content-type": "application/json", "content-length": body.length } : {},
      });
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.destroy();
        reject(new ComfyUnavailableError(`${what}: ${err.message}`));
      };
      const timer = setTimeout(() => fail(new Error(`no complete answer within ${this.opts.requestTimeoutMs} ms`)), this.opts.requestTimeoutMs);
      req.on("error", fail);
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", fail);
        res.on("aborted", () => fail(new Error("answer cut off")));
        res.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const status = res.statusCode ?? 0;
          if (status < 500) this.lastAnswerAt = Date.now();
          resolve({ status, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) });
        });
      });
      req.end(body);
    });
  }

  private async json(path: string, init?: { method?: "GET" | "POST"; body?: string }): Promise<{ status: number; body: unknown }> {
    const res = await this.request(path, init);
    let body: unknown;
    try {
      body = res.body.length > 0 ? JSON.parse(res.body.toString("utf8")) : undefined;
    } catch {
      body = undefined;
    }
    if (res.status >= 500) throw new ComfyUnavailableError(`ComfyUI ${path.split("?")[0]}: HTTP ${res.status}`);
    return { status: res.status, body };
  }

  private post(path: string, body: unknown): Promise<{ status: number; body: unknown }> {
    return this.json(path, { method: "POST", body: JSON.stringify(body) });
  }

  /** Resolves when ComfyUI answers; throws ComfyUnavailableError otherwise. */
  async ping(): Promise<void> {
    const { status } = await this.json("/queue");
    if (status !== 200) throw new ComfyUnavailableError(`ComfyUI /queue: HTTP ${status}`);
  }

  /** Queues a graph under our prompt id. */
  async submit(promptId: string, graph: unknown): Promise<SubmitResult> {
    const { status, body } = await this.post("/prompt", { prompt: graph, client_id: this.opts.clientId, prompt_id: promptId });
    if (status === 200) {
      if (isObject(body) && typeof body.prompt_id === "string" && body.prompt_id !== promptId) {
        // An old ComfyUI that ignores client prompt ids: we could never find the result again.
        throw new Error(`ComfyUI ignored the prompt id (answered ${body.prompt_id}); it needs client prompt_id support`);
      }
      return { ok: true };
    }
    if (status === 400) {
      if (isObject(body) && isObject(body.error) && body.error.type === "duplicate_prompt_id") return { ok: false, kind: "duplicate" };
      return { ok: false, kind: "invalid", message: promptErrorMessage(body) };
    }
    throw new ComfyUnavailableError(`ComfyUI /prompt: HTTP ${status}`);
  }

  /** The finished prompt's entry, or undefined while it is queued, running or unknown. */
  async history(promptId: string): Promise<HistoryState | undefined> {
    const { status, body } = await this.json(`/history/${encodeURIComponent(promptId)}`);
    if (status !== 200 || !isObject(body)) throw new ComfyUnavailableError(`ComfyUI /history: unexpected answer (HTTP ${status})`);
    return parseHistoryEntry(body[promptId]);
  }

  /** Where the prompt is in ComfyUI's queue, if anywhere. */
  async queueState(promptId: string): Promise<"running" | "pending" | undefined> {
    const { status, body } = await this.json("/queue");
    if (status !== 200 || !isObject(body)) throw new ComfyUnavailableError(`ComfyUI /queue: unexpected answer (HTTP ${status})`);
    const has = (list: unknown) => Array.isArray(list) && list.some((t) => Array.isArray(t) && t[1] === promptId);
    if (has(body.queue_running)) return "running";
    if (has(body.queue_pending)) return "pending";
    return undefined;
  }

  /** Stops the prompt if it runs and removes it if it waits. Best effort. */
  async cancel(promptId: string): Promise<void> {
    await Promise.allSettled([this.post("/interrupt", { prompt_id: promptId }), this.post("/queue", { delete: [promptId] })]);
  }

  /** Downloads an output file. */
  async view(ref: ComfyImageRef): Promise<Buffer> {
    const q = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder, type: ref.type });
    const res = await this.request(`/view?${q.toString()}`);
    if (res.status !== 200) {
      const msg = `ComfyUI /view ${ref.subfolder ? `${ref.subfolder}/` : ""}${ref.filename}: HTTP ${res.status}`;
      if (res.status >= 500) throw new ComfyUnavailableError(msg);
      throw new Error(msg);
    }
    return res.body;
  }

  /** Subscribes to a prompt's websocket events; returns the unsubscribe function. */
  onPrompt(promptId: string, fn: (ev: PromptEvent) => void): () => void {
    this.events.on(promptId, fn);
    return () => this.events.off(promptId, fn);
  }

  /** Opens the websocket (and keeps reopening it until close()). */
  connect(): void {
    this.stopped = false;
    this.open();
  }

  close(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.ws?.terminate();
    this.ws = undefined;
    this.agent.destroy(); // idle keep-alive sockets; a later request opens a new one
  }

  private open(): void {
    if (this.stopped) return;
    const wsUrl = `${this.base.replace(/^http/, "ws")}/ws?clientId=${encodeURIComponent(this.opts.clientId)}`;
    const ws = new WebSocket(wsUrl);
    this.ws = ws;
    ws.on("message", (data, isBinary) => {
      try {
        if (isBinary) this.onBinary(Buffer.isBuffer(data) ? data : Buffer.concat(data as Buffer[]));
        else this.onText(data.toString());
      } catch (err) {
        this.opts.log.debug({ err }, "unparsable ComfyUI websocket message ignored");
      }
    });
    ws.on("error", (err) => this.opts.log.debug({ err: err.message }, "ComfyUI websocket error"));
    ws.on("close", () => {
      if (this.ws === ws) this.ws = undefined;
      if (this.stopped) return;
      this.reconnectTimer = setTimeout(() => this.open(), this.opts.reconnectMs ?? 1000);
      this.reconnectTimer.unref();
    });
  }

  private onText(text: string): void {
    const msg: unknown = JSON.parse(text);
    if (!isObject(msg) || !isObject(msg.data)) return;
    const data = msg.data;
    const promptId = str(data.prompt_id);
    if (!promptId) return;
    switch (msg.type) {
      case "execution_start":
        this.currentPrompt = promptId;
        break;
      case "executing":
        if (data.node === null) {
          if (this.currentPrompt === promptId) this.currentPrompt = undefined;
          this.events.emit(promptId, { type: "finished" } satisfies PromptEvent);
        } else {
          this.currentPrompt = promptId;
        }
        break;
      case "progress":
        if (typeof data.value === "number" && typeof data.max === "number" && data.max > 0) {
          this.currentPrompt = promptId;
          this.events.emit(promptId, { type: "progress", value: data.value, max: data.max } satisfies PromptEvent);
        }
        break;
      case "execution_success":
      case "execution_error":
      case "execution_interrupted":
        this.events.emit(promptId, { type: "finished" } satisfies PromptEvent);
        break;
      default:
        break;
    }
  }

  private onBinary(frame: Buffer): void {
    // 4-byte big-endian event type (1 = preview image), 4-byte format (1 = JPEG, 2 = PNG), then the image.
    if (frame.length < 8 || frame.readUInt32BE(0) !== 1 || !this.currentPrompt) return;
    const format = frame.readUInt32BE(4);
    const contentType = format === 2 ? "image/png" : "image/jpeg";
    this.events.emit(this.currentPrompt, { type: "preview", image: frame.subarray(8), contentType } satisfies PromptEvent);
  }
}
