// Connect clients for every public service, over any of the protocols the edge serves, plus small helpers the
// scenario needs (waiting for eventual effects, reading an error's code).
import { ConnectError, createClient, type Client, type Code, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { AuthAdminService } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { BillingAdminService } from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js";
import type { LedgerEntry } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelUpstreamService } from "@luna/contracts/luna/models/v1/model_upstream_service_pb.js";

/** The wire protocols clients may use at the edge. */
export type Protocol = "connect-json" | "connect-binary" | "grpc" | "grpc-web";

export interface Clients {
  auth: Client<typeof AuthService>;
  authAdmin: Client<typeof AuthAdminService>;
  billing: Client<typeof BillingService>;
  billingAdmin: Client<typeof BillingAdminService>;
  models: Client<typeof ModelService>;
  modelAdmin: Client<typeof ModelAdminService>;
  chat: Client<typeof ChatService>;
  image: Client<typeof ImageService>;
  /** Internal services: a client must never reach them, whatever its token. */
  credits: Client<typeof CreditsService>;
  upstreams: Client<typeof ModelUpstreamService>;
}

/** A transport to `baseUrl` over `protocol`, sending `token` as a bearer token when given. */
export function transportFor(baseUrl: string, protocol: Protocol, token?: string): Transport {
  const bearer: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const common = { baseUrl, interceptors: [bearer], defaultTimeoutMs: 30_000 };
  switch (protocol) {
    case "connect-json":
      return createConnectTransport({ ...common, httpVersion: "1.1" });
    case "connect-binary":
      return createConnectTransport({ ...common, httpVersion: "1.1", useBinaryFormat: true });
    case "grpc":
      return createGrpcTransport(common);
    case "grpc-web":
      return createGrpcWebTransport({ ...common, httpVersion: "1.1" });
  }
}

/** Clients of every service over one transport. */
export function clientsFor(baseUrl: string, token?: string, protocol: Protocol = "connect-json"): Clients {
  const t = transportFor(baseUrl, protocol, token);
  return {
    auth: createClient(AuthService, t),
    authAdmin: createClient(AuthAdminService, t),
    billing: createClient(BillingService, t),
    billingAdmin: createClient(BillingAdminService, t),
    models: createClient(ModelService, t),
    modelAdmin: createClient(ModelAdminService, t),
    chat: createClient(ChatService, t),
    image: createClient(ImageService, t),
    credits: createClient(CreditsService, t),
    upstreams: createClient(ModelUpstreamService, t),
  };
}

/** The Connect code a call failed with, or "ok". */
export async function codeOf(call: Promise<unknown> | (() => Promise<unknown>)): Promise<Code | "ok"> {
  try {
    await (typeof call === "function" ? call() : call);
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** The Connect code a server stream failed with (once read to its end), or "ok". */
export async function streamCodeOf(stream: AsyncIterable<unknown>): Promise<Code | "ok"> {
  return codeOf(async () => {
    for await (const _ of stream) {
      // drain
    }
  });
}

/**
 * Retries `check` until it returns without throwing, or throws its last error after `timeoutMs` — for effects
 * that arrive through the event bus (the sign-up grant) or a cache (a disabled model).
 */
export async function eventually<T>(check: () => Promise<T>, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}

/** Every ledger entry of the caller's account, oldest first (the RPC pages newest first). */
export async function allLedgerEntries(c: Clients): Promise<LedgerEntry[]> {
  const entries: LedgerEntry[] = [];
  let pageToken = "";
  do {
    const page = await c.billing.listLedgerEntries({ page: { pageSize: 100, pageToken } });
    entries.push(...page.entries);
    pageToken = page.page?.nextPageToken ?? "";
  } while (pageToken);
  return entries.reverse();
}
