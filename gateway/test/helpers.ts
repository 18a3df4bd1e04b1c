// Shared by the gateway tests: the committed configuration, a fresh copy to break, and the generator's inputs.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { connectionManagers, routesOf } from "../src/model.js";
import { ENVOY_YAML } from "../src/generate.js";
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
