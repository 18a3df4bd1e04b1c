/** The all-in-one platform as a library: `startPlatform` (used by make dev, the end-to-end and browser tests). */
export { ensureInternalKey, platformConfigSchema, startPlatform, startSimulators, type Platform, type PlatformOptions } from "./platform.js";
export { MODULES, type ModuleContext, type ModuleEntry } from "./modules.js";
