// Asking a person for input: visible lines, and passwords without echo. Prompts only happen on a terminal; scripts
// pass flags and `--password-stdin` instead.
import { createInterface } from "node:readline";
import { CliError, UsageError } from "./errors.js";
import type { Io } from "./io.js";

/** True when questions can be asked (stdin is a terminal). */
export function canPrompt(io: Io): boolean {
  return io.stdin.isTTY === true;
}

/** Asks for one visible line on the terminal. */
export async function promptLine(io: Io, question: string): Promise<string> {
  const rl = createInterface({ input: io.stdin, output: io.stderr, terminal: true });
  try {
    return await new Promise<string>((resolve, reject) => {
      rl.once("SIGINT", () => reject(new CliError("cancelled")));
      rl.once("close", () => reject(new CliError("cancelled")));
      rl.question(question, resolve);
    });
  } finally {
    rl.removeAllListeners("close");
    rl.close();
  }
}

/** Asks for a secret on the terminal without echoing it (raw mode: keys are read one by one). */
export async function promptHidden(io: Io, question: string): Promise<string> {
  const { stdin, stderr } = io;
  stderr.write(question);
  stdin.setRawMode?.(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = "";
      const onData = (chunk: Buffer | string) => {
        for (const ch of chunk.toString("utf8")) {
          if (ch === "\r" || ch === "\n") {
            done();
            return resolve(value);
          }
          if (ch === "\u0003" || ch === "\u0004") {
            // Ctrl-C or Ctrl-D: give up without a stack trace.
            done();
            return reject(new CliError("cancelled"));
          }
          if (ch === "\u007f" || ch === "\b") value = [...value].slice(0, -1).join("");
          else if (ch >= " ") value += ch;
        }
      };
      const done = () => {
        stdin.off("data", onData);
        stderr.write("\n");
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode?.(false);
    stdin.pause();
  }
}

/** Reads a password from the first line of stdin (for scripts: `echo "$PW" | luna login --password-stdin`). */
export async function readPasswordStdin(io: Io): Promise<string> {
  let data = "";
  io.stdin.setEncoding("utf8");
  for await (const chunk of io.stdin) {
    data += chunk as string;
    if (data.includes("\n")) break;
  }
  const line = data.split(/\r?\n/)[0] ?? "";
  if (!line) throw new CliError("no password on stdin");
  return line;
}

/** A value from a flag, else asked on the terminal, else a usage error naming the flag. */
export async function valueOrPrompt(io: Io, value: string | undefined, flag: string, question: string, command: string): Promise<string> {
  if (value !== undefined) return value;
  if (!canPrompt(io)) throw new UsageError(`missing --${flag} (stdin is not a terminal, so it cannot be asked for)`, command);
  const answer = (await promptLine(io, question)).trim();
  if (!answer) throw new UsageError(`${flag} is required`, command);
  return answer;
}

/**
 * The shortest password any Luna server accepts (auth's AUTH_PASSWORD_MIN_LENGTH cannot go lower; a server may ask
 * for more and says so itself). A new password shorter than this is refused before asking to repeat it.
 */
export const MIN_PASSWORD_LENGTH = 8;

/** The password: from stdin with --password-stdin, else asked without echo (twice when `confirm`). */
export async function passwordFrom(io: Io, fromStdin: boolean, command: string, confirm = false): Promise<string> {
  if (fromStdin) return readPasswordStdin(io);
  if (!canPrompt(io)) throw new UsageError("stdin is not a terminal: pass the password with --password-stdin", command);
  const pw = await promptHidden(io, "Password: ");
  if (!pw) throw new UsageError("password is required", command);
  if (confirm && [...pw].length < MIN_PASSWORD_LENGTH) throw new CliError(`the password must be at least ${MIN_PASSWORD_LENGTH} characters`);
  if (confirm && (await promptHidden(io, "Repeat password: ")) !== pw) throw new CliError("the passwords do not match");
  return pw;
}
