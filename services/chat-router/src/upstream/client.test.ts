import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { chatRequestBody, createAgent, tokenizeText, UpstreamStream, type Endpoint } from "./client.js";

/**
 * A minimal HTTP/1.1 server on raw sockets that answers every request on a connection except the `dropAt`-th one
 * (counted per connection, from 1): that one it reads and then closes the connection without answering — what a
 * server does when its keep-alive timeout fires just as the client reuses the idle socket.
 */
function flakyKeepAliveServer(answer: (path: string) => string, dropAt: number) {
  const connections: net.Socket[] = [];
  let requests = 0;
  const server = net.createServer((socket) => {
    connections.push(socket);
    let onThisSocket = 0;
    let buf = "";
    socket.on("data", (d) => {
      buf += d.toString("utf8");
      for (;;) {
        const head = buf.indexOf("\r\n\r\n");
        if (head < 0) return;
        const length = Number(/content-length: (\d+)/i.exec(buf.slice(0, head))?.[1] ?? 0);
        if (buf.length < head + 4 + length) return;
        const path = buf.slice(0, head).split(" ")[1]!;
        buf = buf.slice(head + 4 + length);
        onThisSocket++;
        requests++;
        if (onThisSocket === dropAt) {
          socket.destroy();
          return;
        }
        const body = answer(path);
        socket.write(`HTTP/1.1 200 OK\r\nContent-Type: ${path.includes("chat") ? "text/event-stream" : "application/json"}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: keep-alive\r\n\r\n${body}`);
      }
    });
  });
  return {
    listen: () => new Promise<string>((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`))),
    close: () => new Promise<void>((resolve) => {
      for (const c of connections) c.destroy();
      server.close(() => resolve());
    }),
    get connections() {
      return connections.length;
    },
    get requests() {
      return requests;
    },
  };
}

const SSE = [
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: "Hel" } }] })}`,
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: "lo" }, finish_reason: "stop" }] })}`,
  `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 2 } })}`,
  "data: [DONE]",
  "",
].join("\n\n");

const servers: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

function stream(endpoint: Endpoint) {
  const deltas: string[] = [];
  const s = new UpstreamStream({
    endpoint, body: chatRequestBody("m", [{ role: "user", content: "hi" }], 16),
    connectTimeoutMs: 5_000, firstTokenTimeoutMs: 5_000, idleTimeoutMs: 5_000, onDelta: (t) => deltas.push(t),
  }).start();
  return { deltas, done: s.done };
}

describe("upstream client on a keep-alive socket the server already closed", () => {
  it("resends a streamed completion on a fresh connection instead of failing the reply", async () => {
    const server = flakyKeepAliveServer(() => SSE, 2);
    servers.push(server);
    const endpoint: Endpoint = { baseUrl: await server.listen(), agent: createAgent("http://x", 4) };
    const first = stream(endpoint);
    expect((await first.done).kind).toBe("finished");
    await new Promise((r) => setTimeout(r, 20)); // the socket goes back to the agent's free list
    const second = stream(endpoint);
    const outcome = await second.done;
    expect(outcome).toEqual({ kind: "finished", finishReason: "stop", usage: { promptTokens: 3, completionTokens: 2 } });
    expect(second.deltas.join("")).toBe("Hello");
    expect(server.connections).toBe(2); // the stale one, then a fresh one
    expect(server.requests).toBe(3);
    endpoint.agent.destroy();
  });

  it("resends a /tokenize call the same way", async () => {
    const server = flakyKeepAliveServer(() => JSON.stringify({ count: 7 }), 2);
    servers.push(server);
    const endpoint: Endpoint = { baseUrl: await server.listen(), agent: createAgent("http://x", 4) };
    expect(await tokenizeText(endpoint, "m", "hello", 5_000)).toBe(7);
    await new Promise((r) => setTimeout(r, 20));
    expect(await tokenizeText(endpoint, "m", "hello again", 5_000)).toBe(7);
    expect(server.connections).toBe(2);
    endpoint.agent.destroy();
  });

  it("still fails a request whose fresh connection is dropped (nothing to retry there)", async () => {
    const server = flakyKeepAliveServer(() => SSE, 1);
    servers.push(server);
    const endpoint: Endpoint = { baseUrl: await server.listen(), agent: createAgent("http://x", 4) };
    const outcome = await stream(endpoint).done;
    expect(outcome.kind).toBe("failed");
    expect(server.connections).toBe(1);
    endpoint.agent.destroy();
  });
});
