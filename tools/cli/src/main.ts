// Entry point of the `luna` command (bin/luna.js loads it).
import { run } from "./cli.js";
import { nodeIo } from "./io.js";

// A reader that went away (`luna models | head -1`) ends the output: stop quietly, as Unix tools do, instead of an
// EPIPE stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await run(process.argv.slice(2), nodeIo());
