// Plain-text output helpers: aligned tables, dates and credits.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table(header: string[], rows: string[][]): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => [...(r[i] ?? "")].length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ").trimEnd());
}

/** "2025-01-31 14:05" in local time; "-" when unset. */
export function dateTime(ts: Timestamp | undefined): string {
  if (!ts) return "-";
  const d = timestampDate(ts);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** "1,000" for a bigint or number of credits. */
export function credits(n: bigint | number): string {
  return n.toLocaleString("en-US");
}

/** "1 credit", "2 credits", "1,000 tokens". */
export function count(n: bigint | number, noun: string): string {
  return `${credits(n)} ${noun}${Number(n) === 1 ? "" : "s"}`;
}

/** Signed credits: "+1,000", "-12", "0". */
export function signedCredits(n: bigint): string {
  return n > 0n ? `+${credits(n)}` : credits(n);
}

/** Lower-case name of a generated enum value: (ModelStatus, 1) → "available". */
export function enumLabel(enumObject: object, value: number): string {
  const name = (enumObject as Record<number, string | undefined>)[value];
  return name ? name.toLowerCase().replace(/_/g, " ") : String(value);
}

/** Truncates to `max` characters with an ellipsis. */
export function clip(text: string, max: number): string {
  const chars = [...text.replace(/\s+/g, " ")];
  return chars.length <= max ? chars.join("") : `${chars.slice(0, max - 1).join("")}…`;
}

/**
 * "about 42 s" for what is left of an expected wait, or "any moment now" once it has run over (scale to zero: the
 * model or image pool is waking).
 */
export function aboutSeconds(remainingMs: number): string {
  return remainingMs > 0 ? `about ${Math.ceil(remainingMs / 1000)} s` : "any moment now";
}

/** What a reply waiting for its model to wake from zero replicas shows: "warming up llama-3 (about 42 s)". */
export function warmingUp(modelId: string, elapsedMs: number, expectedWaitMs: number): string {
  return `warming up ${modelId} (${aboutSeconds(expectedWaitMs - elapsedMs)})`;
}
