/** Raw-HTTP helpers for the simulator's integration tests. */
import http from "node:http";

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP request over node:http; `body` is sent as is when a string, as JSON otherwise. */
export function request(url: string, method: string, body?: unknown, headers: Record<string, string> = {}):
  Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
    const req = http.request(url, { method, headers: { "content-type": "application/json", ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers,
        body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(payload);
  });
}

export const get = (url: string, headers?: Record<string, string>) => request(url, "GET", undefined, headers);
export const post = (url: string, body: unknown, headers?: Record<string, string>) =>
  request(url, "POST", body, headers);

/** A streaming request whose SSE `data:` payloads are collected as they arrive, and which can be cut at any time. */
export interface OpenStream {
  /** Resolves with the status code once headers arrive. */
  status: Promise<number>;
  /** Data payloads so far (the text after `data: `). */
  events: string[];
  /** Resolves when the response ends; `complete` is false when the connection broke before the end. */
  finished: Promise<{ complete: boolean }>;
  /** Closes the connection from the client side (a client disconnect). */
  destroy(): void;
}

export function openStream(url: string, body: unknown, headers: Record<string, string> = {}): OpenStream {
  const events: string[] = [];
  let setStatus!: (s: number) => void;
  const status = new Promise<number>((r) => (setStatus = r));
  const req = http.request(url, { method: "POST", headers: { "content-type": "application/json", ...headers } });
  const finished = new Promise<{ complete: boolean }>((resolve) => {
    req.on("response", (res) => {
      setStatus(res.statusCode ?? 0);
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        buf += d;
        let i: number;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (ev.startsWith("data: ")) events.push(ev.slice(6));
        }
      });
      res.on("error", () => undefined);
      res.on("close", () => resolve({ complete: res.complete }));
    });
    req.on("error", () => {
      setStatus(0);
      resolve({ complete: false });
    });
  });
  req.end(JSON.stringify(body));
  return { status, events, finished, destroy: () => req.destroy() };
}

/** Reads one sample from Prometheus text: the metric `name` whose labels include `labels`. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(name)) continue;
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** Polls until `check` returns true; fails after `timeoutMs`. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A chat body with a long, fixed system prompt (several KV blocks) followed by `question`. */
export function chatWithSystem(model: string, question: string, extra: Record<string, unknown> = {}) {
  const system = "You are a careful assistant. ".repeat(20);
  return { model, messages: [{ role: "system", content: system }, { role: "user", content: question }], ...extra };
}
