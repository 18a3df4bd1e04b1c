// The client factory's token handling against a small fake Luna over real HTTP: the bearer header, refresh ahead of
// expiry, refresh and retry after UNAUTHENTICATED (unary calls and server streams), and a session the server ended.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { TokensSchema, UserSchema } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { JobSchema, JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createClients } from "./client.js";
import { CredentialStore } from "./credentials.js";
import { describeError } from "./errors.js";

let server: Server;
let url = "";
let valid = "access-1"; // the only access token the fake accepts
let issued = 1;
let refreshCalls = 0;
let refreshAuthHeader: string | null = null;
let refreshRefused = false;
const dir = mkdtempSync(join(tmpdir(), "luna-cli-client-"));

function requireToken(header: string | null): void {
  if (header !== `Bearer ${valid}`) throw new ConnectError("token expired", Code.Unauthenticated);
}

function routes(router: ConnectRouter): void {
  router.service(AuthService, {
    async refresh(req, ctx) {
      refreshCalls++;
      refreshAuthHeader = ctx.requestHeader.get("authorization");
      if (refreshRefused || !req.refreshToken.startsWith("refresh-")) throw new ConnectError("session ended", Code.Unauthenticated);
      valid = `access-${++issued}`;
      return { tokens: create(TokensSchema, { accessToken: valid, refreshToken: `refresh-${issued}`,
        accessTokenExpiresAt: timestampFromMs(Date.now() + 900_000) }) };
    },
    async getMe(_req, ctx) {
      requireToken(ctx.requestHeader.get("authorization"));
      return { user: create(UserSchema, { email: "ann@x.io" }) };
    },
  });
  router.service(ImageService, {
    async *watchJob(req, ctx) {
      requireToken(ctx.requestHeader.get("authorization"));
      for (const p of [10, 60, 100]) yield { job: create(JobSchema, { id: req.jobId, status: JobStatus.RUNNING }), progressPercent: p };
    },
  });
}

beforeAll(async () => {
  server = createServer(connectNodeAdapter({ routes }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
});
afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(dir, { recursive: true, force: true });
});
afterEach(() => {
  refreshCalls = 0;
  refreshRefused = false;
});

function setup(session: { accessToken: string; expiresInMs: number; refreshToken?: string }) {
  const store = new CredentialStore(join(dir, String(Math.random())));
  store.set(url, { accessToken: session.accessToken, accessTokenExpiresAt: Date.now() + session.expiresInMs,
    refreshToken: session.refreshToken ?? "refresh-1", refreshTokenExpiresAt: Date.now() + 86_400_000, userId: "u1", email: "ann@x.io", role: "user" });
  const clients = createClients(store, { url, httpVersion: "1.1", timeoutMs: 5000, refreshSkewMs: 30_000 });
  return { store, clients };
}

describe("client factory", () => {
  it("sends the stored access token and does not refresh a fresh one", async () => {
    const { clients } = setup({ accessToken: valid, expiresInMs: 600_000 });
    expect((await clients.client(AuthService).getMe({})).user?.email).toBe("ann@x.io");
    expect(refreshCalls).toBe(0);
  });

  it("refreshes a token about to expire before the call, without sending it to Refresh", async () => {
    const { clients, store } = setup({ accessToken: valid, expiresInMs: 5_000 });
    await clients.client(AuthService).getMe({});
    expect(refreshCalls).toBe(1);
    expect(refreshAuthHeader).toBeNull();
    expect(store.get(url)?.accessToken).toBe(valid);
    expect(store.get(url)?.refreshToken).toBe(`refresh-${issued}`);
  });

  it("refreshes and retries a unary call the server rejects as UNAUTHENTICATED", async () => {
    const { clients, store } = setup({ accessToken: "revoked", expiresInMs: 600_000 });
    expect((await clients.client(AuthService).getMe({})).user?.email).toBe("ann@x.io");
    expect(refreshCalls).toBe(1);
    expect(store.get(url)?.accessToken).toBe(valid);
  });

  it("refreshes and retries a server stream rejected before its first message, delivering every message once", async () => {
    const { clients } = setup({ accessToken: "revoked", expiresInMs: 600_000 });
    const seen: number[] = [];
    for await (const ev of clients.client(ImageService).watchJob({ jobId: "job-1" })) seen.push(ev.progressPercent);
    expect(seen).toEqual([10, 60, 100]);
    expect(refreshCalls).toBe(1);
  });

  it("forgets a session whose refresh the server refuses and says to log in", async () => {
    const { clients, store } = setup({ accessToken: "revoked", expiresInMs: 600_000 });
    refreshRefused = true;
    const err = await clients.client(AuthService).getMe({}).catch((e: unknown) => e);
    expect(describeError(err, { url, signedIn: true })).toBe("your session has ended (session ended): run `luna login`");
    expect(store.get(url)).toBeUndefined();
  });

  it("makes one refresh for concurrent calls", async () => {
    const { clients } = setup({ accessToken: valid, expiresInMs: 1_000 });
    await Promise.all([1, 2, 3].map(() => clients.client(AuthService).getMe({})));
    expect(refreshCalls).toBe(1);
  });
});
