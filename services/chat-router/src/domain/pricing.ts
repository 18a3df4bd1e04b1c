// Credits for a reply. Prices are whole credits per 1k tokens (model registry); a reply costs
// ceil((prompt × input price + completion × output price) / 1000), so partial thousands are rounded up once.
import { availableCreditsOf } from "@luna/kit";

export interface TokenPrices {
  inputPer1k: bigint;
  outputPer1k: bigint;
}

/** Credits for `promptTokens` in and `completionTokens` out. */
export function replyCost(prices: TokenPrices, promptTokens: number, completionTokens: number): bigint {
  const milli = BigInt(promptTokens) * prices.inputPer1k + BigInt(completionTokens) * prices.outputPer1k;
  return milli <= 0n ? 0n : (milli + 999n) / 1000n;
}

/**
 * The most output tokens `available` credits pay for with this prompt (at most `cap`); negative when not even the
 * prompt is affordable.
 */
export function affordableOutputTokens(prices: TokenPrices, available: bigint, promptTokens: number, cap: number): number {
  const budgetMilli = available * 1000n - BigInt(promptTokens) * prices.inputPer1k;
  if (budgetMilli < 0n) return -1;
  if (prices.outputPer1k <= 0n) return cap;
  const n = budgetMilli / prices.outputPer1k;
  return n > BigInt(cap) ? cap : Number(n);
}

/** Parses the available credits out of billing's RESOURCE_EXHAUSTED message (the kit's wording, "..., 42 available"). */
export function availableFromReserveError(message: string): bigint | undefined {
  return availableCreditsOf(message);
}
