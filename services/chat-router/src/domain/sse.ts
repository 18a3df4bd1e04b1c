// Incremental parsing of an OpenAI-compatible streaming response (Server-Sent Events): text arrives in arbitrary
// pieces; each complete event's data is handed on as soon as its blank line arrives, without waiting for more.

/**
 * Splits SSE text into events. Handles `\n`, `\r\n` and `\r` line ends, multi-line `data:` fields (joined with
 * `\n`), comments and other fields (ignored). Feed text with `push`; `onData` gets each event's data.
 */
export class SseParser {
  private buf = "";
  private data: string | undefined;
  /** A `\r` ended the last piece: a `\n` starting the next one belongs to it. */
  private pendingCr = false;

  constructor(private readonly onData: (data: string) => void) {}

  push(piece: string): void {
    let text = piece;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (text.charCodeAt(0) === 10) text = text.slice(1);
    }
    let start = 0;
    // Fast path: the usual piece holds whole lines and no buffered remainder.
    const buf = this.buf;
    if (buf.length > 0) {
      text = buf + text;
      this.buf = "";
    }
    const n = text.length;
    for (let i = 0; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      this.line(text, start, i);
      if (c === 13) {
        if (i + 1 < n) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.pendingCr = true;
        }
      }
      start = i + 1;
    }
    if (start < n) this.buf = text.slice(start);
  }

  /** Flushes an event the stream ended without a blank line for. */
  end(): void {
    if (this.buf.length > 0) {
      const rest = this.buf;
      this.buf = "";
      this.line(rest, 0, rest.length);
    }
    this.dispatch();
  }

  private line(text: string, start: number, end: number): void {
    if (start === end) {
      this.dispatch();
      return;
    }
    // "data:" then an optional single space.
    if (end - start >= 5 && text.startsWith("data:", start)) {
      let from = start + 5;
      if (text.charCodeAt(from) === 32) from++;
      const value = text.slice(from, end);
      this.data = this.data === undefined ? value : `${this.data}\n${value}`;
    }
    // Comments (":") and other fields (event, id, retry) carry nothing an OpenAI client needs.
  }

  private dispatch(): void {
    const d = this.data;
    if (d === undefined) return;
    this.data = undefined;
    this.onData(d);
  }
}

/** Token counts of a reply, from the final usage chunk. */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** What one streamed chunk says. */
export type ChunkInfo =
  | { kind: "done" }
  | { kind: "error"; message: string }
  | { kind: "chunk"; content: string | undefined; finishReason: string | undefined; usage: Usage | undefined }
  | { kind: "invalid"; reason: string };

function errorMessage(e: unknown): string {
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && typeof (e as { message?: unknown }).message === "string") return (e as { message: string }).message;
  return JSON.stringify(e) ?? "unknown error";
}

function toCount(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : undefined;
}

/** The usual token chunk up to its content string (OpenAI, vLLM and llama.cpp write `index` first, then `delta`). */
const CONTENT_MARK = '"choices":[{"index":0,"delta":{"content":"';
/** What may follow the delta of a usual token chunk: these fields, null, in any order; then the ends of the choice, the list and the chunk. */
const NULL_FIELDS = [',"logprobs":null', ',"finish_reason":null', ',"stop_reason":null'];

/**
 * The content of the usual token chunk — `{..., "choices":[{"index":0,"delta":{"content":"…"}, "logprobs":null,
 * "finish_reason":null}]}` — read without JSON.parse, which is most of the relay's CPU per token; undefined when `data`
 * is not exactly that shape (a usage or error field, a finish reason, another delta field, a second choice: those go
 * through JSON.parse). The markers can only be JSON syntax, never string contents: inside a JSON string every `"` is
 * escaped. (What comes before `choices` — id, object, created, model — is not validated: it carries nothing we use.)
 */
export function fastChunkContent(data: string): string | undefined {
  if (data.charCodeAt(0) !== 123) return undefined; // {
  const mark = data.indexOf(CONTENT_MARK);
  if (mark < 0) return undefined;
  // Fields before `choices` that change what the chunk means (usage, error, a first `choices`) mean the slow path.
  for (let k = data.indexOf('"', 1); k >= 0 && k < mark; k = data.indexOf('"', k + 1)) {
    const c = data.charCodeAt(k + 1);
    if ((c === 117 && data.startsWith('usage"', k + 1)) || (c === 101 && data.startsWith('error"', k + 1)) || (c === 99 && data.startsWith('choices"', k + 1))) return undefined;
  }
  const start = mark + CONTENT_MARK.length;
  const n = data.length;
  let escaped = false;
  let i = start;
  for (; i < n; i++) {
    const c = data.charCodeAt(i);
    if (c === 34) break; // the closing quote
    if (c === 92) {
      escaped = true;
      i++; // the escaped character (a `\u` escape's hex digits need no skipping: they are no quotes)
    } else if (c < 32) {
      return undefined; // raw control characters are invalid JSON: JSON.parse judges
    }
  }
  if (i >= n || data.charCodeAt(i + 1) !== 125) return undefined; // the delta holds nothing after the content
  let j = i + 2;
  next: while (!(j + 3 === n && data.endsWith("}]}"))) {
    for (const f of NULL_FIELDS) {
      if (data.startsWith(f, j)) {
        j += f.length;
        continue next;
      }
    }
    return undefined;
  }
  if (!escaped) return data.slice(start, i);
  try {
    return JSON.parse(data.slice(start - 1, i + 1)) as string;
  } catch {
    return undefined;
  }
}

/**
 * Interprets the data of one event of `POST /v1/chat/completions` with `stream: true`: `[DONE]`, an error
 * (`{"error": ...}`, vLLM's form after streaming began, or the older flat `{"object": "error", ...}`), or a chunk with
 * the content delta, the finish reason and the usage (each possibly absent).
 */
export function interpretChunk(data: string): ChunkInfo {
  if (data === "[DONE]") return { kind: "done" };
  const fast = fastChunkContent(data);
  if (fast !== undefined) return { kind: "chunk", content: fast.length > 0 ? fast : undefined, finishReason: undefined, usage: undefined };
  let obj: unknown;
  try {
    obj = JSON.parse(data);
  } catch {
    return { kind: "invalid", reason: `not JSON: ${data.slice(0, 100)}` };
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return { kind: "invalid", reason: "not a JSON object" };
  const o = obj as Record<string, unknown>;
  if (o.error !== undefined && o.error !== null) return { kind: "error", message: errorMessage(o.error) };
  if (o.object === "error") return { kind: "error", message: errorMessage(o) };
  let content: string | undefined;
  let finishReason: string | undefined;
  const choices = o.choices;
  if (Array.isArray(choices) && choices.length > 0) {
    const c = choices[0] as Record<string, unknown> | null;
    if (c && typeof c === "object") {
      const delta = c.delta as Record<string, unknown> | null | undefined;
      if (delta && typeof delta === "object" && typeof delta.content === "string" && delta.content.length > 0) content = delta.content;
      if (typeof c.finish_reason === "string") finishReason = c.finish_reason;
    }
  }
  let usage: Usage | undefined;
  const u = o.usage as Record<string, unknown> | null | undefined;
  if (u && typeof u === "object") {
    const p = toCount(u.prompt_tokens);
    const c = toCount(u.completion_tokens);
    if (p !== undefined && c !== undefined) usage = { promptTokens: p, completionTokens: c };
  }
  return { kind: "chunk", content, finishReason, usage };
}

/** Pulls a human message out of an upstream's error body (JSON in vLLM's or FastAPI's forms, or plain text). */
export function upstreamErrorMessage(body: string): string {
  try {
    const o = JSON.parse(body) as Record<string, unknown>;
    if (o.error !== undefined) return errorMessage(o.error);
    if (typeof o.message === "string") return o.message;
    if (typeof o.detail === "string") return o.detail;
  } catch {
    // not JSON
  }
  return body.slice(0, 300);
}
