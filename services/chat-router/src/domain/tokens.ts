// Token arithmetic for prompts: what a message costs as history, and the conservative estimate used when the
// upstream cannot count (no /tokenize, or it failed).

/** Tokens of `text` estimated from its UTF-8 size; errs high (real tokenizers average ~4 bytes per token in English). */
export function estimateTokens(text: string, bytesPerToken: number): number {
  if (text.length === 0) return 0;
  return Math.ceil(Buffer.byteLength(text, "utf8") / bytesPerToken);
}

/**
 * At least as many tokens as any tokenizer makes of `text`: every token covers at least one UTF-8 byte, plus one for
 * a SentencePiece word-start marker standing alone. The speculative reserve's basis for a message not counted yet.
 */
export function tokenUpperBound(text: string): number {
  return text.length === 0 ? 0 : Buffer.byteLength(text, "utf8") + 1;
}

/** How the chat template's fixed costs are counted on top of the content tokens. */
export interface TemplateOverhead {
  /** Per message (role markers). */
  perMessage: number;
  /** Once per prompt (BOS, the generation prompt). */
  perPrompt: number;
}
