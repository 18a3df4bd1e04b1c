// One TCP port for HTTP/2 cleartext (gRPC, prior knowledge) and HTTP/1.1 (browsers, Connect, gRPC-Web). Node's
// `allowHTTP1` only works with TLS, so each new connection's first bytes decide: the HTTP/2 client preface goes to
// the HTTP/2 server, anything else to the HTTP/1.1 server. Used by the kit's server and the dev gateway.
import type http from "node:http";
import type http2 from "node:http2";
import net from "node:net";

// Every HTTP/2 client starts a cleartext connection with this exact preface (RFC 9113 §3.4).
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** A listener handing each connection to `h1` or `h2`, with the live sockets and sessions for a graceful close. */
export interface DualProtocolListener {
  server: net.Server;
  sockets: Set<net.Socket>;
  sessions: Set<http2.ServerHttp2Session>;
}

/**
 * Creates the TCP server (not yet listening). `isClosing()` true makes new HTTP/2 sessions close at once (GOAWAY).
 * A connection must send its first bytes within `handshakeTimeoutMs`.
 */
export function dualProtocolListener(opts: { h1: http.Server; h2: http2.Http2Server; handshakeTimeoutMs: number;
  isClosing: () => boolean; onSessionError?: (err: Error) => void }): DualProtocolListener {
  const { h1, h2 } = opts;
  // h1 never listens itself (sockets are handed to it), but its header/request timeout checks and
  // closeIdleConnections() are set up on "listening".
  h1.emit("listening");
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (opts.isClosing()) session.close();
  });
  h2.on("sessionError", (err) => opts.onSessionError?.(err));

  // No Nagle: a streamed reply is many small frames that must leave at once (gRPC servers all set TCP_NODELAY).
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    // A socket error after hand-off is handled by the protocol server; this keeps a sniffing socket from crashing us.
    socket.on("error", () => socket.destroy());
    socket.setTimeout(opts.handshakeTimeoutMs, () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFACE.length);
      const isH2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && head.length < H2_PREFACE.length) return; // a prefix of the preface: wait for the rest
      socket.off("data", onData);
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(head);
      if (isH2) {
        h2.emit("connection", socket); // the session reads the unshifted bytes itself
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  });
  return { server, sockets, sessions };
}
