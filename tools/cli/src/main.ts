// Entry point of the `luna` command (bin/luna.js loads it).
import { run } from "./cli.js";
import { nodeIo } from "./io.js";

process.exitCode = await run(process.argv.slice(2), nodeIo());
