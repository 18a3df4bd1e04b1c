// Runs `luna` in-process with captured stdout/stderr, a scripted stdin and a Ctrl-C button.
import { PassThrough, Writable } from "node:stream";
import { run, type Io } from "../src/index.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface LiveCli {
  /** Feeds stdin (a line per call when it ends with \n). */
  type(text: string): void;
  /** Ends stdin (Ctrl-D). */
  end(): void;
  /** Presses Ctrl-C. */
  interrupt(): void;
  stdout(): string;
  stderr(): string;
  stdoutWrites(): string[];
  /** Resolves once stdout matches. */
  waitFor(pattern: RegExp | string, stream?: "stdout" | "stderr", timeoutMs?: number): Promise<void>;
  done: Promise<CliRun>;
}

class Capture extends Writable {
  text = "";
  /** Every write, in order: a reply streamed token by token shows up as many writes. */
  writes: string[] = [];
  watchers = new Set<() => void>();
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    this.writes.push(chunk.toString());
    for (const l of this.watchers) l();
    cb();
  }
}

/** Starts `luna <args>` and returns handles to drive it while it runs. */
export function startCli(args: string[], env: NodeJS.ProcessEnv, opts: { tty?: boolean } = {}): LiveCli {
  const stdin = new PassThrough();
  const stdout = new Capture();
  if (opts.tty) {
    // A terminal: keys arrive one by one in raw mode, and output is drawn (prompts, echo).
    Object.assign(stdin, { isTTY: true, setRawMode: () => stdin });
    Object.assign(stdout, { isTTY: true, columns: 100 });
  }
  const stderr = new Capture();
  const handlers = new Set<() => void>();
  const io: Io = {
    env,
    stdin,
    stdout,
    stderr,
    onInterrupt(h) {
      handlers.add(h);
      return () => void handlers.delete(h);
    },
  };
  const done = run(args, io).then((code) => ({ code, stdout: stdout.text, stderr: stderr.text }));
  return {
    type: (text) => void stdin.write(text),
    end: () => void stdin.end(),
    interrupt: () => {
      for (const h of [...handlers]) h();
    },
    stdout: () => stdout.text,
    stderr: () => stderr.text,
    stdoutWrites: () => [...stdout.writes],
    waitFor(pattern, stream = "stdout", timeoutMs = 20_000) {
      const cap = stream === "stdout" ? stdout : stderr;
      const matches = () => (typeof pattern === "string" ? cap.text.includes(pattern) : pattern.test(cap.text));
      return new Promise<void>((resolve, reject) => {
        if (matches()) return resolve();
        const timer = setTimeout(() => {
          cap.watchers.delete(check);
          reject(new Error(`timed out waiting for ${String(pattern)} on ${stream}; stdout:\n${stdout.text}\nstderr:\n${stderr.text}`));
        }, timeoutMs);
        const check = () => {
          if (!matches()) return;
          clearTimeout(timer);
          cap.watchers.delete(check);
          resolve();
        };
        cap.watchers.add(check);
      });
    },
    done,
  };
}

/** Runs `luna <args>` to the end with `stdin` as its input. */
export async function luna(args: string[], env: NodeJS.ProcessEnv, stdin = ""): Promise<CliRun> {
  const cli = startCli(args, env);
  cli.type(stdin);
  cli.end();
  return cli.done;
}
