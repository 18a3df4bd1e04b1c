// What a command may touch of the outside world. `nodeIo()` is the real process; tests pass streams of their own,
// so every command runs in-process under test exactly as it does from a terminal.
import type { Readable, Writable } from "node:stream";

/** A writable stream that may be a terminal (progress bars and prompts only draw on terminals). */
export type Output = Writable & { isTTY?: boolean; columns?: number };
/** A readable stream that may be a terminal (passwords are only prompted for on terminals). */
export type Input = Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };

export interface Io {
  env: NodeJS.ProcessEnv;
  stdin: Input;
  stdout: Output;
  stderr: Output;
  /**
   * Calls `handler` on every Ctrl-C (SIGINT) until the returned function is called. While any handler is
   * registered, Ctrl-C does not end the process: the chat REPL uses it to stop the current reply only.
   */
  onInterrupt(handler: () => void): () => void;
}

/** The real process's streams, environment and SIGINT. */
export function nodeIo(): Io {
  return {
    env: process.env,
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    onInterrupt(handler) {
      process.on("SIGINT", handler);
      return () => void process.off("SIGINT", handler);
    },
  };
}

/** Writes one line to a stream. */
export function writeLine(out: Writable, line = ""): void {
  out.write(`${line}\n`);
}
