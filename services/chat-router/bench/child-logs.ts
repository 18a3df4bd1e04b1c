// The benchmarks' platform child logs to stdout, which `make bench` copies into docs/PERFORMANCE.md. Lines a
// benchmark provokes on purpose (a simulated cold start answering 503) are counted and summarised in one line
// instead; anything else passes through unchanged.
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";

/** Copies `child`'s stdout (spawned with stdio "pipe") to ours, leaving out the lines `expected` accepts. */
export function filterChildLogs(child: ChildProcess, expected: (entry: { level?: string; msg?: string; [k: string]: unknown }) => boolean): { suppressed(): number } {
  let suppressed = 0;
  if (child.stdout) {
    createInterface({ input: child.stdout }).on("line", (line) => {
      let entry: { level?: string; msg?: string } | undefined;
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        entry = undefined;
      }
      if (entry && typeof entry === "object" && expected(entry)) suppressed++;
      else process.stdout.write(`${line}\n`);
    });
  }
  return { suppressed: () => suppressed };
}
