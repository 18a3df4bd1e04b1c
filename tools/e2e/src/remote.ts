// The `remote` topology: a Luna that is already running — a cluster through its Envoy gateway (`kubectl
// port-forward`, k8s/ci/e2e.sh), or any platform — known only by its URL, an admin's credentials and its inference
// simulators' URLs. Nothing is started or stopped here, and nothing assumes a fresh platform: invites come from
// the admin API, the scenario's users and keys are unique per run, faults go through the simulators' HTTP control
// routes.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { ConnectError } from "@connectrpc/connect";
import { Role } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { clientsFor } from "./clients.js";
import { checkSimControl, comfyControl, vllmControl } from "./sim-control.js";
import { ALL_SERVICES, fetchDownload, type Download, type Topology } from "./topologies.js";

export interface RemoteOptions {
  /** The gateway clients talk to, e.g. http://127.0.0.1:8080. */
  url: string;
  admin: { email: string; password: string };
  /** Root URL of the vLLM simulator serving the text model the scenario chats with (its `/_sim/*` routes). */
  vllmUrl: string;
  /** Root URL of a ComfyUI simulator (optional: the scenario does not drive one today). */
  comfyUrl?: string;
  /** The install's BILLING_SIGNUP_CREDITS (default 1000, billing's default). */
  signupCredits?: bigint;
  /**
   * URLs the platform hands out whose origin the test cannot reach, and where to reach it instead: e.g. presigned
   * image URLs naming the in-cluster object store (`http://minio:9000` → a port-forward on 127.0.0.1). The request
   * keeps the original Host header, which presigned signatures cover.
   */
  originMap?: Record<string, string>;
}

/** Deadline of the checks made when connecting: a gateway answers a sign-in at once, so longer means a wrong URL. */
const CONNECT_TIMEOUT_MS = 15_000;

function origin(url: string, setting: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`${setting}: "${url}" is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`${setting}: "${url}" is not an http(s) URL`);
  return u.origin;
}

/**
 * The remote topology's settings from the environment (LUNA_E2E_REMOTE_URL, LUNA_E2E_ADMIN_EMAIL,
 * LUNA_E2E_ADMIN_PASSWORD, LUNA_E2E_VLLM_URL, and optionally LUNA_E2E_COMFYUI_URL, LUNA_E2E_SIGNUP_CREDITS,
 * LUNA_E2E_ORIGIN_MAP as `from=to[,from=to]`); undefined without LUNA_E2E_REMOTE_URL. Throws naming every missing
 * or malformed variable.
 */
export function remoteOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): RemoteOptions | undefined {
  const url = env.LUNA_E2E_REMOTE_URL?.trim();
  if (!url) return undefined;
  const problems: string[] = [];
  const need = (name: string): string => {
    const v = env[name]?.trim() ?? "";
    if (!v) problems.push(`${name} is not set`);
    return v;
  };
  const opts: RemoteOptions = {
    url,
    admin: { email: need("LUNA_E2E_ADMIN_EMAIL"), password: env.LUNA_E2E_ADMIN_PASSWORD ?? "" },
    vllmUrl: need("LUNA_E2E_VLLM_URL"),
  };
  if (!opts.admin.password) problems.push("LUNA_E2E_ADMIN_PASSWORD is not set");
  const comfy = env.LUNA_E2E_COMFYUI_URL?.trim();
  if (comfy) opts.comfyUrl = comfy;
  const credits = env.LUNA_E2E_SIGNUP_CREDITS?.trim();
  if (credits) {
    if (/^\d+$/.test(credits)) opts.signupCredits = BigInt(credits);
    else problems.push(`LUNA_E2E_SIGNUP_CREDITS must be a whole number, not "${credits}"`);
  }
  const map = env.LUNA_E2E_ORIGIN_MAP?.trim();
  if (map) {
    opts.originMap = {};
    for (const pair of map.split(",").map((p) => p.trim()).filter(Boolean)) {
      const eq = pair.indexOf("=");
      try {
        if (eq < 0) throw new Error(`"${pair}" is not from=to`);
        opts.originMap[origin(pair.slice(0, eq), "LUNA_E2E_ORIGIN_MAP")] = origin(pair.slice(eq + 1), "LUNA_E2E_ORIGIN_MAP");
      } catch (err) {
        problems.push((err as Error).message.startsWith("LUNA_E2E_ORIGIN_MAP") ? (err as Error).message : `LUNA_E2E_ORIGIN_MAP: ${(err as Error).message}`);
      }
    }
  }
  for (const [name, value] of [["LUNA_E2E_REMOTE_URL", url], ["LUNA_E2E_VLLM_URL", opts.vllmUrl], ["LUNA_E2E_COMFYUI_URL", comfy]] as const) {
    if (!value) continue;
    try {
      origin(value, name);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length) throw new Error(`the remote end-to-end topology (LUNA_E2E_REMOTE_URL=${url}): ${problems.join("; ")}`);
  return opts;
}

/** GET `url` from `via` (another origin), keeping `url`'s Host header. */
function getVia(url: URL, via: string): Promise<Download> {
  const target = new URL(via);
  const request = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request({ protocol: target.protocol, hostname: target.hostname, port: target.port, method: "GET",
      path: `${url.pathname}${url.search}`, headers: { host: url.host }, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: res.headers["content-type"] ?? null, bytes: new Uint8Array(Buffer.concat(chunks)) }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url.href} via ${via}: no answer within 30 s`)));
    req.on("error", reject);
    req.end();
  });
}

/**
 * Connects to a running Luna: signs the admin in (a wrong password, a non-admin account or a URL where no Luna
 * answers fails here, with a message saying which), and checks the simulators' control endpoints. Stopping it
 * stops nothing.
 */
export async function connectRemote(opts: RemoteOptions): Promise<Topology> {
  const url = opts.url.replace(/\/+$/, "");
  let token: string;
  try {
    const signedIn = await clientsFor(url).auth.signIn(opts.admin, { timeoutMs: CONNECT_TIMEOUT_MS });
    if (signedIn.user?.role !== Role.ADMIN) throw new Error(`${opts.admin.email} signed in but is not an admin (role ${Role[signedIn.user?.role ?? Role.UNSPECIFIED]})`);
    token = signedIn.tokens!.accessToken;
  } catch (err) {
    const why = err instanceof ConnectError ? `${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ""}` : (err as Error).message;
    throw new Error(`remote Luna at ${url}: the admin ${opts.admin.email} cannot sign in: ${why} — check LUNA_E2E_REMOTE_URL and the admin credentials (LUNA_E2E_ADMIN_EMAIL / LUNA_E2E_ADMIN_PASSWORD)`);
  }
  const vllm = vllmControl(opts.vllmUrl);
  await checkSimControl(vllm, "LUNA_E2E_VLLM_URL", "requests");
  const comfy = opts.comfyUrl ? comfyControl(opts.comfyUrl) : undefined;
  if (comfy) await checkSimControl(comfy, "LUNA_E2E_COMFYUI_URL", "executions");
  const admin = clientsFor(url, token);
  const originMap = opts.originMap ?? {};
  return {
    name: "remote",
    url,
    hosts: (s) => ALL_SERVICES.has(s),
    vllm,
    ...(comfy ? { comfy } : {}),
    admin: opts.admin,
    signupCredits: opts.signupCredits ?? 1000n,
    invites: async () => {
      // Valid for an hour: a run that dies leaves no code that works for ever.
      const { invites } = await admin.authAdmin.createInvites({ count: 2, usesPerCode: 1, expiresIn: { seconds: 3600n }, note: "end-to-end suite" });
      return invites.map((i) => i.code);
    },
    download: (link) => {
      const u = new URL(link, url);
      const via = originMap[u.origin];
      return via ? getVia(u, via) : fetchDownload(u.href);
    },
    output: () => "",
    stop: async () => undefined,
  };
}
