/**
 * Conversation titles, written by a (cheap) model after a conversation's first reply, in the background.
 *
 * Billing choice: titles are NOT billed to the user. A title costs a few dozen tokens once per conversation, and a
 * conversation only gets one after a reply the user paid for, so the platform's cost is bounded by paid work; a
 * separate tiny charge would only add a confusing line to the user's history. Titles are still bounded: at most
 * CHAT_TITLE_CONCURRENCY at once (the rest wait in a queue of bounded length) and CHAT_TITLE_MAX_TOKENS each.
 */
import { completeChat } from "../upstream/client.js";
import type { ReplicaPool } from "../upstream/pool.js";
import { ModelStatus } from "@luna/contracts/luna/models/v1/models_pb.js";
import { isServable, type CatalogCache } from "@luna/kit";

export interface TitleJob {
  conversationId: string;
  /** The conversation's model (used when CHAT_TITLE_MODEL is unset or unavailable). */
  modelId: string;
  userText: string;
  replyText: string;
}

export interface TitleWriterOptions {
  pool: Pick<ReplicaPool, "pick" | "release">;
  catalog: Pick<CatalogCache, "getModel">;
  /** Saves the title unless the conversation got one meanwhile. */
  save(conversationId: string, title: string): Promise<boolean>;
  /** CHAT_TITLE_MODEL; empty = the conversation's model. */
  titleModel: string;
  maxTokens: number;
  timeoutMs: number;
  concurrency: number;
  /** Jobs waiting at most; more are dropped (a conversation without a title is harmless). */
  maxQueue?: number;
  log: { warn(obj: object, msg?: string): void; debug(obj: object, msg?: string): void };
}

/** Characters of each message shown to the title model. */
const EXCERPT_CHARS = 1500;
const MAX_TITLE_CHARS = 80;

/** Cleans a model's answer into a one-line title: no quotes, no "Title:" prefix, no trailing period. */
export function cleanTitle(raw: string): string {
  let t = raw.replace(/<think>[\s\S]*?<\/think>/g, "").trim();
  t = t.split(/\r?\n/).find((l) => l.trim().length > 0) ?? "";
  t = t.replace(/^\s*(title\s*:\s*)/i, "").replace(/^[\s"'“”‘’*#`]+|[\s"'“”‘’*#`]+$/g, "").replace(/[.。]+$/, "").trim();
  t = t.replace(/\s+/g, " ");
  if (t.length > MAX_TITLE_CHARS) t = `${t.slice(0, MAX_TITLE_CHARS - 1).trimEnd()}…`;
  return t;
}

export class TitleWriter {
  private running = 0;
  private readonly queue: TitleJob[] = [];
  private readonly inflight = new Set<Promise<void>>();
  /** Aborted by drain(): a title is best effort, so shutdown does not wait for a slow or stalled model. */
  private readonly stopping = new AbortController();

  constructor(private readonly opts: TitleWriterOptions) {}

  schedule(job: TitleJob): void {
    if (this.stopping.signal.aborted) return;
    if (this.running >= this.opts.concurrency) {
      if (this.queue.length >= (this.opts.maxQueue ?? 1000)) {
        this.opts.log.debug({ conversationId: job.conversationId }, "title queue full; conversation left untitled");
        return;
      }
      this.queue.push(job);
      return;
    }
    this.launch(job);
  }

  private launch(job: TitleJob): void {
    this.running++;
    const p = this.write(job)
      .catch((err: unknown) => this.opts.log.warn({ err, conversationId: job.conversationId }, "title generation failed"))
      .finally(() => {
        this.running--;
        this.inflight.delete(p);
        const next = this.queue.shift();
        if (next) this.launch(next);
      });
    this.inflight.add(p);
  }

  /** Shutdown: queued titles are dropped and the ones being written are abandoned (their requests aborted). */
  async drain(): Promise<void> {
    this.queue.length = 0;
    this.stopping.abort();
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
  }

  private modelFor(job: TitleJob): string {
    const m = this.opts.titleModel ? this.opts.catalog.getModel(this.opts.titleModel) : undefined;
    // A sleeping title model is not woken for a title: the conversation's own model has just replied.
    return m && isServable(m.status) && m.status !== ModelStatus.STANDBY ? m.id : job.modelId;
  }

  private async write(job: TitleJob): Promise<void> {
    const modelId = this.modelFor(job);
    const lease = await this.opts.pool.pick(modelId, job.conversationId);
    if (!lease) return;
    let outcome: "success" | "failure" | "neutral" = "failure";
    try {
      const r = await completeChat(lease.endpoint, {
        model: lease.model,
        maxTokens: this.opts.maxTokens,
        temperature: 0.2,
        messages: [
          { role: "system", content: "You name conversations. Answer with a short title of at most six words, nothing else." },
          {
            role: "user",
            content: `Name this conversation.\n\nUser: ${job.userText.slice(0, EXCERPT_CHARS)}\n\nAssistant: ${job.replyText.slice(0, EXCERPT_CHARS)}`,
          },
        ],
      }, this.opts.timeoutMs, this.stopping.signal);
      outcome = "success";
      const title = cleanTitle(r.text);
      if (title) await this.opts.save(job.conversationId, title);
    } catch (err) {
      if (this.stopping.signal.aborted) {
        outcome = "neutral"; // abandoned by us, not the replica's failure
        return;
      }
      throw err;
    } finally {
      this.opts.pool.release(lease, outcome);
    }
  }
}
