/**
 * The ledger talks to Postgres through this narrow interface (a pg Pool fits it). The money statements are single
 * SQL statements — each one atomic on its own — so they need no interactive transaction and cost one round trip.
 */
export interface Sql {
  query<R extends object = Record<string, unknown>>(
    text: string | NamedStatement,
    values?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
}

/** A statement Postgres parses and plans once per connection (the hot path runs the same few statements). */
export interface NamedStatement {
  name: string;
  text: string;
}

export const named = (name: string, text: string): NamedStatement => ({ name, text });

/** Postgres error codes the ledger reacts to. */
export const PG_UNIQUE_VIOLATION = "23505";

export function pgCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err && typeof (err as { code: unknown }).code === "string"
    ? (err as { code: string }).code
    : undefined;
}

export function pgConstraint(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "constraint" in err
    ? String((err as { constraint: unknown }).constraint)
    : undefined;
}

/** A timestamptz expression as microseconds since the epoch (exact: extract() returns numeric). */
export const micros = (expr: string): string => `(extract(epoch from ${expr}) * 1000000)::bigint`;

export const big = (v: unknown): bigint => (v === null || v === undefined ? 0n : BigInt(v as string | number | bigint));
export const bigOrNull = (v: unknown): bigint | null => (v === null || v === undefined ? null : BigInt(v as string));
