import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const RUN_PREFIX = "luna-test-";
const OWNER_FILE = "owner.pid";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A fresh temporary folder that others may traverse (not list): Postgres runs as an unprivileged user when tests
 * run as root and must reach its data dir inside.
 */
export function makeTempDir(parent: string, prefix: string): string {
  const dir = mkdtempSync(join(parent, prefix));
  chmodSync(dir, 0o711);
  return dir;
}

/** The per-run root folder, recording its owner pid so a later run can remove it if this run is killed. */
export function makeRunRoot(): string {
  const dir = makeTempDir(tmpdir(), RUN_PREFIX);
  writeFileSync(join(dir, OWNER_FILE), String(process.pid));
  return dir;
}

/** Removes run folders left behind by runs that were killed before their teardown. */
export function removeStaleRunRoots(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((name) => name.startsWith(RUN_PREFIX));
  } catch {
    return;
  }
  for (const name of entries) {
    const dir = join(tmpdir(), name);
    try {
      const owner = Number(readFileSync(join(dir, OWNER_FILE), "utf8"));
      if (Number.isInteger(owner) && owner > 0 && !alive(owner)) rmSync(dir, { recursive: true, force: true });
    } catch {
      // no owner file (being created right now, or not ours): leave it
    }
  }
}
