/**
 * A small deterministic tokenizer that stands in for a model's BPE tokenizer.
 *
 * It splits text roughly the way GPT-style pre-tokenizers do: a word (with its leading space) is one token, long
 * words are cut into chunks of {@link MAX_WORD_CHUNK} letters, numbers into groups of up to three digits, punctuation
 * into runs of up to four marks; every newline is a token, and so is any other run of whitespace. Chat-template
 * special tokens (`<|im_start|>`, `<|im_end|>`) are single tokens. Token ids are a stable hash of the token text, so
 * the same text always gives the same ids (which is what the prefix cache keys on).
 *
 * The one property the simulator relies on: every piece the reply generator emits is exactly one token here, so
 * `usage.completion_tokens` equals `POST /tokenize` of the reply text.
 */

/** Letters in one word token; longer words become several tokens, like BPE splitting rare words. */
export const MAX_WORD_CHUNK = 10;

export const IM_START = "<|im_start|>";
export const IM_END = "<|im_end|>";
const SPECIAL_IDS: Record<string, number> = { [IM_START]: 151644, [IM_END]: 151645 };

/** Size of the simulated vocabulary; ordinary token ids fall in [256, VOCAB_SIZE). */
const VOCAB_SIZE = 151_643;

// Order matters: special tokens first; a punctuation run stops before a special token so `.<|im_end|>` stays two
// tokens; each newline is a token; other whitespace runs leave their last space to the next word (the GPT-2
// `\s+(?!\S)` trick).
const TOKEN_RE = new RegExp(
  [
    "<\\|im_start\\|>",
    "<\\|im_end\\|>",
    ` ?\\p{L}{1,${MAX_WORD_CHUNK}}`,
    " ?\\p{N}{1,3}",
    " ?(?:(?!<\\|im_(?:start|end)\\|>)[^\\s\\p{L}\\p{N}]){1,4}",
    "\\n",
    "[^\\S\\n]+(?!\\S)",
    "[^\\S\\n]+",
  ].join("|"),
  "gu",
);

/** FNV-1a over UTF-16 code units: fast, stable, good enough spread for token ids and cache keys. */
export function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

const idCache = new Map<string, number>();
const ID_CACHE_LIMIT = 50_000;

/** The id of one token's text. */
export function tokenId(piece: string): number {
  const special = SPECIAL_IDS[piece];
  if (special !== undefined) return special;
  let id = idCache.get(piece);
  if (id === undefined) {
    id = 256 + (fnv1a(piece) % (VOCAB_SIZE - 256));
    if (idCache.size >= ID_CACHE_LIMIT) idCache.clear();
    idCache.set(piece, id);
  }
  return id;
}

/** Splits text into token strings. */
export function tokenizePieces(text: string): string[] {
  return text.match(TOKEN_RE) ?? [];
}

/** Splits text into token ids. */
export function tokenize(text: string): number[] {
  const pieces = tokenizePieces(text);
  const ids = new Array<number>(pieces.length);
  for (let i = 0; i < pieces.length; i++) ids[i] = tokenId(pieces[i]!);
  return ids;
}

/** Number of tokens in text. */
export function countTokens(text: string): number {
  let n = 0;
  TOKEN_RE.lastIndex = 0;
  while (TOKEN_RE.exec(text) !== null) n++;
  TOKEN_RE.lastIndex = 0;
  return n;
}

/** A chat message after validation: the role and the text content. */
export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * Renders messages with a ChatML template (the one Qwen and many fine-tunes use):
 * `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n` when a reply is wanted.
 * Prompt token counts are the token count of this text, so per-message template overhead is counted the same way
 * everywhere (/tokenize, usage, context-length checks).
 */
export function renderChatTemplate(messages: readonly ChatMessage[], addGenerationPrompt = true): string {
  let out = "";
  for (const m of messages) out += `${IM_START}${m.role}\n${m.content}${IM_END}\n`;
  if (addGenerationPrompt) out += `${IM_START}assistant\n`;
  return out;
}
