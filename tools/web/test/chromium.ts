// Finds a Chromium for the browser test, installing Debian's package when it is missing and we may (Debian or
// Ubuntu, running as root). Otherwise the test is skipped with a message naming what to install.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";

/** Debian's Chromium; LUNA_CHROMIUM overrides it. */
export const DEFAULT_CHROMIUM = "/usr/bin/chromium";

export type ChromiumLookup = { path: string } | { skip: string };

function works(path: string): boolean {
  if (!existsSync(path)) return false;
  const r = spawnSync(path, ["--headless", "--no-sandbox", "--version"], { encoding: "utf8", timeout: 30_000 });
  return r.status === 0 && /chrom/i.test(r.stdout);
}

function isDebianLike(): boolean {
  try {
    return /^(ID|ID_LIKE)=.*\b(debian|ubuntu)\b/m.test(readFileSync("/etc/os-release", "utf8"));
  } catch {
    return false;
  }
}

/** A working Chromium, or why the browser test cannot run here. `log` reports installation progress. */
export function ensureChromium(log: (line: string) => void = () => {}): ChromiumLookup {
  const wanted = process.env.LUNA_CHROMIUM || DEFAULT_CHROMIUM;
  if (works(wanted)) return { path: wanted };
  const howto = "install Chromium (Debian/Ubuntu: `sudo apt-get install -y chromium`) or set LUNA_CHROMIUM to a Chromium/Chrome binary";
  if (process.env.LUNA_CHROMIUM) return { skip: `LUNA_CHROMIUM=${wanted} does not run; ${howto}` };
  if (process.platform !== "linux" || !isDebianLike()) return { skip: `no Chromium at ${wanted}: ${howto}` };
  if (process.getuid?.() !== 0) return { skip: `no Chromium at ${wanted} and not root, so it cannot be installed here: ${howto}` };
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  try {
    log("installing chromium with apt-get (once; this takes a minute)");
    execFileSync("apt-get", ["update", "-qq"], { env, stdio: "ignore", timeout: 300_000 });
    execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium"], { env, stdio: "ignore", timeout: 600_000 });
  } catch (err) {
    return { skip: `apt-get could not install chromium (${err instanceof Error ? err.message.split("\n")[0] : String(err)}); ${howto}` };
  }
  return works(wanted) ? { path: wanted } : { skip: `chromium was installed but ${wanted} does not run; ${howto}` };
}

/** Flags for Chromium in a container: headless, no sandbox (root), nothing reaching out to the network. */
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
