/**
 * Live coordination between chat-router replicas over plain NATS subjects (never the record: the database is):
 * - `luna.live.chat.stop.<messageId>`: StopGeneration from any replica; the replica streaming the reply stops it.
 * - `luna.live.chat.snapshot.<replicaId>.<messageId>`: request-reply to the replica streaming a reply (its id is on
 *   the reply's row, `streamed_by`): it answers with the text so far and, from then on, publishes every delta and the
 *   final event on
 * - `luna.live.chat.<messageId>`: the reply's events (ChatEvent, binary protobuf).
 * Publishing starts on the first snapshot request, so a reply nobody follows from elsewhere costs no NATS traffic;
 * a follower subscribes to the live subject before asking for the snapshot, so it misses nothing in between.
 *
 * Each process subscribes once to `snapshot.<its id>.*` (and once to `stop.*`): starting and ending a reply touch
 * only a map, no NATS protocol write. A request for a reply this process does not stream (finished meanwhile, or
 * never here) is answered at once with an empty ChatEvent ("not here"); a replica that is gone has no subscription,
 * so the follower gets "no responders" at once. Either way it reads the database instead. Stops stay on the
 * process-wide `stop.*`: a stop is rare (its fan-out to every replica costs nothing per reply), and deleting a
 * conversation or a user stops replies by id without reading their rows.
 *
 * Rolling upgrade from the version that subscribed `snapshot.<messageId>` per reply: a row without `streamed_by` was
 * written by such a replica, so follow() asks that legacy subject and old replicas still answer. The other way round
 * (an old follower asking about a reply a new replica streams) nobody listens on the legacy subject: "no responders",
 * and the old follower serves the database's checkpoints until the reply ends — correct, only less live.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
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
}

/**
 * An id for this process's snapshot subject and the `streamed_by` of the replies it streams: the host name (the pod's,
 * for operators reading a row) plus a random part, new at every start — a restarted process streams nothing of what
 * it streamed before, and several chat-routers may share a host. A NATS subject token: [A-Za-z0-9_-] only.
 */
export function newReplicaId(host: string = hostname()): string {
  const name = host.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40);
  return `${name || "chat-router"}-${randomBytes(6).toString("hex")}`;
}

/** The "not here" answer to a snapshot request: an empty ChatEvent (no event), which follow() takes as "read the database". */
const NOT_HERE = new Uint8Array(0);

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
  private snapshotSub: Subscription | undefined;

  /** `replicaId`: this process's id (newReplicaId()); the store writes the same id on the replies it inserts. */
  constructor(private readonly nc: NatsConnection, private readonly log: HubLogger, readonly replicaId: string = newReplicaId()) {}

  start(): void {
    if (this.stopSub) return;
    const prefix = `${SNAPSHOT_SUBJECT_PREFIX}${this.replicaId}.`;
    this.snapshotSub = this.nc.subscribe(`${prefix}*`, {
      callback: (err, msg) => {
        if (err) {
          this.log.warn({ err }, "snapshot subscription error");
          return;
        }
        const local = this.locals.get(msg.subject.slice(prefix.length));
        if (local) this.answerSnapshot(local, msg);
        else msg.respond(NOT_HERE);
      },
    });
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
    if (this.snapshotSub && !this.snapshotSub.isClosed()) this.snapshotSub.unsubscribe();
    this.snapshotSub = undefined;
    this.locals.clear();
  }

  /** Makes a reply streamed here reachable: stoppable from any replica and followable from any replica. */
  register(reply: LiveReply, stop: () => void): void {
    this.locals.set(reply.messageId, { reply, stop });
  }

  unregister(messageId: string): void {
    this.locals.delete(messageId);
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
   * Follows a reply streamed by another replica: subscribes to its live subject, then asks its owner (`streamedBy`,
   * from the reply's row) for the text so far. Undefined when it does not stream it (finished: "not here"; its replica
   * is gone: "no responders"), both at once: read the database then. An empty `streamedBy` is a row written by a
   * replica of the previous version: ask the per-reply subject it listens on.
   */
  async follow(messageId: string, streamedBy: string, timeoutMs: number): Promise<RemoteFollow | undefined> {
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
      const subject = streamedBy ? `${SNAPSHOT_SUBJECT_PREFIX}${streamedBy}.${messageId}` : `${SNAPSHOT_SUBJECT_PREFIX}${messageId}`;
      const reply = await this.nc.request(subject, undefined, { timeout: timeoutMs });
      snap = fromBinary(ChatEventSchema, reply.data).event;
    } catch {
      // No responders (its replica is gone, or an old follower's legacy subject), no answer in time, or a bad subject.
      close();
      return undefined;
    }
    if (snap.case !== "delta") {
      // "Not here" (an empty event): its replica no longer (or never) streamed it.
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
