/**
 * Deterministic "model output": English-looking sentences built from a small word list.
 *
 * Every piece {@link ReplyGenerator.next} returns is exactly one token of the simulator's tokenizer (words are at
 * most {@link MAX_WORD_CHUNK} letters, punctuation is emitted one mark at a time, newlines one at a time), so the
 * number of pieces generated is the completion token count.
 */
import { MAX_WORD_CHUNK, fnv1a } from "./tokenizer.js";

/** mulberry32: a tiny, fast, seedable PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seed for a reply: the same model, prompt and request seed always give the same text. */
export function replySeed(model: string, prompt: string, seed: number | undefined): number {
  return fnv1a(prompt, fnv1a(model, seed === undefined ? 0x9e3779b9 : (seed ^ 0x5bd1e995) >>> 0));
}

const DET = ["the", "a", "this", "that", "every", "each", "one", "our", "your", "some"];
const ADJ = [
  "quiet", "bright", "small", "large", "quick", "careful", "simple", "strange", "gentle", "ancient", "modern",
  "hidden", "open", "steady", "silver", "golden", "distant", "local", "curious", "patient", "clever", "narrow",
  "warm", "cold", "early", "late", "final", "useful", "honest", "rapid", "vivid", "rough", "smooth", "clear",
];
const NOUN = [
  "river", "garden", "engine", "window", "story", "signal", "city", "forest", "mountain", "machine", "question",
  "answer", "system", "planet", "library", "market", "bridge", "village", "journey", "lantern", "harbor", "model",
  "theory", "pattern", "network", "kitchen", "painter", "teacher", "student", "traveler", "message", "circle",
  "morning", "evening", "ocean", "island", "valley", "letter", "record", "problem", "result", "method", "idea",
  "moment", "detail", "reason", "picture", "voice", "memory", "season",
];
const VERB = [
  "finds", "builds", "follows", "carries", "explains", "changes", "reaches", "holds", "opens", "answers", "shapes",
  "watches", "measures", "improves", "describes", "connects", "remembers", "supports", "reveals", "crosses",
  "guides", "moves", "keeps", "sends", "reads", "writes", "learns", "shows", "tests", "turns",
];
const ADV = ["slowly", "quietly", "often", "rarely", "always", "clearly", "gently", "simply", "nearly", "again"];
const PREP = ["near", "beyond", "under", "across", "inside", "around", "through", "behind", "beside", "toward"];
const CONJ = ["and", "but", "while", "because", "so"];

for (const w of [...DET, ...ADJ, ...NOUN, ...VERB, ...ADV, ...PREP, ...CONJ]) {
  if (w.length > MAX_WORD_CHUNK || !/^[a-z]+$/.test(w)) throw new Error(`word list entry "${w}" is not one token`);
}

/**
 * Produces reply tokens one at a time. The reply is an endless stream of sentences (paragraph breaks now and then);
 * the caller decides where it ends, preferably at a sentence end (see {@link next}'s `endsSentence`).
 */
export class ReplyGenerator {
  private readonly rand: () => number;
  private readonly queue: string[] = [];
  private atStart = true;
  private sentencesInParagraph = 0;

  constructor(seed: number) {
    this.rand = mulberry32(seed);
  }

  /** The next token's text and whether it closes a sentence (a natural place for the reply to stop). */
  next(): { piece: string; endsSentence: boolean } {
    if (this.queue.length === 0) this.fillSentence();
    const piece = this.queue.shift()!;
    return { piece, endsSentence: piece === "." || piece === "!" || piece === "?" };
  }

  private pick<T>(list: readonly T[]): T {
    return list[Math.floor(this.rand() * list.length)]!;
  }

  private nounPhrase(): string[] {
    const words = [this.pick(DET)];
    if (this.rand() < 0.6) words.push(this.pick(ADJ));
    words.push(this.pick(NOUN));
    return words;
  }

  private clause(): string[] {
    const words = this.nounPhrase();
    if (this.rand() < 0.25) words.push(this.pick(ADV));
    words.push(this.pick(VERB), ...this.nounPhrase());
    if (this.rand() < 0.4) words.push(this.pick(PREP), ...this.nounPhrase());
    return words;
  }

  /** Queues one sentence: words with leading spaces, an optional comma-joined second clause, a closing mark. */
  private fillSentence(): void {
    const q = this.queue;
    if (!this.atStart && this.sentencesInParagraph >= 3 && this.rand() < 0.3) {
      q.push("\n", "\n");
      this.sentencesInParagraph = 0;
    }
    const afterBreak = this.atStart || this.sentencesInParagraph === 0;
    const words = this.clause();
    let commaAt = -1;
    if (this.rand() < 0.35) {
      commaAt = words.length;
      words.push(this.pick(CONJ), ...this.clause());
    }
    for (let i = 0; i < words.length; i++) {
      let w = words[i]!;
      if (i === 0) w = w[0]!.toUpperCase() + w.slice(1);
      if (i === commaAt) q.push(",");
      q.push(i === 0 && afterBreak ? w : ` ${w}`);
    }
    const r = this.rand();
    q.push(r < 0.85 ? "." : r < 0.93 ? "!" : "?");
    this.atStart = false;
    this.sentencesInParagraph++;
  }
}
