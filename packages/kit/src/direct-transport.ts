// The all-in-one mode's path between modules hosted in one process: a Connect Transport that calls the target
// module's service implementation directly. A call through `createRouterTransport` serialises the request, runs
// the Connect protocol on both sides (envelopes, headers, two abort signals) and parses the response again — about a
// quarter of chat-router's CPU per reply when billing is a function call away. This transport keeps what callers and
// handlers can observe and drops the rest:
// - access rules are checked as the auth interceptor checks them, for the in-process caller's internal principal;
// - messages are copies on both sides (create + clone), so neither side sees the other's later mutations, as over
//   the wire;
// - errors reach the caller as ConnectErrors with the handler's code (anything else becomes `Unknown`, as Connect's
//   server does); a deadline ends the call with `DeadlineExceeded`, the caller's signal with `Canceled`, and both
//   abort the handler's `ctx.signal`, which is also aborted (with a reason made once, not a fresh DOMException per
//   call) when the call is over;
// - response headers and trailers set by the handler reach the caller (`onHeader`/`onTrailer`).
// Unary and server-streaming methods take this path; client- and bidi-streaming ones (none between Luna modules
// today) go through `fallback`.
import { clone, create, isMessage, type DescMessage, type DescMethod, type DescMethodStreaming, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ConnectRouter,
  type HandlerContext,
  type StreamResponse,
  type Transport,
  type UnaryResponse,
} from "@connectrpc/connect";
import { checkAccess, principalKey, ruleOf, type MethodRules, type Principal } from "./auth.js";

export interface DirectTransportOptions {
  /** Registers the target module's services (its `routes`). */
  routes: (router: ConnectRouter) => void;
  /** The target module's access rules. */
  rules: MethodRules;
  /** Who the calls come from (an internal principal in the all-in-one mode). */
  principal: Principal;
  /** Deadline of calls that set none. */
  defaultTimeoutMs?: number;
  /** Serves what this transport does not (client- and bidi-streaming methods). */
  fallback: () => Transport;
}

type AnyImpl = (req: unknown, ctx: HandlerContext) => unknown;

/** Why the handler's signal is aborted once a call ended normally (one object: aborting with it allocates nothing). */
const CALL_ENDED = new ConnectError("the call has ended", Code.Canceled);

/** Collects the implementations a module registers, keyed by "pkg.Service/Method". */
function collectImpls(routes: (router: ConnectRouter) => void): Map<string, AnyImpl> {
  const impls = new Map<string, AnyImpl>();
  const router: ConnectRouter = {
    handlers: [],
    service(service, implementation) {
      const impl = implementation as Record<string, unknown>;
      for (const m of service.methods) {
        const fn = impl[m.localName];
        if (typeof fn === "function") impls.set(`${service.typeName}/${m.name}`, fn.bind(impl) as AnyImpl);
      }
      return router;
    },
    rpc(method, impl) {
      impls.set(`${method.parent.typeName}/${method.name}`, impl as AnyImpl);
      return router;
    },
  };
  routes(router);
  return impls;
}

/** The handler's context for one call, and how the call ends. */
class Call {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private readonly onCallerAbort: (() => void) | undefined;
  private rejectEnd: ((e: ConnectError) => void) | undefined;
  /** Settles (rejects) when the deadline passes or the caller aborts; never resolves. */
  readonly ended: Promise<never>;
  readonly ctx: HandlerContext;

  constructor(method: DescMethod, private readonly callerSignal: AbortSignal | undefined, timeoutMs: number | undefined,
    header: ConstructorParameters<typeof Headers>[0], principal: Principal) {
    this.ended = new Promise<never>((_, reject) => (this.rejectEnd = reject));
    this.ended.catch(() => undefined);
    const deadline = timeoutMs !== undefined && timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
    if (deadline !== undefined) {
      this.timer = setTimeout(() => this.end(new ConnectError(`the call to ${method.parent.typeName}/${method.name} timed out`, Code.DeadlineExceeded)), timeoutMs);
    }
    if (callerSignal) {
      if (callerSignal.aborted) queueMicrotask(() => this.end(ConnectError.from(callerSignal.reason, Code.Canceled)));
      else {
        this.onCallerAbort = () => this.end(ConnectError.from(callerSignal.reason, Code.Canceled));
        callerSignal.addEventListener("abort", this.onCallerAbort, { once: true });
      }
    }
    const values = createContextValues();
    values.set(principalKey, principal);
    let requestHeader: Headers | undefined;
    let responseHeader: Headers | undefined;
    let responseTrailer: Headers | undefined;
    this.ctx = {
      method,
      service: method.parent,
      signal: this.controller.signal,
      timeoutMs: () => (deadline === undefined ? undefined : deadline - Date.now()),
      requestMethod: "POST",
      // Headers are made when a handler asks for them: most never do.
      get requestHeader() {
        return (requestHeader ??= new Headers(header));
      },
      get responseHeader() {
        return (responseHeader ??= new Headers());
      },
      get responseTrailer() {
        return (responseTrailer ??= new Headers());
      },
      protocolName: "in-process",
      values,
      url: `/${method.parent.typeName}/${method.name}`,
    };
  }

  /** Ends the call early: the caller gets `err`, the handler sees its signal aborted. */
  private end(err: ConnectError): void {
    this.cleanup();
    this.rejectEnd?.(err);
    if (!this.controller.signal.aborted) this.controller.abort(err);
  }

  /** The call is over (normally or not): timers and listeners go; the handler's signal is aborted. */
  finish(): void {
    this.cleanup();
    if (!this.controller.signal.aborted) this.controller.abort(CALL_ENDED);
  }

  private cleanup(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.onCallerAbort) this.callerSignal?.removeEventListener("abort", this.onCallerAbort);
  }

  /** A response carrying the handler's headers and trailers (made only if someone reads them). */
  response<T extends object>(fields: T): T & { header: Headers; trailer: Headers } {
    const ctx = this.ctx;
    return Object.defineProperties(fields, {
      header: { get: () => ctx.responseHeader, enumerable: true },
      trailer: { get: () => ctx.responseTrailer, enumerable: true },
    }) as T & { header: Headers; trailer: Headers };
  }
}

/** A copy of `value` as a complete message of `schema` (defaults filled, nothing shared with `value`). */
function copyOf<D extends DescMessage>(schema: D, value: unknown): MessageShape<D> {
  return isMessage(value, schema) ? clone(schema, value) : clone(schema, create(schema, value as MessageInitShape<D>));
}

/** Creates the direct transport of one module. */
export function createDirectTransport(opts: DirectTransportOptions): Transport {
  let impls: Map<string, AnyImpl> | undefined;
  const implOf = (method: DescMethod): AnyImpl => {
    impls ??= collectImpls(opts.routes);
    const procedure = `${method.parent.typeName}/${method.name}`;
    checkAccess(ruleOf(opts.rules, method.parent.typeName, method.name), procedure, opts.principal);
    const impl = impls.get(procedure);
    if (!impl) throw new ConnectError(`${procedure} is not implemented`, Code.Unimplemented);
    return impl;
  };
  const timeout = (ms: number | undefined) => ms ?? opts.defaultTimeoutMs;

  return {
    async unary<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O>, signal: AbortSignal | undefined, timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0], input: MessageInitShape<I>): Promise<UnaryResponse<I, O>> {
      const impl = implOf(method);
      const call = new Call(method, signal, timeout(timeoutMs), header, opts.principal);
      try {
        const out = await Promise.race([Promise.resolve(impl(copyOf(method.input, input), call.ctx)), call.ended]);
        return call.response({ stream: false as const, service: method.parent, method, message: copyOf(method.output, out) });
      } catch (err) {
        throw ConnectError.from(err);
      } finally {
        call.finish();
      }
    },

    async stream<I extends DescMessage, O extends DescMessage>(method: DescMethodStreaming<I, O>, signal: AbortSignal | undefined, timeoutMs: number | undefined,
      header: ConstructorParameters<typeof Headers>[0], input: AsyncIterable<MessageInitShape<I>>, contextValues?: Parameters<Transport["stream"]>[5]): Promise<StreamResponse<I, O>> {
      if (method.methodKind !== "server_streaming") return opts.fallback().stream(method, signal, timeoutMs, header, input, contextValues);
      const impl = implOf(method);
      let request: MessageInitShape<I> | undefined;
      for await (const m of input) {
        request = m;
        break;
      }
      const call = new Call(method, signal, timeout(timeoutMs), header, opts.principal);
      let source: AsyncIterator<unknown>;
      try {
        source = (impl(copyOf(method.input, request ?? ({} as MessageInitShape<I>)), call.ctx) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      } catch (err) {
        call.finish();
        throw ConnectError.from(err);
      }
      let sourceDone = false;
      const stopSource = () => {
        if (sourceDone) return;
        sourceDone = true;
        try {
          source.return?.()?.catch(() => undefined);
        } catch {
          // a throwing return() changes nothing for the caller
        }
      };
      // A deadline or the caller's abort (Connect clients stop a stream that way) ends the handler's iteration too,
      // even when nobody is reading.
      call.ended.catch(stopSource);
      async function* messages(): AsyncGenerator<MessageShape<O>> {
        try {
          for (;;) {
            const next = source.next().then((r) => {
              if (r.done) sourceDone = true;
              return r;
            }, (err: unknown) => {
              sourceDone = true;
              throw err;
            });
            const r = await Promise.race([next, call.ended]);
            if (r.done) return;
            yield copyOf(method.output, r.value);
          }
        } catch (err) {
          throw ConnectError.from(err);
        } finally {
          // The reader stopped early: end the handler's iteration too (its finally blocks run once it yields or
          // returns; not awaited, a handler stuck in an await must not hold the reader).
          stopSource();
          call.finish();
        }
      }
      return call.response({ stream: true as const, service: method.parent, method, message: messages() });
    },
  };
}
