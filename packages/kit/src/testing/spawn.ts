// A program of the monorepo as its own process, from its TypeScript sources (as `make dev-split` runs it): for tests
// that must kill a service or a worker for real.
import { spawn, type ChildProcess } from "node:child_process";

export interface SpawnProgramOptions {
  /** The program's main.ts (absolute, or relative to `cwd`). */
  main: string;
  /** The repository root: workspace packages resolve from there. */
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** A piece of the log line the program prints once it serves, e.g. "billing listening". */
  readyLine: string;
  /** Its name in the error when it exits before that line. */
  name: string;
  /** Called at once with the child, before it is ready: register it for clean-up, so a hung start is killed too. */
  onSpawn?: (child: ChildProcess) => void;
}

/** Starts the program and resolves once its stdout showed `readyLine`; rejects with its output if it exits first. */
export async function spawnProgram(opts: SpawnProgramOptions): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", opts.main],
    { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "pipe", "pipe"] });
  opts.onSpawn?.(child);
  let output = "";
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer) => {
      output += d.toString();
      if (output.includes(opts.readyLine)) {
        child.stdout!.off("data", onData);
        child.stdout!.resume();
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${opts.name} exited with ${code} before "${opts.readyLine}":\n${output}`)));
  });
  return child;
}
