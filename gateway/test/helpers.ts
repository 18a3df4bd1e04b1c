// Shared by the gateway tests: the committed configuration, a fresh copy to break, and the generator's inputs.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { connectionManagers, routesOf } from "../src/model.js";
import { ENVOY_YAML } from "../src/generate.js";
import { DENIED_PREFIXES, PUBLIC_ROUTES } from "../src/routes.js";
import { loadRpcs, type Rpc } from "../src/sources.js";

export type Obj = Record<string, unknown>;

export const committedYaml = (): string => readFileSync(ENVOY_YAML, "utf8");

/** A fresh, mutable copy of the committed configuration. */
export const committedConfig = (): Obj => parse(committedYaml()) as Obj;

let rpcs: Rpc[] | undefined;
export async function allRpcs(): Promise<Rpc[]> {
  rpcs ??= await loadRpcs();
  return rpcs;
}

/** The (first) HTTP connection manager of a config. */
export const hcmOf = (config: Obj): Obj => connectionManagers(config)[0]!;

/** The route list of a config's HTTP listener, to edit in place. */
export const routeList = (config: Obj): ReturnType<typeof routesOf> => routesOf(hcmOf(config));

/** The fixed corpus: every RPC, every table entry and its edges, the denied prefixes, and paths not in normal form. */
export async function corpus(): Promise<string[]> {
  const rpcs = (await allRpcs()).map((r) => r.path);
  const table = PUBLIC_ROUTES.flatMap((r) => [r.prefix, `${r.prefix}x`, `${r.prefix}Unknown/Method`, r.prefix.slice(0, -1), r.prefix.toUpperCase()]);
  const denied = DENIED_PREFIXES.flatMap((p) => [p, `${p}Reserve`, `${p.slice(0, -1)}Other/Call`]);
  const malformed = [
    "/luna.billing.v1.BillingService/../luna.billing.v1.CreditsService/Reserve",
    "/luna.billing.v1.BillingService/./GetBalance",
    "/luna.billing.v1.BillingService//GetBalance",
    "/luna.billing.v1.BillingService/%2e%2e/CreditsService/Reserve",
    "/luna.chat.v1.ChatService/%2E%2E/luna.billing.v1.CreditsService/Reserve",
    "/luna.chat.v1.ChatService/SendMessage%2F..%2Fx",
    "/luna.chat.v1.ChatService/SendMessage%5c",
    "/luna.billing.v1.BillingService\\..\\CreditsService",
    "/luna.chat.v1.ChatService/SendMessage;x=1",
    "/images/u/j/..",
    "/images/u/j/.",
    "/images/./x.png",
    "//luna.auth.v1.AuthService/SignIn",
    "/.well-known/./jwks.json",
    "/grpc.health.v1.Health/Check/..",
    "/", "/x", "/.well-known/jwks.json.bak", "/.well-known/", "/images", "/envoy", "/envoy.", "/LUNA.AUTH.V1.AuthService/SignIn",
  ];
  const queries = ["/luna.models.v1.ModelService/ListModels?connect=v1&encoding=json&message=%7B%7D",
    "/luna.billing.v1.CreditsService/Reserve?x=/luna.billing.v1.BillingService/", "/images/u/j/0.png?exp=1&sig=abc"];
  return [...new Set([...rpcs, ...table, ...denied, ...malformed, ...queries])];
}
