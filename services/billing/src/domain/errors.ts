/**
 * Domain errors of the ledger. They carry what the caller needs to know and map one-to-one onto Connect codes at
 * the RPC boundary (server/errors.ts), so the domain and data layers stay free of transport types.
 */
import { notEnoughCreditsMessage } from "@luna/kit";

export type BillingErrorKind =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted";

export class BillingError extends Error {
  override readonly name = "BillingError";
  constructor(
    readonly kind: BillingErrorKind,
    message: string,
    /** The request field at fault (invalid_argument only). */
    readonly field?: string,
  ) {
    super(message);
  }
}

export const invalid = (field: string, message: string): BillingError =>
  new BillingError("invalid_argument", message, field);

/** `what` is e.g. `hold "…"`; the message reads `hold "…" not found`. */
export const notFound = (what: string): BillingError => new BillingError("not_found", `${what} not found`);

export const precondition = (message: string): BillingError => new BillingError("failed_precondition", message);

/** Not enough available credits; the message always states how many are available. */
export class InsufficientCreditsError extends BillingError {
  constructor(
    readonly requested: bigint,
    readonly available: bigint,
  ) {
    super("resource_exhausted", notEnoughCreditsMessage("the request", requested, available));
  }
}
