// Integration (real NATS): the live hub's one snapshot subscription per process. Two hubs on two connections play
// two chat-router replicas; the NATS server's own monitoring (/connz) counts the owner's subscriptions.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { ChatEventSchema } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { testServers } from "@luna/kit/testing";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { LiveHub, newReplicaId, SNAPSHOT_SUBJECT_PREFIX } from "../src/live/hub.js";
import { LiveReply, type ReplyEvent } from "../src/live/reply.js";

const quiet = { warn() {}, debug() {} };
/** Long, so an answer "at once" is plainly not the timeout. */
const SNAPSHOT_TIMEOUT_MS = 5_000;
const AT_ONCE_MS = 1_000;

let servers: ReturnType<typeof testServers>;
let ncA: NatsConnection;
let ncB: NatsConnection;
let owner: LiveHub;
let follower: LiveHub;

beforeAll(async () => {
  servers = testServers();
  ncA = await connect({ servers: servers.natsUrl, name: "hub-test-owner" });
  ncB = await connect({ servers: servers.natsUrl, name: "hub-test-follower" });
  owner = new LiveHub(ncA, quiet);
  follower = new LiveHub(ncB, quiet);
  owner.start();
  follower.start();
  await Promise.all([ncA.flush(), ncB.flush()]);
});

afterAll(async () => {
  owner?.stop();
  follower?.stop();
  await ncA?.close();
  await ncB?.close();
});

/** The server's view of a connection's subscriptions (`/connz?subs=1` of the NATS monitoring port). */
async function serverSubscriptions(nc: NatsConnection): Promise<{ count: number; subjects: string[] }> {
  await nc.flush(); // every SUB/UNSUB written so far has reached the server
  const cid = nc.info!.client_id;
  const res = await fetch(`${servers.natsMonitorUrl}/connz?cid=${cid}&subs=1`);
  // ConnInfo of nats-server's monitoring: "subscriptions" is the count, "subscriptions_list" the subjects.
  const body = (await res.json()) as { connections: Array<{ cid: number; subscriptions: number; subscriptions_list?: string[] }> };
  const conn = body.connections.find((c) => c.cid === cid);
  if (!conn) throw new Error(`connection ${cid} not in /connz`);
  return { count: conn.subscriptions, subjects: conn.subscriptions_list ?? [] };
}

const finished: ReplyEvent = {
  case: "finished",
  value: { $typeName: "luna.chat.v1.ReplyFinished", finishReason: 1, promptTokens: 3n, completionTokens: 2n, creditsCharged: 1n, balanceAfter: 9n },
} as ReplyEvent;

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await p;
  return { value, ms: performance.now() - t0 };
}

describe("LiveHub across replicas", () => {
  it("gives replica ids that are NATS subject tokens, new at every start", () => {
    expect(newReplicaId("chat-router-5d8f.cluster.local *>")).toMatch(/^chat-router-5d8f-cluster-local----[0-9a-f]{12}$/);
    expect(newReplicaId("")).toMatch(/^chat-router-[0-9a-f]{12}$/);
    expect(newReplicaId("a")).not.toBe(newReplicaId("a"));
    expect(owner.replicaId).not.toBe(follower.replicaId);
  });

  it("lets a follower on another replica get the snapshot and then the live events", async () => {
    const reply = new LiveReply(randomUUID());
    owner.register(reply, () => {});
    reply.push("Hello");
    reply.push(", wor");
    const f = await follower.follow(reply.messageId, owner.replicaId, SNAPSHOT_TIMEOUT_MS);
    expect(f?.snapshot).toEqual({ text: "Hello, wor", offset: 10 });
    reply.push("ld");
    reply.finish(finished);
    expect(await f!.next(SNAPSHOT_TIMEOUT_MS)).toMatchObject({ case: "delta", value: { text: "ld", offset: 12n } });
    expect(await f!.next(SNAPSHOT_TIMEOUT_MS)).toMatchObject({ case: "finished", value: { completionTokens: 2n } });
    f!.close();
    owner.unregister(reply.messageId);
  });

  it("starting and ending replies changes no subscription of the owner's connection", async () => {
    const before = await serverSubscriptions(ncA);
    // One wildcard per process for snapshots (scoped to its id) and one for stops.
    expect(before.count).toBe(2);
    expect(before.subjects.sort()).toEqual([`${SNAPSHOT_SUBJECT_PREFIX}${owner.replicaId}.*`, "luna.live.chat.stop.*"].sort());
    for (let i = 0; i < 50; i++) {
      const reply = new LiveReply(randomUUID());
      owner.register(reply, () => {});
      if (i === 25) expect((await serverSubscriptions(ncA)).count).toBe(before.count); // while one streams, too
      owner.unregister(reply.messageId);
    }
    expect((await serverSubscriptions(ncA)).count).toBe(before.count);
    // The count is the server's real one: one more subscription on the connection shows up.
    const extra = ncA.subscribe(`hub-test.${randomUUID()}`);
    expect((await serverSubscriptions(ncA)).count).toBe(before.count + 1);
    extra.unsubscribe();
    expect((await serverSubscriptions(ncA)).count).toBe(before.count);
  });

  it("answers at once, without the snapshot, for a reply the live owner does not (or no longer) stream", async () => {
    const never = await timed(follower.follow(randomUUID(), owner.replicaId, SNAPSHOT_TIMEOUT_MS));
    expect(never.value).toBeUndefined();
    expect(never.ms).toBeLessThan(AT_ONCE_MS);
    const reply = new LiveReply(randomUUID());
    owner.register(reply, () => {});
    reply.push("gone soon");
    owner.unregister(reply.messageId);
    const ended = await timed(follower.follow(reply.messageId, owner.replicaId, SNAPSHOT_TIMEOUT_MS));
    expect(ended.value).toBeUndefined();
    expect(ended.ms).toBeLessThan(AT_ONCE_MS);
    // The "not here" answer is an empty ChatEvent, not silence: a plain request gets it at once.
    const raw = await ncB.request(`${SNAPSHOT_SUBJECT_PREFIX}${owner.replicaId}.${reply.messageId}`, undefined, { timeout: SNAPSHOT_TIMEOUT_MS });
    expect(raw.data.length).toBe(0);
    expect(fromBinary(ChatEventSchema, raw.data).event.case).toBeUndefined();
  });

  it("answers at once when the owning replica is gone (no responders)", async () => {
    const gone = await timed(follower.follow(randomUUID(), newReplicaId(), SNAPSHOT_TIMEOUT_MS));
    expect(gone.value).toBeUndefined();
    expect(gone.ms).toBeLessThan(AT_ONCE_MS);
  });

  it("asks the per-reply subject of the previous version for a row without streamed_by", async () => {
    // A replica of the previous version: one subscription per reply it streams, on snapshot.<messageId>.
    const messageId = randomUUID();
    const old = ncA.subscribe(`${SNAPSHOT_SUBJECT_PREFIX}${messageId}`, {
      callback: (_err, msg) => {
        msg.respond(toBinary(ChatEventSchema, {
          $typeName: "luna.chat.v1.ChatEvent",
          event: { case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text: "from the old one", offset: 16n } },
        }));
      },
    });
    await ncA.flush();
    try {
      const f = await follower.follow(messageId, "", SNAPSHOT_TIMEOUT_MS);
      expect(f?.snapshot).toEqual({ text: "from the old one", offset: 16 });
      f!.close();
      // The new subject does not reach it: a new owner that does not stream it says "not here".
      expect(await follower.follow(messageId, owner.replicaId, SNAPSHOT_TIMEOUT_MS)).toBeUndefined();
    } finally {
      old.unsubscribe();
    }
  });
});
