// The benchmark's floor: a relay that does none of chat-router's work. It serves ChatService.SendMessage over gRPC
// (HTTP/2, connect-node, no interceptors, no auth, no database, no billing, no limits): `started` at once, then the
// simulator's deltas through chat-router's own upstream client, then `finished`. What it adds to a direct request is
// what the extra hop costs on this machine (one more process, one more gRPC stream, one more HTTP client); what
// chat-router adds above it is its own work.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { FinishReason, type ChatEvent } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { chatRequestBody, createAgent, UpstreamStream } from "../src/upstream/client.js";

const agents = new Map<string, ReturnType<typeof createAgent>>();
const agentOf = (url: string) => {
  let a = agents.get(url);
  if (!a) agents.set(url, (a = createAgent(url, 1024)));
  return a;
};

type Event = ChatEvent["event"];
const response = (event: Event) => ({ event: { $typeName: "luna.chat.v1.ChatEvent" as const, event } });

const server = http2.createServer(connectNodeAdapter({
  routes: (router) => router.service(ChatService, {
    async *sendMessage(req, ctx) {
      // The conversation id names the simulator to relay (the floor has no catalog).
      const baseUrl = req.conversationId;
      yield response({ case: "started", value: {
        $typeName: "luna.chat.v1.ReplyStarted", userMessageId: "", assistantMessageId: "", creditsHeld: 0n,
        maxOutputTokens: req.maxOutputTokens, modelId: "", replayed: false,
      } });
      const queue: string[] = [];
      let wake: (() => void) | undefined;
      let offset = 0;
      const stream = new UpstreamStream({
        endpoint: { baseUrl, agent: agentOf(baseUrl) }, body: chatRequestBody("sim-model", [{ role: "user", content: req.text }], req.maxOutputTokens),
        connectTimeoutMs: 10_000, firstTokenTimeoutMs: 10_000, idleTimeoutMs: 10_000,
        onDelta: (text) => {
          queue.push(text);
          wake?.();
        },
      }).start();
      let done = false;
      void stream.done.then(() => {
        done = true;
        wake?.();
      });
      ctx.signal.addEventListener("abort", () => stream.abort(), { once: true });
      let completion = 0;
      for (;;) {
        if (queue.length > 0) {
          const text = queue.splice(0).join("");
          completion += 1;
          offset += text.length;
          yield response({ case: "delta", value: { $typeName: "luna.chat.v1.ReplyDelta", text, offset: BigInt(offset) } });
          continue;
        }
        if (done) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      const outcome = await stream.done;
      const usage = outcome.kind === "finished" ? outcome.usage : undefined;
      yield response({ case: "finished", value: {
        $typeName: "luna.chat.v1.ReplyFinished", finishReason: FinishReason.STOP, promptTokens: BigInt(usage?.promptTokens ?? 0),
        completionTokens: BigInt(usage?.completionTokens ?? completion), creditsCharged: 0n, balanceAfter: 0n,
      } });
    },
  }),
}));
server.listen(0, "127.0.0.1", () => process.send!({ type: "ready", port: (server.address() as AddressInfo).port }));
process.on("message", (m: { type: string }) => {
  if (m.type === "cpu") {
    const u = process.cpuUsage();
    process.send!({ type: "cpu", micros: u.user + u.system });
  } else if (m.type === "stop") {
    server.close();
    process.exit(0);
  }
});
