// Malformed binary request bodies are the caller's fault, but @connectrpc/connect reports them as INTERNAL
// ("parse binary: illegal tag ...", HTTP 500 / gRPC 13), and for unary and server-streaming calls it parses the
// request before any interceptor runs, so neither the error mapping nor the RPC metrics see them. The kit wraps every
// universal handler once (see createServer) and rewrites that one error to INVALID_ARGUMENT in the response of each
// protocol — Connect unary (status + JSON body), Connect streaming (end-stream message), gRPC (trailers) and gRPC-Web
// (trailer frame) — and reports it so it is counted. Client- and bidi-streaming calls parse inside the interceptors;
// errors.ts maps the same error there.
import { Code, ConnectError } from "@connectrpc/connect";
import { createAsyncIterable, type UniversalHandler, type UniversalServerResponse } from "@connectrpc/connect/protocol";

/** The message prefix of the library's binary parse failures (serialization.js, createBinarySerialization). */
const PARSE_BINARY = "parse binary:";

/** Whether `err` is the library's "cannot parse a binary request message" error (reported by it as INTERNAL). */
export function isMalformedBinaryMessage(err: unknown): err is ConnectError {
  return err instanceof ConnectError && err.code === Code.Internal && err.rawMessage.startsWith(PARSE_BINARY);
}

/** What a malformed binary message is answered with: INVALID_ARGUMENT, keeping the parser's explanation. */
export function malformedMessageError(err: ConnectError): ConnectError {
  return new ConnectError(`malformed request message (${err.rawMessage})`, Code.InvalidArgument, undefined, undefined, err);
}

function isParseFailure(code: unknown, message: unknown): message is string {
  return (code === "internal" || code === "13") && typeof message === "string" && message.startsWith(PARSE_BINARY);
}

const rewrittenMessage = (message: string): string => malformedMessageError(new ConnectError(message, Code.Internal)).rawMessage;

async function* chunksOf(body: UniversalServerResponse["body"]): AsyncGenerator<Uint8Array> {
  if (body !== undefined) yield* body;
}

/** Rewrites one enveloped frame with `flag` set (gRPC-Web trailers, Connect end-stream) if it reports a parse failure. */
function rewriteEndFrame(chunk: Uint8Array, flag: number, rewrite: (text: string) => string | undefined): Uint8Array {
  if (chunk.byteLength < 5 || (chunk[0]! & flag) !== flag || (chunk[0]! & 0x01) !== 0) return chunk; // 0x01: compressed
  const length = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength).getUint32(1);
  if (chunk.byteLength !== 5 + length) return chunk;
  const replaced = rewrite(new TextDecoder().decode(chunk.subarray(5)));
  if (replaced === undefined) return chunk;
  const data = new TextEncoder().encode(replaced);
  const out = new Uint8Array(5 + data.byteLength);
  out[0] = chunk[0]!;
  new DataView(out.buffer).setUint32(1, data.byteLength);
  out.set(data, 5);
  return out;
}

function grpcWebTrailer(text: string): string | undefined {
  const lines = text.split("\r\n").filter((l) => l !== "");
  const fields = new Map(lines.map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
  }));
  const message = decodeURIComponent(fields.get("grpc-message") ?? "");
  if (!isParseFailure(fields.get("grpc-status"), message)) return undefined;
  fields.set("grpc-status", String(Code.InvalidArgument));
  fields.set("grpc-message", encodeURIComponent(rewrittenMessage(message)));
  return [...fields].map(([k, v]) => `${k}: ${v}\r\n`).join("");
}

function connectEndStream(text: string): string | undefined {
  let end: { error?: { code?: unknown; message?: unknown } };
  try {
    end = JSON.parse(text) as typeof end;
  } catch {
    return undefined;
  }
  if (!end.error || !isParseFailure(end.error.code, end.error.message)) return undefined;
  return JSON.stringify({ ...end, error: { ...end.error, code: "invalid_argument", message: rewrittenMessage(end.error.message) } });
}

/**
 * Wraps a universal handler so that a malformed binary request body is answered INVALID_ARGUMENT in every protocol;
 * `onRejected` is called once for each such call (for metrics and logs).
 */
export function mapMalformedBodies(handler: UniversalHandler, onRejected: (handler: UniversalHandler) => void): UniversalHandler {
  const wrapped = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    const contentType = (req.header.get("content-type") ?? "").toLowerCase();
    if (contentType.startsWith("application/grpc-web")) return rewriteFrames(res, 0x80, grpcWebTrailer);
    if (contentType.startsWith("application/grpc")) return rewriteGrpcTrailer(res);
    if (contentType.startsWith("application/connect+")) return rewriteFrames(res, 0x02, connectEndStream);
    return rewriteConnectUnary(res);
  };

  function rewriteFrames(res: UniversalServerResponse, flag: number, rewrite: (text: string) => string | undefined): UniversalServerResponse {
    const body = res.body;
    async function* frames(): AsyncGenerator<Uint8Array> {
      for await (const chunk of chunksOf(body)) {
        const out = rewriteEndFrame(chunk, flag, rewrite);
        if (out !== chunk) onRejected(handler);
        yield out;
      }
    }
    return { ...res, body: frames() };
  }

  function rewriteGrpcTrailer(res: UniversalServerResponse): UniversalServerResponse {
    const body = res.body;
    const trailer = res.trailer;
    if (!trailer) return res;
    // The trailers are final once the body ends; the adapter writes them after the last chunk.
    async function* checked(): AsyncGenerator<Uint8Array> {
      yield* chunksOf(body);
      const message = decodeURIComponent(trailer!.get("grpc-message") ?? "");
      if (isParseFailure(trailer!.get("grpc-status"), message)) {
        trailer!.set("grpc-status", String(Code.InvalidArgument));
        trailer!.set("grpc-message", encodeURIComponent(rewrittenMessage(message)));
        onRejected(handler);
      }
    }
    return { ...res, body: checked() };
  }

  async function rewriteConnectUnary(res: UniversalServerResponse): Promise<UniversalServerResponse> {
    const header = new Headers(res.header);
    if (res.status !== 500 || header.has("content-encoding")) return res;
    const parts: Uint8Array[] = [];
    for await (const chunk of chunksOf(res.body)) parts.push(chunk);
    const bytes = Buffer.concat(parts);
    let error: { code?: unknown; message?: unknown } | undefined;
    try {
      error = JSON.parse(bytes.toString("utf8")) as typeof error;
    } catch {
      error = undefined;
    }
    if (!error || !isParseFailure(error.code, error.message)) return { ...res, body: createAsyncIterable([bytes]) };
    const body = new TextEncoder().encode(JSON.stringify({ ...error, code: "invalid_argument", message: rewrittenMessage(error.message) }));
    header.set("content-length", String(body.byteLength));
    onRejected(handler);
    return { ...res, status: 400, header, body: createAsyncIterable([body]) };
  }

  return Object.assign(wrapped, handler);
}
