// Building the prompt sent to the model: the system prompt, then the newest history that fits the context window
// minus the reply's budget. Whole turns (a user message with its reply) are dropped oldest first, so a message is
// never cut and the history always starts with a user message (some chat templates reject anything else).
import type { TemplateOverhead } from "./tokens.js";

export type Role = "user" | "assistant";

/** A message of the history with its content's token count. */
export interface HistoryMessage {
  role: Role;
  content: string;
  /** Content tokens (without template overhead). */
  tokens: number;
}

export interface PromptInput {
  systemPrompt: string;
  systemTokens: number;
  /** Oldest first; the last one is the new user message. */
  history: HistoryMessage[];
  contextWindow: number;
  /** The most the reply may use: min(requested or the model's maximum, the model's maximum). */
  maxOutputTokens: number;
  /** The smallest reply worth generating. */
  minOutputTokens: number;
  overhead: TemplateOverhead;
}

export interface ChatMessage {
  role: "system" | Role;
  content: string;
}

export type PromptResult =
  | {
      ok: true;
      messages: ChatMessage[];
      /** Our (conservative) count of the prompt's tokens. */
      promptTokens: number;
      /** The reply's token budget: maxOutputTokens, lowered if the newest message leaves less room. */
      outputTokens: number;
      /** History messages left out (oldest). */
      dropped: number;
    }
  | {
      ok: false;
      /** The system prompt and the new message alone, with the smallest reply, exceed the context window. */
      reason: "message_too_long";
      requiredTokens: number;
      contextWindow: number;
    };

/** Fits the history into the context window; see the module comment. */
export function buildPrompt(input: PromptInput): PromptResult {
  const { history, overhead } = input;
  const last = history[history.length - 1];
  if (!last || last.role !== "user") throw new Error("buildPrompt: the history must end with the new user message");
  const cost = (m: { tokens: number }) => m.tokens + overhead.perMessage;
  const fixed = overhead.perPrompt + (input.systemPrompt ? input.systemTokens + overhead.perMessage : 0) + cost(last);

  const room = input.contextWindow - fixed;
  if (room < input.minOutputTokens) {
    return { ok: false, reason: "message_too_long", requiredTokens: fixed + input.minOutputTokens, contextWindow: input.contextWindow };
  }
  const outputTokens = Math.min(input.maxOutputTokens, room);
  let budget = room - outputTokens;

  // Walk back over whole turns: a turn starts at a user message and runs to the message before the next turn.
  let start = history.length - 1;
  let i = history.length - 2;
  while (i >= 0) {
    let turnStart = i;
    while (turnStart > 0 && history[turnStart]!.role !== "user") turnStart--;
    let turnCost = 0;
    for (let j = turnStart; j <= i; j++) turnCost += cost(history[j]!);
    // A leading run of replies without a user message (history cut elsewhere) is never sent on its own.
    if (history[turnStart]!.role !== "user" || turnCost > budget) break;
    budget -= turnCost;
    start = turnStart;
    i = turnStart - 1;
  }

  const messages: ChatMessage[] = [];
  if (input.systemPrompt) messages.push({ role: "system", content: input.systemPrompt });
  let promptTokens = fixed;
  for (let j = start; j < history.length; j++) {
    const m = history[j]!;
    messages.push({ role: m.role, content: m.content });
    if (j < history.length - 1) promptTokens += cost(m);
  }
  return { ok: true, messages, promptTokens, outputTokens, dropped: start };
}
