// What the generator reads from the rest of the repository, so nothing about RPCs is written twice: every RPC and
// whether it streams comes from the generated descriptors in packages/contracts (proto/ is their source), and who may
// call it without a token from the services' own access rules (each service module's `authRules`, enforced by the
// kit's auth interceptor).
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { healthAuthRules, ruleOf, type AccessRule, type MethodRules, type ServiceName } from "@luna/kit";
import { authRules as authServiceRules } from "@luna/auth";
import { BILLING_AUTH_RULES } from "@luna/billing";
import { CHAT_AUTH_RULES } from "@luna/chat-router";
import { authRules as imageJobRules } from "@luna/image-job";
import { authRules as modelRegistryRules } from "@luna/model-registry";

/** One RPC as the edge sees it. */
export interface Rpc {
  /** `/luna.chat.v1.ChatService/SendMessage`: the path in Connect, gRPC and gRPC-Web alike. */
  path: string;
  service: string;
  method: string;
  /** The response is a stream (server or bidi streaming): no route timeout, idle and duration limits instead. */
  streaming: boolean;
  /** What the owning service's access rules say; undefined when no rule covers it (the service refuses it). */
  rule: AccessRule | undefined;
}

/** Each service's access rules, as its module hands them to the kit (each names only its own proto services). */
export const RULES_BY_SERVICE: Readonly<Record<ServiceName, MethodRules>> = {
  auth: authServiceRules,
  billing: BILLING_AUTH_RULES,
  "model-registry": modelRegistryRules,
  "chat-router": CHAT_AUTH_RULES,
  "image-job": imageJobRules,
};

/** Every service's access rules, merged, with the kit's rule for grpc.health.v1 (public on every server). */
export const SERVICE_RULES: MethodRules = Object.assign({ ...healthAuthRules }, ...Object.values(RULES_BY_SERVICE)) as MethodRules;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : /_pb\.(ts|js)$/.test(e.name) && !e.name.endsWith(".d.ts") ? [join(dir, e.name)] : []);
}

/** The generated contracts' directory (src/gen with the luna-source condition, dist/gen when built). */
function contractsGenDir(): string {
  return join(fileURLToPath(new URL(".", import.meta.resolve("@luna/contracts"))), "gen");
}

/** Every service descriptor in packages/contracts, sorted by type name. */
export async function loadServices(genDir = contractsGenDir()): Promise<DescService[]> {
  const found = new Map<string, DescService>();
  for (const file of files(genDir).sort()) {
    const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    for (const value of Object.values(mod)) {
      const d = value as Partial<DescService> | undefined;
      if (d && typeof d === "object" && d.kind === "service" && typeof d.typeName === "string") found.set(d.typeName, d as DescService);
    }
  }
  return [...found.values()].sort((a, b) => a.typeName.localeCompare(b.typeName));
}

const streams = (m: DescMethod): boolean => m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming";

/** Every RPC of every service in the contracts, with its streaming kind and its access rule. */
export async function loadRpcs(rules: MethodRules = SERVICE_RULES, genDir?: string): Promise<Rpc[]> {
  const services = await loadServices(genDir);
  return services.flatMap((s) => s.methods.map((m) => {
    let rule: AccessRule | undefined;
    try {
      rule = ruleOf(rules, s.typeName, m.name);
    } catch {
      rule = undefined;
    }
    return { path: `/${s.typeName}/${m.name}`, service: s.typeName, method: m.name, streaming: streams(m), rule };
  }));
}
