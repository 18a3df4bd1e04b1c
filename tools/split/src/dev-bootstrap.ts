// Development bootstrap of the split platform, compatible with the all-in-one's (same files under the data dir, so
// `make dev` and `make dev-split` can take turns on one `.luna/`): the first admin's credentials, stable local secrets,
// and invite codes in `invites.txt`. The auth service runs in its own process here, so invite codes are made the
// way an operator would: the first admin signs in and calls AuthAdminService.CreateInvites.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthAdminService } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
export { devAdmin, devSecret } from "@luna/devstack";

/** Canonical form of an invite code as auth reads it (case, dashes and look-alikes ignored). */
function canonical(code: string): string {
  return code.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
}

export interface BootstrapInvitesOptions {
  /** The auth service's URL (gRPC over HTTP/2). */
  authUrl: string;
  admin: { email: string; password: string };
  invitesFile: string;
  /** Codes to create when none listed in the file is usable; default 5 (as `make dev`). */
  count?: number;
  timeoutMs?: number;
}

/**
 * Makes sure `invitesFile` lists usable invite codes and returns them. Codes already listed are kept while auth
 * still has an active invite (not revoked or expired, uses left) with the same hint — the first 4 symbols, which is
 * all an admin can see of a code: 20 bits, so a stale code passing for a live one is a one-in-a-million accident in
 * a development database. When none is usable, `count` new single-use codes are created.
 */
export async function bootstrapInvites(opts: BootstrapInvitesOptions): Promise<string[]> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let token = "";
  const bearer: Interceptor = (next) => (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: opts.authUrl, interceptors: [bearer], defaultTimeoutMs: timeoutMs });
  const auth = createClient(AuthService, transport);
  const admin = createClient(AuthAdminService, transport);
  const signedIn = await auth.signIn({ email: opts.admin.email, password: opts.admin.password });
  token = signedIn.tokens?.accessToken ?? "";
  if (!token) throw new Error("the dev admin signed in but got no access token");

  const listed = existsSync(opts.invitesFile)
    ? readFileSync(opts.invitesFile, "utf8").split("\n").map((l) => l.trim()).filter((l) => l.length > 0)
    : [];
  const liveHints = new Set<string>();
  if (listed.length > 0) {
    let pageToken = "";
    do {
      const page = await admin.listInvites({ page: { pageSize: 100, pageToken }, includeInactive: false });
      const now = Date.now();
      for (const inv of page.invites) {
        const expired = inv.expiresAt !== undefined && Number(inv.expiresAt.seconds) * 1000 <= now;
        if (inv.usesLeft > 0 && inv.revokedAt === undefined && !expired) liveHints.add(canonical(inv.codeHint));
      }
      pageToken = page.page?.nextPageToken ?? "";
    } while (pageToken);
  }
  let codes = listed.filter((code) => [...liveHints].some((hint) => hint.length > 0 && canonical(code).startsWith(hint)));
  if (codes.length === 0) {
    const created = await admin.createInvites({ count: opts.count ?? 5, usesPerCode: 1, note: "development bootstrap" });
    codes = created.invites.map((i) => i.code);
  }
  writeFileSync(opts.invitesFile, codes.join("\n") + "\n", { mode: 0o600 });
  return codes;
}
