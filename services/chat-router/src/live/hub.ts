/**
 * Live coordination between chat-router replicas over plain NATS subjects (never the record: the database is):
 * - `luna.live.chat.stop.<messageId>`: StopGeneration from any replica; the replica streaming the reply stops it.
 * - `luna.live.chat.snapshot.<messageId>`: request-reply to the replica streaming a reply: it answers with the text
 *   so far and, from then on, publishes every delta and the final event on
 * - `luna.live.chat.<messageId>`: the reply's events (ChatEvent, binary protobuf).
 * Publishing starts on the first snapshot request, so a reply nobody follows from elsewhere costs no NATS traffic;
 * a follower subscribes to the live subject before asking for the snapshot, so it misses nothing in between.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ChatEventSchema, type ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import type { LiveReply, ReplyEvent } from "./reply.js";

export const LIVE_SUBJECT_PREFIX = "luna.live.chat.";
export const STOP_SUBJECT_PREFIX = "luna.live.chat.stop.";
export const SNAPSHOT_SUBJECT_PREFIX = "luna.live.chat.snapshot.";

export interface HubLogger {
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** What the hub knows of a reply streamed by this process. */
interface Local {
  reply: LiveReply;
  stop: () => void;
  snapshotSub: Subscription | undefined;
}

function encode(event: ReplyEvent): Uint8Array {
  const msg: ChatEvent = { $typeName: "luna.chat.v1.ChatEvent", event };
  return toBinary(ChatEventSchema, msg);
}

/** Events of a reply followed from another replica; `undefined` from next() means it went quiet or ended. */
export interface RemoteFollow {
  /** The owner's text when it answered, and the position right after it. */
  snapshot: { text: string; offset: number };
  next(timeoutMs: number): Promise<ReplyEvent | "silent" | undefined>;
  close(): void;
}

export class LiveHub {
  private readonly locals = new Map<string, Local>();
  private stopSub: Subscription | undefined;

  constructor(private readonly nc: NatsConnection, private readonly log: HubLogger) {}

  start(): void {
    if (this.stopSub) return;
    this.stopSub = this.nc.subscribe(`${STOP_SUBJECT_PREFIX}*`, {
      callback: (err, msg) => {
        if (err) {
          this.log.warn({ err }, "stop subscription error");
          return;
        }
        this.locals.get(msg.subject.slice(STOP_SUBJECT_PREFIX.length))?.stop();
      },
    });
  }

  stop(): void {
    if (this.stopSub && !this.stopSub.isClosed()) this.stopSub.unsubscribe();
    this.stopSub = undefined;
    for (const l of this.locals.values()) if (l.snapshotSub && !l.snapshotSub.isClosed()) l.snapshotSub.unsubscribe();
    this.locals.clear();
  }

  /** Makes a reply streamed here reachable: stoppable from any replica and followable from any replica. */
  register(reply: LiveReply, stop: () => void): void {
    const id = reply.messageId;
    const local: Local = { reply, stop, snapshotSub: undefined };
    local.snapshotSub = this.nc.subscribe(`${SNAPSHOT_SUBJECT_PREFIX}${id}`, {
      callback: (err, msg) => {
        if (err) return;
        this.answerSnapshot(local, msg);
      },
    });
    this.locals.set(id, local);
  }

  unregister(messageId: string): void {
    const l = this.locals.get(messageId);
    if (!l) return;
    this.locals.delete(messageId);
    if (l.snapshotSub && !l.snapshotSub.isClosed()) l.snapshotSub.unsubscribe();
  }

  /** A reply streamed by this process. */
  local(messageId: string): LiveReply | undefined {
    return this.locals.get(messageId)?.reply;
  }

  /** Message ids of the replies streamed by this process. */
  localIds(): string[] {
    return [...this.locals.keys()];
  }

  /** Stops a reply wherever it streams: here directly, elsewhere through NATS. */
  requestStop(messageId: string): void {
    const l = this.locals.get(messageId);
    if (l) {
      l.stop();
      return;
    }
    this.nc.publish(`${STOP_SUBJECT_PREFIX}${messageId}`);
  }

  private answerSnapshot(local: Local, msg: Msg): void {
    const { reply } = local;
    reply.onFollowed?.();
    const subject = `${LIVE_SUBJECT_PREFIX}${reply.messageId}`;
    if (!reply.onPublish) {
      reply.onPublish = (event) => {
        try {
          this.nc.publish(subject, encode(event));
        } catch (err) {
          this.log.debug({ err }, "live publish failed");
        }
      };
    }
    const text = reply.text();
    msg.respond(encode({ case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text, offset: BigInt(reply.length) } }));
    // Already over: followers are subscribed to the live subject before they ask, so they get this right after.
    if (reply.final) this.nc.publish(subject, encode(reply.final));
  }

  /**
   * Follows a reply streamed by another replica: subscribes to its live subject, then asks its owner for the text so
   * far. Undefined when no replica streams it (finished, or its replica is gone): read the database then.
   */
  async follow(messageId: string, timeoutMs: number): Promise<RemoteFollow | undefined> {
    const queue: ReplyEvent[] = [];
    let wake: (() => void) | undefined;
    const sub = this.nc.subscribe(`${LIVE_SUBJECT_PREFIX}${messageId}`, {
      callback: (err, msg) => {
        if (err) return;
        try {
          const ev = fromBinary(ChatEventSchema, msg.data).event;
          if (ev.case === "delta" || ev.case === "finished" || ev.case === "error" || ev.case === "waiting") queue.push(ev);
        } catch (e) {
          this.log.warn({ err: e }, "undecodable live chat event ignored");
          return;
        }
        const w = wake;
        wake = undefined;
        w?.();
      },
    });
    const close = () => {
      if (!sub.isClosed()) sub.unsubscribe();
      const w = wake;
      wake = undefined;
      w?.();
    };
    let snap: ReplyEvent;
    try {
      const reply = await this.nc.request(`${SNAPSHOT_SUBJECT_PREFIX}${messageId}`, undefined, { timeout: timeoutMs });
      snap = fromBinary(ChatEventSchema, reply.data).event;
    } catch {
      // No responders (nobody streams it) or no answer in time.
      close();
      return undefined;
    }
    if (snap.case !== "delta") {
      close();
      return undefined;
    }
    const snapshot = { text: snap.value.text, offset: Number(snap.value.offset) };
    return {
      snapshot,
      async next(ms) {
        if (queue.length > 0) return queue.shift();
        if (sub.isClosed()) return undefined;
        let timer: NodeJS.Timeout | undefined;
        const got = await new Promise<boolean>((resolve) => {
          wake = () => resolve(true);
          timer = setTimeout(() => resolve(false), ms);
        });
        clearTimeout(timer);
        wake = undefined;
        if (queue.length > 0) return queue.shift();
        return got ? undefined : "silent";
      },
      close,
    };
  }
}
