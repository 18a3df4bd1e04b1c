// Malformed binary request bodies are the caller's fault, but @connectrpc/connect reports them as INTERNAL
// ("parse binary: illegal tag ...", HTTP 500 / gRPC 13), and for unary and server-streaming calls it parses the
// request before any interceptor runs, so neither the error mapping nor the RPC metrics see them. The kit wraps every
// universal handler once (see createServer) and rewrites that one error to INVALID_ARGUMENT in the response of each
// protocol — Connect unary (status + JSON body), Connect streaming (end-stream message), gRPC (trailers) and gRPC-Web
// (trailer frame). It also reports the final code of every call that ended before the interceptors ran (malformed
// binary or JSON, a bad timeout header, ...) so the RPC metrics count it. Client- and bidi-streaming calls parse
// inside the interceptors; errors.ts maps the same error there.
import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";
import { createAsyncIterable, type UniversalHandler, type UniversalServerRequest, type UniversalServerResponse } from "@connectrpc/connect/protocol";

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

/**
 * `body`'s chunks, each as it is (`map`: replaced), then `atEnd()` once it ended normally. Every streamed message of
 * every RPC passes here, so it forwards `next()` directly instead of adding async generators (each of which costs
 * promises and a queue per chunk).
 */
function passThrough(body: UniversalServerResponse["body"], atEnd: () => void, map?: (chunk: Uint8Array) => Uint8Array): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
      const it = body?.[Symbol.asyncIterator]();
      let ended = false;
      const settle = (r: IteratorResult<Uint8Array>): IteratorResult<Uint8Array> => {
        if (!r.done) return map ? { done: false, value: map(r.value) } : r;
        if (!ended) {
          ended = true;
          atEnd();
        }
        return r;
      };
      return {
        next: () => (it ? it.next().then(settle) : Promise.resolve(settle({ done: true, value: undefined }))),
        return: async (value?: unknown) => {
          ended = true; // stopped early: not an end of the body
          const r = await it?.return?.(value);
          return r ?? { done: true, value: undefined };
        },
        throw: async (err?: unknown) => {
          ended = true;
          if (it?.throw) return await it.throw(err);
          throw err;
        },
      };
    },
  };
}

/** An end frame (gRPC-Web trailers, Connect end-stream): its final code, and its text rewritten if it was a parse failure. */
type EndFrame = { code: Code | undefined; replaced?: string };

/** Reads one enveloped frame with `flag` set; returns it unchanged, or rewritten, with the call's final code. */
function endFrame(chunk: Uint8Array, flag: number, read: (text: string) => EndFrame): { frame: Uint8Array; code?: Code | undefined } {
  if (chunk.byteLength < 5 || (chunk[0]! & flag) !== flag || (chunk[0]! & 0x01) !== 0) return { frame: chunk }; // 0x01: compressed
  const length = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength).getUint32(1);
  if (chunk.byteLength !== 5 + length) return { frame: chunk };
  const { code, replaced } = read(new TextDecoder().decode(chunk.subarray(5)));
  if (replaced === undefined) return { frame: chunk, code };
  const data = new TextEncoder().encode(replaced);
  const out = new Uint8Array(5 + data.byteLength);
  out[0] = chunk[0]!;
  new DataView(out.buffer).setUint32(1, data.byteLength);
  out.set(data, 5);
  return { frame: out, code };
}

const grpcCode = (status: string | null | undefined): Code | undefined => (status && status !== "0" ? Number(status) as Code : undefined);

function grpcWebTrailer(text: string): EndFrame {
  const lines = text.split("\r\n").filter((l) => l !== "");
  const fields = new Map(lines.map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as const;
  }));
  const message = decodeURIComponent(fields.get("grpc-message") ?? "");
  if (!isParseFailure(fields.get("grpc-status"), message)) return { code: grpcCode(fields.get("grpc-status")) };
  fields.set("grpc-status", String(Code.InvalidArgument));
  fields.set("grpc-message", encodeURIComponent(rewrittenMessage(message)));
  return { code: Code.InvalidArgument, replaced: [...fields].map(([k, v]) => `${k}: ${v}\r\n`).join("") };
}

function connectEndStream(text: string): EndFrame {
  let end: { error?: { code?: unknown; message?: unknown } };
  try {
    end = JSON.parse(text) as typeof end;
  } catch {
    return { code: undefined };
  }
  if (!end.error) return { code: undefined };
  if (!isParseFailure(end.error.code, end.error.message)) return { code: typeof end.error.code === "string" ? codeFromString(end.error.code) : Code.Unknown };
  return { code: Code.InvalidArgument, replaced: JSON.stringify({ ...end, error: { ...end.error, code: "invalid_argument", message: rewrittenMessage(end.error.message) } }) };
}

/**
 * Wraps a universal handler so that a malformed binary request body is answered INVALID_ARGUMENT in every protocol.
 * `reached(req)` says whether the call got to the interceptors (which count it themselves); when it did not and the
 * call failed, `onRejected` is called once with its final code (for metrics and logs).
 */
export function mapMalformedBodies(
  handler: UniversalHandler,
  reached: (req: UniversalServerRequest) => boolean,
  onRejected: (handler: UniversalHandler, code: Code) => void,
): UniversalHandler {
  const wrapped = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    const report = (code: Code | undefined): void => {
      if (code !== undefined && !reached(req)) onRejected(handler, code);
    };
    const contentType = (req.header.get("content-type") ?? "").toLowerCase();
    if (contentType.startsWith("application/grpc-web")) return rewriteFrames(res, 0x80, grpcWebTrailer, report);
    if (contentType.startsWith("application/grpc")) return rewriteGrpcTrailer(res, report);
    if (contentType.startsWith("application/connect+")) return rewriteFrames(res, 0x02, connectEndStream, report);
    return rewriteConnectUnary(res, report);
  };

  function rewriteFrames(res: UniversalServerResponse, flag: number, read: (text: string) => EndFrame, report: (code: Code | undefined) => void): UniversalServerResponse {
    return { ...res, body: passThrough(res.body, () => undefined, (chunk) => {
      const { frame, code } = endFrame(chunk, flag, read);
      report(code);
      return frame;
    }) };
  }

  function rewriteGrpcTrailer(res: UniversalServerResponse, report: (code: Code | undefined) => void): UniversalServerResponse {
    const body = res.body;
    const trailer = res.trailer;
    if (!trailer) return res;
    // The trailers are final once the body ends; the adapter writes them after the last chunk.
    return { ...res, body: passThrough(body, () => {
      const message = decodeURIComponent(trailer.get("grpc-message") ?? "");
      if (isParseFailure(trailer.get("grpc-status"), message)) {
        trailer.set("grpc-status", String(Code.InvalidArgument));
        trailer.set("grpc-message", encodeURIComponent(rewrittenMessage(message)));
      }
      report(grpcCode(trailer.get("grpc-status")));
    }) };
  }

  async function rewriteConnectUnary(res: UniversalServerResponse, report: (code: Code | undefined) => void): Promise<UniversalServerResponse> {
    const header = new Headers(res.header);
    if (res.status === 200 || header.has("content-encoding")) return res;
    const parts: Uint8Array[] = [];
    for await (const chunk of chunksOf(res.body)) parts.push(chunk);
    const bytes = Buffer.concat(parts);
    let error: { code?: unknown; message?: unknown } | undefined;
    try {
      error = JSON.parse(bytes.toString("utf8")) as typeof error;
    } catch {
      error = undefined;
    }
    if (!error || !isParseFailure(error.code, error.message)) {
      // Protocol-level refusals (unsupported media type, wrong method) carry no code: not RPCs, not counted.
      report(typeof error?.code === "string" ? codeFromString(error.code) : undefined);
      return { ...res, body: createAsyncIterable([bytes]) };
    }
    const body = new TextEncoder().encode(JSON.stringify({ ...error, code: "invalid_argument", message: rewrittenMessage(error.message) }));
    header.set("content-length", String(body.byteLength));
    report(Code.InvalidArgument);
    return { ...res, status: 400, header, body: createAsyncIterable([body]) };
  }

  return Object.assign(wrapped, handler);
}
