/**
 * A reply while it is being generated, in the process that streams it: its text so far (as the deltas received),
 * its final event once known, and the readers following it (the SendMessage stream, local ResumeStreams). Readers
 * pull at their own pace from their own position, so a slow reader never holds up the model or another reader.
 */
import type { ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";

/** A delta or final event as a reader receives it (the ChatEvent oneof). */
export type ReplyEvent = ChatEvent["event"];

/** Reads one reply from a position. */
export class ReplyReader {
  /** Index of the next part to read. */
  private part: number;
  /** Characters of `parts[part]` already sent (only when resuming inside a part). */
  private skip: number;
  /** The reply's `waitingSeq` this reader last reported. */
  private waitingSeen = 0;
  private wake: (() => void) | undefined;
  closed = false;

  constructor(private readonly reply: LiveReply, offset: number) {
    // Find the part holding `offset`.
    let pos = 0;
    let i = 0;
    const parts = reply.parts;
    while (i < parts.length && pos + parts[i]!.length <= offset) {
      pos += parts[i]!.length;
      i++;
    }
    this.part = i;
    this.skip = i < parts.length ? Math.max(0, offset - pos) : 0;
    this.offset = Math.max(pos + this.skip, Math.min(offset, reply.length));
  }

  /** UTF-16 position reached by this reader. */
  offset: number;

  /** @internal called by the reply on news. */
  notify(): void {
    const w = this.wake;
    if (w) {
      this.wake = undefined;
      w();
    }
  }

  /**
   * The next event: every delta not yet read (joined when several are waiting), then the final event; undefined
   * after the final event or once closed.
   */
  async next(): Promise<ReplyEvent | undefined> {
    for (;;) {
      if (this.closed) return undefined;
      const parts = this.reply.parts;
      // While the reply waits for a replica (before any text), each new `waiting` tick is reported once.
      const waiting = this.reply.waitingEvent();
      if (waiting && parts.length === 0 && !this.reply.final && this.reply.waitingSeq !== this.waitingSeen) {
        this.waitingSeen = this.reply.waitingSeq;
        return waiting;
      }
      if (this.part < parts.length) {
        let text: string;
        if (this.part === parts.length - 1 && this.skip === 0) {
          text = parts[this.part]!;
        } else {
          text = parts.slice(this.part).join("");
          if (this.skip > 0) text = text.slice(this.skip);
        }
        this.part = parts.length;
        this.skip = 0;
        this.offset += text.length;
        return { case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text, offset: BigInt(this.offset) } };
      }
      const final = this.reply.final;
      if (final) {
        this.closed = true;
        return final;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Stops reading (the stream went away); a pending `next` resolves undefined. */
  close(): void {
    this.closed = true;
    this.reply.removeReader(this);
    this.notify();
  }
}

/** The live state of a reply being generated. */
export class LiveReply {
  readonly parts: string[] = [];
  /** Length of the text so far, in UTF-16 code units. */
  length = 0;
  /** Content deltas received (≈ tokens: OpenAI-compatible servers send one token per chunk). */
  deltas = 0;
  final: ReplyEvent | undefined;
  private readonly readers = new Set<ReplyReader>();
  /** Called for each delta and the final event while someone follows the reply from another process. */
  onPublish: ((event: ReplyEvent, offset: number) => void) | undefined;
  /** The last local reader went away. */
  onReadersGone: (() => void) | undefined;
  /** A local reader started following. */
  onReaderAdded: (() => void) | undefined;
  /** Someone follows the reply from another process. */
  onFollowed: (() => void) | undefined;
  /** Set while the reply waits for a replica of its model (warming up); see `setWaiting`. */
  private waiting: { reason: string; modelId: string; since: number; expectedMs: number } | undefined;
  /** Bumped on every `waiting` tick, so each reader reports each tick once. */
  waitingSeq = 0;

  constructor(readonly messageId: string) {}

  /** The text so far. */
  text(): string {
    return this.parts.length === 1 ? this.parts[0]! : this.parts.join("");
  }

  push(text: string): void {
    this.waiting = undefined;
    this.parts.push(text);
    this.length += text.length;
    this.deltas++;
    for (const r of this.readers) r.notify();
    const pub = this.onPublish;
    if (pub) pub({ case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text, offset: BigInt(this.length) } }, this.length);
  }

  /**
   * Marks the reply as waiting for a replica (`since`: Date.now() when the wait began) and tells the readers: each
   * call is one `waiting` event for every reader; `undefined` ends the wait.
   */
  setWaiting(w: { reason: string; modelId: string; since: number; expectedMs: number } | undefined): void {
    this.waiting = w;
    if (!w) return;
    this.waitingSeq++;
    for (const r of this.readers) r.notify();
    const ev = this.waitingEvent();
    if (ev) this.onPublish?.(ev, this.length);
  }

  /** The `waiting` event as of now, while the reply waits; undefined otherwise. */
  waitingEvent(): ReplyEvent | undefined {
    const w = this.waiting;
    if (!w) return undefined;
    return {
      case: "waiting",
      value: { $typeName: "luna.chat.v1.ReplyWaiting", reason: w.reason, modelId: w.modelId, elapsedMs: BigInt(Math.max(0, Date.now() - w.since)),
        expectedWaitMs: BigInt(w.expectedMs) },
    };
  }

  finish(event: ReplyEvent): void {
    if (this.final) return;
    this.final = event;
    for (const r of this.readers) r.notify();
    this.onPublish?.(event, this.length);
  }

  /** A reader from `offset` (UTF-16 units; clamped to the text so far). */
  read(offset = 0): ReplyReader {
    const r = new ReplyReader(this, offset);
    this.readers.add(r);
    this.onReaderAdded?.();
    return r;
  }

  removeReader(r: ReplyReader): void {
    if (this.readers.delete(r) && this.readers.size === 0 && !this.final) this.onReadersGone?.();
  }

  get readerCount(): number {
    return this.readers.size;
  }
}
