// Shared helpers for the event plumbing tests (outbox, inbox, consumer, NATS restarts).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { MinimalLogger } from "../../src/nats.js";
import { headersToRecord } from "../../src/nats.js";

export type LogEntry = { level: "info" | "warn" | "error" | "debug"; msg: string | undefined; obj: object };

/** A logger that keeps every entry, for asserting what was logged. Set LUNA_TEST_LOG=1 to also print them. */
export function captureLog(): MinimalLogger & { entries: LogEntry[]; messages(level?: LogEntry["level"]): string[] } {
  const entries: LogEntry[] = [];
  const echo = process.env.LUNA_TEST_LOG === "1";
  const at = (level: LogEntry["level"]) => (obj: object, msg?: string): void => {
    entries.push({ level, msg, obj });
    if (echo) console.log(new Date().toISOString().slice(14, 23), level, msg, JSON.stringify(obj).slice(0, 200));
  };
  return {
    entries,
    info: at("info"), warn: at("warn"), error: at("error"), debug: at("debug"),
    messages: (level) => entries.filter((e) => !level || e.level === level).map((e) => e.msg ?? ""),
  };
}

/** Polls `check` until it returns a truthy value (returned) or the timeout passes (throws naming `what`). */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  { timeoutMs = 20_000, intervalMs = 50 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` +
        (lastError ? ` (last error: ${String(lastError)})` : ""));
    }
    await sleep(intervalMs);
  }
}

/** A short random suffix so tests sharing one NATS server never share a stream, subject or durable. */
export function uniq(): string {
  return randomBytes(4).toString("hex");
}

/** The kit's outbox/inbox SQL, as services copy it into their first migration. */
export const OUTBOX_INBOX_SQL = readFileSync(new URL("../../sql/outbox_inbox.sql", import.meta.url), "utf8");

export type StoredEvent = { seq: number; subject: string; msgId: string | undefined; data: Uint8Array; headers: Record<string, string> };

/** Every message currently stored in `stream`, in stream order. */
export async function streamMessages(jsm: JetStreamManager, stream: string): Promise<StoredEvent[]> {
  const info = await jsm.streams.info(stream);
  const out: StoredEvent[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m) continue;
    const headers = headersToRecord(m.header);
    out.push({ seq: m.seq, subject: m.subject, msgId: headers["Nats-Msg-Id"], data: m.data, headers });
  }
  return out;
}

/** Counts how often each value occurs; returns the values seen more than once. */
export function repeated(values: (string | undefined)[]): string[] {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(String(v), (counts.get(String(v)) ?? 0) + 1);
  return [...counts].filter(([, n]) => n > 1).map(([v]) => v);
}

/**
 * A pool that tolerates its connections being terminated (DROP DATABASE ... WITH (FORCE) at teardown, or a test
 * killing sessions): without an 'error' listener such a termination is an uncaught exception.
 */
export function testPool(url: string, opts: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, ...opts });
  pool.on("error", () => undefined);
  return pool;
}

/** Runs `fn` inside BEGIN/COMMIT on one pooled connection (ROLLBACK when it throws). */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** Resolvable gate for holding handlers mid-flight. */
export function gate(): { wait: Promise<void>; open(): void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => { open = resolve; });
  return { wait, open };
}

export const encode = (s: string): Uint8Array => new TextEncoder().encode(s);
export const decode = (b: Uint8Array): string => new TextDecoder().decode(b);
