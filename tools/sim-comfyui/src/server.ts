/**
 * ComfyUI's HTTP API and `/ws` websocket over node:http and `ws`, every route also under `/api`, plus the simulator's
 * control endpoints under `/_sim`. Status codes and bodies follow ComfyUI's aiohttp server, except that malformed
 * request bodies get a 400 JSON error instead of a 500.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { WebSocketServer, WebSocket } from "ws";
import { buildCatalog, objectInfo, type Catalog } from "./catalog.js";
import { Engine, type Outbox, type Reply } from "./engine.js";
import { lookupView } from "./images.js";
import type { ResolvedOptions, SimFaults, SimStats } from "./options.js";

/** Version strings reported by `/system_stats`. */
const COMFYUI_VERSION = "0.3.68";
const PYTHON_VERSION = "3.12.10 (main, Apr  9 2025, 04:44:59) [GCC 14.2.0]";
const PYTORCH_VERSION = "2.8.0+cu128";
const GIB = 1024 ** 3;

/** Largest incoming websocket message; clients only ever send small JSON (feature flags). */
const MAX_WS_MESSAGE_BYTES = 1024 * 1024;

/** Shortest time a restarted server stays down, and event-loop turns it waits after that (see restart()). */
const MIN_DOWN_MS = 5;
const SETTLE_TURNS = 2;

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

/** aiohttp's bare `web.Response(status=...)`: no body. */
function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status, { "Content-Length": 0 });
  res.end();
}

function sendText(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

function reply(res: ServerResponse, r: Reply): void {
  if (r.body === null) sendEmpty(res, r.status);
  else sendJson(res, r.status, r.body);
}

function jsonError(message: string, details = "", type = "invalid_request"): Reply {
  return { status: 400, body: { error: { type, message, details, extra_info: {} }, node_errors: {} } };
}

type Json = { ok: true; value: unknown } | { ok: false; error: string };

function parseJson(body: Buffer): Json {
  const text = body.toString("utf8");
  if (text.trim() === "") return { ok: false, error: "empty body" };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

function optionalInt(q: URLSearchParams, name: string): number | undefined | Error {
  const raw = q.get(name);
  if (raw === null || raw === "") return undefined;
  if (!/^-?\d+$/.test(raw)) return new Error(`${name} must be an integer`);
  return Number(raw);
}

export class SimServer {
  readonly catalog: Catalog;
  readonly engine: Engine;
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly sockets = new Map<string, WebSocket>();
  private boundPort: number;
  private closed = false;
  private restarting: Promise<void> | null = null;

  /** Epoch ms at which the simulated load ends (cold-start mode); <= now when ready. */
  readyAt: number;

  /** Starts a cold start of `ms` (default: the configured `coldStartMs`) now; returns when it ends (epoch ms). */
  coldStart(ms = this.opts.coldStartMs): number {
    if (!Number.isInteger(ms) || ms < 0) throw new RangeError(`cold start ms must be a non-negative integer, got ${String(ms)}`);
    this.readyAt = Date.now() + ms;
    return this.readyAt;
  }

  constructor(private readonly opts: ResolvedOptions) {
    this.readyAt = Date.now() + opts.coldStartMs;
    this.catalog = buildCatalog({ checkpoints: opts.checkpoints, loras: opts.loras });
    const outbox: Outbox = {
      sendJson: (event, data, sid) => this.send(JSON.stringify({ type: event, data }), sid),
      sendBinary: (frame, sid) => this.send(frame, sid),
    };
    this.engine = new Engine(opts, this.catalog, outbox, (downMs) => void this.restart(downMs));
    this.boundPort = opts.port;
    this.http = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.opts.log(`internal error on ${req.method} ${req.url}: ${err instanceof Error ? err.stack : String(err)}`);
        if (!res.headersSent) sendJson(res, 500, { error: { type: "internal_error", message: "Internal server error", details: "", extra_info: {} }, node_errors: {} });
        else res.destroy();
      });
    });
    this.wss = new WebSocketServer({ noServer: true, maxPayload: MAX_WS_MESSAGE_BYTES });
    this.http.on("upgrade", (req, socket, head) => this.upgrade(req, socket as Socket, head));
    this.wss.on("connection", (ws, req) => this.connected(ws, req));
  }

  get port(): number {
    return this.boundPort;
  }

  /** Starts listening (on the configured port, or the same one again after a restart). */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.http.once("error", onError);
      this.http.listen(this.boundPort, this.opts.host, () => {
        this.http.off("error", onError);
        this.boundPort = (this.http.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  /** Stops everything; the running prompt is abandoned. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.engine.stop();
    await this.dropListener();
    this.wss.close();
  }

  /**
   * A crash and restart: connections are cut, the in-memory queue (and history, unless configured otherwise) is lost,
   * the port refuses connections for `downMs`, then the server listens again on the same port.
   */
  restart(downMs = 0): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.restarting) return this.restarting;
    this.opts.log(`restarting (down for ${downMs} ms)`);
    this.engine.crashState();
    this.restarting = (async () => {
      try {
        await this.dropListener();
        await new Promise((r) => setTimeout(r, Math.max(downMs, MIN_DOWN_MS)));
        // Let the event loop poll I/O before accepting again, so in-process clients have seen their pooled
        // keep-alive sockets close (otherwise their next request may go out on a dead socket). setImmediate runs
        // right after a poll phase, even when the timer above was already overdue.
        for (let i = 0; i < SETTLE_TURNS; i++) await new Promise((r) => setImmediate(r));
        if (!this.closed) await this.listen();
      } finally {
        this.restarting = null;
      }
    })();
    return this.restarting;
  }

  private async dropListener(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    this.sockets.clear();
    if (!this.http.listening) return;
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }

  // ---------------------------------------------------------------- websocket

  private send(payload: string | Buffer, sid: string | null): void {
    const targets = sid === null ? [...this.sockets.values()] : [this.sockets.get(sid)];
    for (const ws of targets) {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(payload, { binary: typeof payload !== "string" });
    }
  }

  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    let path = "";
    try {
      path = new URL(req.url ?? "/", "http://sim").pathname;
    } catch {
      // unparsable URL: answered as not found below
    }
    if (path !== "/ws" && path !== "/api/ws") {
      socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit("connection", ws, req));
  }

  private connected(ws: WebSocket, req: IncomingMessage): void {
    const query = new URL(req.url ?? "/", "http://sim").searchParams;
    // Reusing a clientId takes over that session (the previous socket stops receiving), as in ComfyUI.
    const sid = query.get("clientId") || randomUUID().replaceAll("-", "");
    this.sockets.set(sid, ws);
    this.engine.countConnection();
    ws.on("close", () => {
      if (this.sockets.get(sid) === ws) this.sockets.delete(sid);
    });
    ws.on("error", () => ws.terminate());
    // Incoming messages (e.g. feature_flags from newer frontends) need no answer here.
    ws.on("message", () => {});
    this.engine.greet(sid);
  }

  // ---------------------------------------------------------------- HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://sim");
    } catch {
      sendText(res, 400, "400: Bad Request");
      return;
    }
    let path = url.pathname;
    if (path === "/api" || path.startsWith("/api/")) path = path.slice(4) || "/";
    const method = req.method ?? "GET";
    const q = url.searchParams;

    let body: Json = { ok: false, error: "empty body" };
    if (method === "POST" || method === "PUT" || method === "PATCH") {
      try {
        body = parseJson(await readBody(req, this.opts.maxBodyBytes));
      } catch (err) {
        if (!(err instanceof BodyTooLarge)) throw err;
        res.setHeader("Connection", "close");
        sendJson(res, 413, { error: { type: "request_too_large", message: `Request body larger than ${this.opts.maxBodyBytes} bytes`, details: "", extra_info: {} }, node_errors: {} });
        return;
      }
    }
    const needJson = (fn: (v: unknown) => Reply): void => {
      reply(res, body.ok ? fn(body.value) : jsonError("Invalid JSON body", body.error));
    };

    // Cold-start mode: still loading, so only the control routes answer (prompts are refused).
    if (Date.now() < this.readyAt && !path.startsWith("/_sim/")) {
      res.setHeader("Retry-After", String(Math.max(1, Math.ceil((this.readyAt - Date.now()) / 1000))));
      if (method === "POST" && path === "/prompt") this.engine.countRejected();
      sendText(res, 503, "503: Service Unavailable (simulated cold start: loading models)");
      return;
    }
    const route = `${method} ${path}`;
    switch (route) {
      case "GET /":
        sendText(res, 200, "sim-comfyui: a ComfyUI-compatible simulator. API: /prompt, /ws, /history, /view, /queue, /object_info, /system_stats.\n");
        return;
      case "GET /ws":
        // A plain GET (no Upgrade header); aiohttp answers the same way.
        sendText(res, 400, "No WebSocket UPGRADE hdr: None\n Can \"Upgrade\" only to \"WebSocket\".");
        return;
      case "GET /prompt":
        sendJson(res, 200, this.engine.queueInfo());
        return;
      case "POST /prompt":
        if (!body.ok) {
          this.engine.countRejected();
          reply(res, jsonError("Invalid JSON body", body.error, "invalid_prompt"));
          return;
        }
        reply(res, this.engine.submit(body.value));
        return;
      case "GET /queue":
        sendJson(res, 200, this.engine.queueListing());
        return;
      case "POST /queue":
        needJson((v) => this.engine.manageQueue(v));
        return;
      case "POST /interrupt": {
        // Like ComfyUI, an empty or non-JSON body means "whatever is running".
        const v = body.ok ? body.value : undefined;
        this.engine.interrupt(typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>).prompt_id : undefined);
        sendEmpty(res, 200);
        return;
      }
      case "POST /free":
        // Models are not really loaded; accept {unload_models, free_memory} (or nothing) and do nothing.
        sendEmpty(res, 200);
        return;
      case "GET /history": {
        const maxItems = optionalInt(q, "max_items");
        const offset = optionalInt(q, "offset");
        if (maxItems instanceof Error || offset instanceof Error) {
          reply(res, jsonError((maxItems instanceof Error ? maxItems : (offset as Error)).message));
          return;
        }
        sendJson(res, 200, this.engine.historyList(maxItems, offset));
        return;
      }
      case "POST /history":
        needJson((v) => this.engine.manageHistory(v));
        return;
      case "GET /view":
        await this.view(q, res);
        return;
      case "GET /system_stats":
        sendJson(res, 200, this.systemStats());
        return;
      case "GET /object_info":
        sendJson(res, 200, objectInfo(this.catalog));
        return;
      case "GET /embeddings":
      case "GET /extensions":
        sendJson(res, 200, []);
        return;
      case "GET /models":
        sendJson(res, 200, ["checkpoints", "loras"]);
        return;
      case "GET /features":
        sendJson(res, 200, { supports_preview_metadata: false, max_upload_size: this.opts.maxBodyBytes });
        return;
      case "GET /_sim/stats":
        sendJson(res, 200, this.engine.stats() satisfies SimStats);
        return;
      case "GET /_sim/faults":
        sendJson(res, 200, this.engine.faults satisfies SimFaults);
        return;
      case "POST /_sim/faults":
        needJson((v) => {
          try {
            this.engine.setFaults(v);
            return { status: 200, body: this.engine.faults };
          } catch (err) {
            return jsonError(err instanceof Error ? err.message : String(err), "", "invalid_faults");
          }
        });
        return;
      case "POST /_sim/reset":
        this.engine.reset();
        this.coldStart();
        sendJson(res, 200, { ok: true });
        return;
      case "GET /_sim/cold-start":
      case "POST /_sim/cold-start": {
        if (method === "POST") {
          const v = body.ok ? body.value : {};
          const fields = typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
          const extra = fields ? Object.keys(fields).filter((k) => k !== "ms") : [];
          const ms = fields?.ms ?? this.opts.coldStartMs;
          if (!fields || extra.length > 0 || typeof ms !== "number" || !Number.isInteger(ms) || ms < 0) {
            reply(res, jsonError(extra.length > 0 ? `unknown field "${extra[0]}" (known: ms)` : "ms must be a non-negative integer"));
            return;
          }
          this.coldStart(ms);
        }
        sendJson(res, 200, { loading: Date.now() < this.readyAt, readyAt: this.readyAt, remainingMs: Math.max(0, this.readyAt - Date.now()),
          coldStartMs: this.opts.coldStartMs });
        return;
      }
      case "POST /_sim/restart": {
        const v = body.ok ? body.value : {};
        const downMs = typeof v === "object" && v !== null ? (v as Record<string, unknown>).downMs ?? 0 : 0;
        if (typeof downMs !== "number" || !Number.isFinite(downMs) || downMs < 0) {
          reply(res, jsonError("downMs must be a non-negative number"));
          return;
        }
        // Answer first; the crash happens once the reply is on its way.
        res.on("finish", () => void this.restart(downMs));
        sendJson(res, 202, { ok: true, downMs });
        return;
      }
    }

    const param = /^\/(history|object_info|models)\/([^/]+)$/.exec(path);
    if (param && method === "GET") {
      let arg: string;
      try {
        arg = decodeURIComponent(param[2] as string);
      } catch {
        sendText(res, 404, "404: Not Found");
        return;
      }
      if (param[1] === "history") sendJson(res, 200, this.engine.historyOf(arg));
      else if (param[1] === "object_info") {
        const info = this.catalog.get(arg);
        sendJson(res, 200, info ? { [arg]: info } : {});
      } else if (arg === "checkpoints") sendJson(res, 200, this.opts.checkpoints);
      else if (arg === "loras") sendJson(res, 200, this.opts.loras);
      else sendText(res, 404, "404: Not Found");
      return;
    }
    const known = ["/prompt", "/queue", "/interrupt", "/free", "/history", "/view", "/system_stats", "/object_info",
      "/embeddings", "/extensions", "/models", "/features", "/_sim/stats", "/_sim/faults", "/_sim/reset", "/_sim/restart", "/_sim/cold-start"];
    if (known.includes(path) || param) {
      sendText(res, 405, "405: Method Not Allowed");
      return;
    }
    sendText(res, 404, "404: Not Found");
  }

  private async view(q: URLSearchParams, res: ServerResponse): Promise<void> {
    const delay = this.engine.faults.viewDelayMs ?? 0;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    const found = lookupView(this.engine.images, q);
    if (found.status !== 200) {
      sendEmpty(res, found.status);
      return;
    }
    res.writeHead(200, {
      "Content-Type": "image/png",
      "Content-Length": found.png.length,
      "Content-Disposition": `filename="${found.filename}"`,
    });
    res.end(found.png);
  }

  private systemStats(): unknown {
    return {
      system: {
        os: "posix",
        ram_total: 64 * GIB,
        ram_free: 48 * GIB,
        comfyui_version: COMFYUI_VERSION,
        required_frontend_version: "1.28.8",
        python_version: PYTHON_VERSION,
        pytorch_version: PYTORCH_VERSION,
        embedded_python: false,
        argv: ["main.py", "--listen", this.opts.host, "--port", String(this.boundPort)],
      },
      devices: [{
        name: "cuda:0 NVIDIA GeForce RTX 4090 (simulated) : cudaMallocAsync",
        type: "cuda",
        index: 0,
        vram_total: 24 * GIB,
        vram_free: 22 * GIB,
        torch_vram_total: 2 * GIB,
        torch_vram_free: 1.5 * GIB,
      }],
    };
  }
}
