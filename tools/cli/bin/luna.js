#!/usr/bin/env node
// The `luna` command. In a checkout it runs the TypeScript sources through tsx, resolving workspace packages to
// their sources (the "luna-source" export condition), like every Luna tool in development; a packaged install
// without sources (or without tsx) runs the compiled dist/.
import { existsSync } from "node:fs";
import { register } from "node:module";

const source = new URL("../src/main.ts", import.meta.url);
let tsx;
if (existsSync(source)) {
  try {
    tsx = await import("tsx/esm/api");
  } catch {
    tsx = undefined; // no tsx (production install): use dist/
  }
}
if (tsx) {
  tsx.register();
  // Registered last, so it runs first: adds the condition before tsx and Node resolve a specifier.
  register("./luna-source-hook.js", import.meta.url);
  await import(source.href);
} else {
  await import(new URL("../dist/main.js", import.meta.url).href);
}
