/**
 * Validation of OpenAI/vLLM request bodies into plain values, and vLLM's error shape. Unknown fields are ignored
 * (as vLLM does); known fields with a wrong type or range get a 400 naming the field.
 */
import type { ChatMessage } from "./tokenizer.js";

/** An error answered as vLLM does: `{"error": {message, type, param, code}}` with `code` = HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }

  body(): string {
    return JSON.stringify({ error: { message: this.message, type: this.type, param: this.param, code: this.status } });
  }
}

export function badRequest(message: string, param: string | null = null): ApiError {
  return new ApiError(400, message, "BadRequestError", param);
}

export function modelNotFound(model: string): ApiError {
  return new ApiError(404, `The model \`${model}\` does not exist.`, "NotFoundError", "model");
}

/** The sampling and streaming fields shared by chat and text completions. */
export interface SamplingParams {
  /** Requested output limit; undefined means "up to the context window" (chat) — completions default to 16. */
  maxTokens: number | undefined;
  minTokens: number;
  temperature: number;
  seed: number | undefined;
  stop: string[];
  includeStopStrInOutput: boolean;
  ignoreEos: boolean;
  stream: boolean;
  includeUsage: boolean;
}

export interface ChatRequest extends SamplingParams {
  model: string | undefined;
  messages: ChatMessage[];
}

export interface CompletionRequest extends SamplingParams {
  model: string | undefined;
  /** Text, or token ids given directly. */
  prompt: string | number[];
}

export interface TokenizeRequest {
  model: string | undefined;
  /** Text to tokenize as is, or messages to render with the chat template first. */
  prompt?: string;
  messages?: ChatMessage[];
  addGenerationPrompt: boolean;
  returnTokenStrs: boolean;
}

type Body = Record<string, unknown>;

/** Parses a JSON body that must be an object. */
export function parseJsonObject(raw: string): Body {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw badRequest(`Invalid JSON body: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest("Request body must be a JSON object");
  }
  return value as Body;
}

function isNullish(v: unknown): v is null | undefined {
  return v === undefined || v === null;
}

function optInt(body: Body, field: string, min: number): number | undefined {
  const v = body[field];
  if (isNullish(v)) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw badRequest(`${field} must be an integer`, field);
  if (v < min) throw badRequest(`${field} must be at least ${min}, got ${v}.`, field);
  return v;
}

function optNumber(body: Body, field: string): number | undefined {
  const v = body[field];
  if (isNullish(v)) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw badRequest(`${field} must be a number`, field);
  return v;
}

function optBool(body: Body, field: string): boolean | undefined {
  const v = body[field];
  if (isNullish(v)) return undefined;
  if (typeof v !== "boolean") throw badRequest(`${field} must be a boolean`, field);
  return v;
}

function optModel(body: Body): string | undefined {
  const v = body.model;
  if (isNullish(v)) return undefined;
  if (typeof v !== "string") throw badRequest("model must be a string", "model");
  return v;
}

function parseSampling(body: Body, defaultMaxTokens: number | undefined): SamplingParams {
  // max_completion_tokens is the newer OpenAI name; vLLM takes either and prefers it.
  const maxTokens = optInt(body, "max_completion_tokens", 1) ?? optInt(body, "max_tokens", 1) ?? defaultMaxTokens;
  const minTokens = optInt(body, "min_tokens", 0) ?? 0;
  if (maxTokens !== undefined && minTokens > maxTokens) {
    throw badRequest(`min_tokens must be less than or equal to max_tokens=${maxTokens}, got ${minTokens}.`,
      "min_tokens");
  }
  const temperature = optNumber(body, "temperature") ?? 1;
  if (temperature < 0) throw badRequest(`temperature must be non-negative, got ${temperature}.`, "temperature");
  const topP = optNumber(body, "top_p");
  if (topP !== undefined && (topP <= 0 || topP > 1)) throw badRequest(`top_p must be in (0, 1], got ${topP}.`, "top_p");
  const n = optInt(body, "n", 1) ?? 1;
  if (n !== 1) throw badRequest("n > 1 is not supported by the simulator", "n");
  const seed = optInt(body, "seed", Number.MIN_SAFE_INTEGER);

  let stop: string[] = [];
  const rawStop = body.stop;
  if (typeof rawStop === "string") stop = [rawStop];
  else if (Array.isArray(rawStop)) {
    if (!rawStop.every((s) => typeof s === "string")) throw badRequest("stop must be a string or a list of strings", "stop");
    stop = rawStop as string[];
  } else if (!isNullish(rawStop)) throw badRequest("stop must be a string or a list of strings", "stop");
  stop = stop.filter((s) => s.length > 0);

  const stream = optBool(body, "stream") ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (!isNullish(so)) {
    if (!stream) throw badRequest("Stream options can only be defined when `stream=True`.", "stream_options");
    if (typeof so !== "object" || Array.isArray(so)) throw badRequest("stream_options must be an object", "stream_options");
    const iu = (so as Body).include_usage;
    if (!isNullish(iu) && typeof iu !== "boolean") {
      throw badRequest("stream_options.include_usage must be a boolean", "stream_options");
    }
    includeUsage = iu === true;
  }
  return {
    maxTokens,
    minTokens,
    temperature,
    seed,
    stop,
    includeStopStrInOutput: optBool(body, "include_stop_str_in_output") ?? false,
    ignoreEos: optBool(body, "ignore_eos") ?? false,
    stream,
    includeUsage,
  };
}

function parseMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v)) throw badRequest("messages must be a list of messages", "messages");
  if (v.length === 0) throw badRequest("messages must not be empty", "messages");
  return v.map((m: unknown, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) throw badRequest(`${where} must be an object`, where);
    const { role, content } = m as Body;
    if (typeof role !== "string" || role.length === 0) throw badRequest(`${where}.role must be a string`, `${where}.role`);
    if (isNullish(content)) return { role, content: "" };
    if (typeof content === "string") return { role, content };
    if (!Array.isArray(content)) {
      throw badRequest(`${where}.content must be a string or a list of content parts`, `${where}.content`);
    }
    const texts = content.map((part: unknown, j) => {
      const p = part as Body | null;
      if (typeof p !== "object" || p === null) throw badRequest(`${where}.content[${j}] must be an object`, `${where}.content`);
      if (p.type !== "text") {
        throw badRequest(`${where}.content[${j}]: content part type ${JSON.stringify(p.type)} is not supported by the ` +
          `simulator (text only)`, `${where}.content`);
      }
      if (typeof p.text !== "string") throw badRequest(`${where}.content[${j}].text must be a string`, `${where}.content`);
      return p.text;
    });
    // vLLM joins text parts with newlines before applying the chat template.
    return { role, content: texts.join("\n") };
  });
}

export function parseChatRequest(body: Body): ChatRequest {
  const model = optModel(body);
  const messages = parseMessages(body.messages);
  return { model, messages, ...parseSampling(body, undefined) };
}

function isTokenIds(v: unknown): v is number[] {
  return Array.isArray(v) && v.length > 0 && v.every((t) => typeof t === "number" && Number.isSafeInteger(t) && t >= 0);
}

export function parseCompletionRequest(body: Body): CompletionRequest {
  const model = optModel(body);
  let prompt: string | number[];
  const p = body.prompt;
  if (typeof p === "string") prompt = p;
  else if (isTokenIds(p)) prompt = p;
  else if (Array.isArray(p) && p.length === 1 && (typeof p[0] === "string" || isTokenIds(p[0]))) prompt = p[0] as string | number[];
  else if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === "string" || Array.isArray(x))) {
    throw badRequest("batched prompts are not supported by the simulator; send one prompt per request", "prompt");
  } else {
    throw badRequest("prompt must be a string, a list of token ids, or a list with one of either", "prompt");
  }
  if (prompt.length === 0) throw badRequest("Prompt cannot be empty", "prompt");
  if (optBool(body, "echo")) throw badRequest("echo is not supported by the simulator", "echo");
  // The OpenAI completions API (and vLLM) default max_tokens to 16.
  return { model, prompt, ...parseSampling(body, 16) };
}

export function parseTokenizeRequest(body: Body): TokenizeRequest {
  const model = optModel(body);
  const returnTokenStrs = optBool(body, "return_token_strs") ?? false;
  if (!isNullish(body.messages)) {
    return { model, messages: parseMessages(body.messages),
      addGenerationPrompt: optBool(body, "add_generation_prompt") ?? true, returnTokenStrs };
  }
  if (typeof body.prompt !== "string") throw badRequest("either prompt (a string) or messages is required", "prompt");
  return { model, prompt: body.prompt, addGenerationPrompt: false, returnTokenStrs };
}
