/**
 * The simulated PromptServer + PromptQueue + PromptExecutor: accepts prompts, runs them one at a time in queue order,
 * emits ComfyUI's websocket messages in ComfyUI's order, keeps the history, and injects faults. Transport-agnostic:
 * the HTTP/websocket layer (`server.ts`) calls in and receives messages through an {@link Outbox}.
 */
import { createHash, randomUUID } from "node:crypto";
import type { Catalog } from "./catalog.js";
import { ImageStore, OutsideOutputError, type ImageRef } from "./images.js";
import { EXECUTORS, NodeError, type NodeContext, type NodeResult, type SampledValue, imageKey } from "./nodes.js";
import { checkFaults, type ResolvedOptions, type SimFaults, type SimStats, type SimTiming } from "./options.js";
import { PREVIEW_COMPRESSION_LEVEL, renderPng } from "./png.js";
import { dict, validatePrompt, type ErrorInfo, type NodeErrors, type Prompt, type PromptNode } from "./validate.js";

/** Where the engine's websocket messages go. `sid` null means every connected client. */
export interface Outbox {
  sendJson(event: string, data: Record<string, unknown>, sid: string | null): void;
  sendBinary(frame: Buffer, sid: string | null): void;
}

/** ComfyUI's queue tuple: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`. */
export type QueueTuple = [number, string, Prompt, Record<string, unknown>, string[]];

export type StatusMessage = [string, Record<string, unknown>];

export interface HistoryEntry {
  prompt: QueueTuple;
  outputs: Record<string, { images: ImageRef[] }>;
  status: { status_str: "success" | "error"; completed: boolean; messages: StatusMessage[] };
  meta: Record<string, { node_id: string; display_node: string; parent_node: null; real_node_id: string }>;
}

interface QueueItem {
  tuple: QueueTuple;
  seq: number;
}

/** A JSON reply: status code and body. */
export interface Reply {
  status: number;
  body: unknown;
}

/** Binary websocket event type of a preview image, and its image format codes. */
export const BINARY_PREVIEW_IMAGE = 1;
export const PREVIEW_FORMAT_JPEG = 1;
export const PREVIEW_FORMAT_PNG = 2;

/** Link depth beyond which cache keys stop following links (only unvalidated, unreachable nodes get that deep). */
const MAX_SIGNATURE_DEPTH = 1000;

/** Longest client prompt_id accepted; longer ones are surely a bug on the client's side. */
const MAX_PROMPT_ID_LENGTH = 256;

/** Thrown inside an execution when it must stop: interrupted by a client, or the server crashed/closed. */
class Interrupted extends Error {
  constructor(readonly nodeId: string) {
    super("interrupted");
  }
}
class Aborted extends Error {}

/** A Python-looking traceback (ComfyUI sends `traceback.format_tb` lines); clients only display it. */
function traceback(nodeType: string, message: string): string[] {
  return [
    '  File "/comfyui/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all)\n',
    `  File "/comfyui/nodes.py", in ${nodeType}\n    ${message.split("\n")[0]}\n`,
  ];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** mulberry32: a tiny seeded PRNG, so `failRate` runs are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function emptyStats(): SimStats {
  return {
    executions: dict(), imagesByPrompt: dict(), queued: 0, rejected: 0, succeeded: 0, failed: 0, interrupted: 0, lost: 0,
    imagesGenerated: 0, restarts: 0, wsConnections: 0,
  };
}

function badRequest(message: string, details = "", type = "invalid_prompt"): Reply {
  return { status: 400, body: { error: { type, message, details, extra_info: {} }, node_errors: {} } };
}

export class Engine {
  readonly images: ImageStore;
  private queue: QueueItem[] = [];
  private running: QueueTuple | null = null;
  private history = new Map<string, HistoryEntry>();
  private cache = new Map<string, NodeResult>();
  private number = 0;
  private seq = 0;
  /** Bumped by a crash/close: an execution from an older epoch stops at its next check. */
  private epoch = 0;
  private interruptRequested = false;
  private currentClient: string | null = null;
  private lastNodeId: string | null = null;
  private started = 0;
  private rng: () => number;
  private faultSet: SimFaults;
  private timingSet: SimTiming;
  private statistics = emptyStats();
  /** Messages sent for the running prompt, and whether its client has gone silent (wsSilentAfter). */
  private promptMessages = 0;
  private silenced = false;
  private sleepers = new Set<() => void>();
  private stopped = false;

  constructor(
    private readonly opts: ResolvedOptions,
    private readonly catalog: Catalog,
    private readonly outbox: Outbox,
    /** Called when an injected crash fires; the server drops connections and comes back after `downMs`. */
    private readonly onCrash: (downMs: number) => void,
  ) {
    this.images = new ImageStore(opts.maxImages);
    this.timingSet = { stepMs: opts.stepMs, nodeMs: opts.nodeMs };
    this.faultSet = opts.faults;
    this.rng = prng(opts.faultSeed);
  }

  // ---------------------------------------------------------------- control

  get faults(): SimFaults {
    return structuredClone(this.faultSet);
  }

  /** Replaces the active faults (validated; throws RangeError on a bad field). */
  setFaults(f: unknown): void {
    this.faultSet = checkFaults(f);
  }

  get timing(): SimTiming {
    return { ...this.timingSet };
  }

  /** Changes the time per sampler step and per other node for prompts from now on (the one running included). */
  setTiming(t: Partial<SimTiming>): void {
    for (const [k, v] of Object.entries(t)) {
      if (k !== "stepMs" && k !== "nodeMs") throw new RangeError(`unknown timing field ${k}`);
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new RangeError(`${k} must be a non-negative number, got ${String(v)}`);
    }
    this.timingSet = { ...this.timingSet, ...t };
  }

  stats(): SimStats {
    return structuredClone(this.statistics);
  }

  /** A POST /prompt the HTTP layer refused before it reached the engine (unparsable body). */
  countRejected(): void {
    this.statistics.rejected++;
  }

  countConnection(): void {
    this.statistics.wsConnections++;
  }

  /** Back to a fresh simulator: empty queue, history, images, cache and stats; startup faults. */
  reset(): void {
    this.dropState();
    this.history.clear();
    this.images.clear();
    this.statistics = emptyStats();
    this.started = 0;
    this.faultSet = this.opts.faults;
    this.timingSet = { stepMs: this.opts.stepMs, nodeMs: this.opts.nodeMs };
    this.rng = prng(this.opts.faultSeed);
  }

  /**
   * What a real restart does to the server's memory: the queue and the running prompt are gone (the running one never
   * reaches the history), the history too unless `keepHistoryOnRestart`; output files stay, temp files are wiped.
   */
  crashState(): void {
    if (this.running) this.statistics.lost++;
    this.dropState();
    if (!this.opts.keepHistoryOnRestart) this.history.clear();
    this.images.clearTemp();
    this.statistics.restarts++;
  }

  /** Stops for good: the running execution ends at its next check. */
  stop(): void {
    this.stopped = true;
    this.dropState();
  }

  private dropState(): void {
    this.epoch++;
    this.queue = [];
    this.running = null;
    this.cache.clear();
    this.number = 0;
    this.interruptRequested = false;
    this.currentClient = null;
    this.lastNodeId = null;
    this.promptMessages = 0;
    this.silenced = false;
    for (const wake of [...this.sleepers]) wake();
  }

  // ---------------------------------------------------------------- HTTP-facing API

  /** `GET /prompt` and the `status` message: `{exec_info: {queue_remaining}}`. */
  queueInfo(): { exec_info: { queue_remaining: number } } {
    return { exec_info: { queue_remaining: this.queue.length + (this.running ? 1 : 0) } };
  }

  /** Messages for a websocket that just connected (unless the websocket is silenced). */
  greet(sid: string): void {
    this.emit("status", { status: this.queueInfo(), sid }, sid, false);
    if (this.currentClient === sid && this.lastNodeId !== null) {
      this.emit("executing", { node: this.lastNodeId }, sid, false);
    }
  }

  /** `POST /prompt`. */
  submit(body: unknown): Reply {
    const reply = this.submitInner(body);
    if (reply.status === 200) this.statistics.queued++;
    else this.statistics.rejected++;
    return reply;
  }

  private submitInner(body: unknown): Reply {
    if (!isObject(body)) return badRequest("Invalid request body: expected a JSON object");
    let number: number;
    if (Object.hasOwn(body, "number")) {
      number = typeof body.number === "string" ? Number(body.number) : (body.number as number);
      if (typeof number !== "number" || !Number.isFinite(number)) return badRequest("Invalid number: must be a number", String(body.number));
    } else {
      number = this.number;
      if (body.front === true) number = -number;
      this.number++;
    }
    if (!Object.hasOwn(body, "prompt")) {
      return { status: 400, body: { error: { type: "no_prompt", message: "No prompt provided", details: "No prompt provided", extra_info: {} }, node_errors: {} } };
    }
    let promptId: string;
    if (body.prompt_id !== undefined && body.prompt_id !== null) {
      if (typeof body.prompt_id !== "string" && typeof body.prompt_id !== "number") return badRequest("Invalid prompt_id: must be a string");
      promptId = String(body.prompt_id);
      if (promptId === "" || promptId.length > MAX_PROMPT_ID_LENGTH) {
        return badRequest(`Invalid prompt_id: must be 1–${MAX_PROMPT_ID_LENGTH} characters`);
      }
    } else {
      promptId = randomUUID();
    }
    let extraData: Record<string, unknown> = {};
    if (body.extra_data !== undefined) {
      if (!isObject(body.extra_data)) return badRequest("Invalid extra_data: must be an object");
      extraData = structuredClone(body.extra_data);
    }
    if (body.client_id !== undefined) extraData.client_id = body.client_id;

    const valid = validatePrompt(body.prompt, this.catalog);
    if (!valid.ok) {
      this.opts.log(`invalid prompt: ${valid.error.message}`);
      return { status: 400, body: { error: valid.error, node_errors: valid.nodeErrors } };
    }
    // Real ComfyUI would queue a second copy (and its worker asserts on running ids); the simulator refuses instead.
    if (this.running?.[1] === promptId || this.queue.some((q) => q.tuple[1] === promptId)) {
      return badRequest(`Prompt ${promptId} is already queued or running`, promptId, "duplicate_prompt_id");
    }
    extraData.create_time = Date.now();
    const tuple: QueueTuple = [number, promptId, valid.prompt, extraData, valid.outputs];
    this.queue.push({ tuple, seq: this.seq++ });
    this.queue.sort((a, b) => a.tuple[0] - b.tuple[0] || a.seq - b.seq);
    this.opts.log(`got prompt ${promptId}`);
    this.queueUpdated();
    this.pump();
    const nodeErrors: NodeErrors = valid.nodeErrors;
    return { status: 200, body: { prompt_id: promptId, number, node_errors: nodeErrors } };
  }

  /** `GET /queue`. */
  queueListing(): { queue_running: QueueTuple[]; queue_pending: QueueTuple[] } {
    return {
      queue_running: this.running ? [this.running] : [],
      queue_pending: this.queue.map((q) => q.tuple),
    };
  }

  /** `POST /queue` with `{clear: true}` and/or `{delete: [prompt_id…]}` (pending items only, as in ComfyUI). */
  manageQueue(body: unknown): Reply {
    if (!isObject(body)) return badRequest("Invalid request body: expected a JSON object");
    if (body.delete !== undefined && !Array.isArray(body.delete)) return badRequest("Invalid delete: must be a list of prompt ids");
    let changed = false;
    if (body.clear === true && this.queue.length > 0) {
      this.queue = [];
      changed = true;
    }
    for (const id of (body.delete as unknown[] | undefined) ?? []) {
      const at = this.queue.findIndex((q) => q.tuple[1] === id);
      if (at >= 0) {
        this.queue.splice(at, 1);
        changed = true;
      }
    }
    if (changed) this.queueUpdated();
    return { status: 200, body: null };
  }

  /** `POST /interrupt`: the running prompt if `promptId` is absent or names it; otherwise nothing. */
  interrupt(promptId: unknown): void {
    if (!this.running) return;
    if (promptId !== undefined && promptId !== null && promptId !== "" && promptId !== this.running[1]) return;
    this.interruptRequested = true;
    for (const wake of [...this.sleepers]) wake();
  }

  /** `GET /history/{id}`. */
  historyOf(promptId: string): Record<string, HistoryEntry> {
    const out = dict<HistoryEntry>();
    const entry = this.history.get(promptId);
    if (entry) out[promptId] = structuredClone(entry);
    return out;
  }

  /** `GET /history?max_items=&offset=`, with ComfyUI's windowing (the newest `max_items` by default). */
  historyList(maxItems: number | undefined, offset: number | undefined): Record<string, HistoryEntry> {
    const out = dict<HistoryEntry>();
    let start = offset ?? -1;
    if (start < 0 && maxItems !== undefined) start = this.history.size - maxItems;
    let i = 0;
    let n = 0;
    for (const [id, entry] of this.history) {
      if (i >= start) {
        if (maxItems !== undefined && n >= maxItems) break;
        out[id] = structuredClone(entry);
        n++;
      }
      i++;
    }
    return out;
  }

  /** `POST /history` with `{clear: true}` and/or `{delete: [prompt_id…]}`. */
  manageHistory(body: unknown): Reply {
    if (!isObject(body)) return badRequest("Invalid request body: expected a JSON object");
    if (body.delete !== undefined && !Array.isArray(body.delete)) return badRequest("Invalid delete: must be a list of prompt ids");
    if (body.clear === true) this.history.clear();
    for (const id of (body.delete as unknown[] | undefined) ?? []) if (typeof id === "string") this.history.delete(id);
    return { status: 200, body: null };
  }

  // ---------------------------------------------------------------- messages

  private queueUpdated(): void {
    this.emit("status", { status: this.queueInfo() }, null, false);
  }

  /**
   * Sends a message unless a websocket fault swallows it. `promptScoped` messages belong to the running prompt and
   * count towards `wsSilentAfter`.
   */
  private emit(event: string, data: Record<string, unknown>, sid: string | null, promptScoped: boolean, binary?: Buffer): void {
    if (this.faultSet.wsSilent || this.silenced) return;
    if (promptScoped && this.faultSet.wsSilentAfter !== undefined) {
      if (this.promptMessages >= this.faultSet.wsSilentAfter) {
        this.silenced = true;
        return;
      }
      this.promptMessages++;
    }
    if (binary) this.outbox.sendBinary(binary, sid);
    else this.outbox.sendJson(event, data, sid);
  }

  // ---------------------------------------------------------------- execution

  /** Starts the next queued prompt if none is running. */
  private pump(): void {
    if (this.running || this.stopped || this.queue.length === 0) return;
    const next = this.queue.shift() as QueueItem;
    this.running = next.tuple;
    this.queueUpdated();
    const epoch = this.epoch;
    void this.execute(next.tuple, epoch).catch((err: unknown) => {
      // An engine bug must not take the server down; log it and let the queue move on.
      this.opts.log(`internal error executing ${next.tuple[1]}: ${err instanceof Error ? err.stack : String(err)}`);
      if (this.epoch === epoch) {
        this.running = null;
        this.queueUpdated();
        this.pump();
      }
    });
  }

  /** Waits `ms` (0 = just yield), waking early on interrupt, crash or close. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.sleepers.delete(wake);
        if (ms > 0) clearTimeout(timer as NodeJS.Timeout);
        else clearImmediate(timer as NodeJS.Immediate);
        resolve();
      };
      const timer = ms > 0 ? setTimeout(wake, ms) : setImmediate(wake);
      this.sleepers.add(wake);
    });
  }

  /**
   * The node a declared input links to, if it is a link to an existing node. Undeclared inputs are ignored, as
   * ComfyUI only hands declared inputs to a node.
   */
  private linkSource(prompt: Prompt, node: PromptNode, input: string): string | undefined {
    const info = this.catalog.get(node.class_type);
    if (!info || !(Object.hasOwn(info.input.required, input) || Object.hasOwn(info.input.optional ?? {}, input))) return undefined;
    const v = node.inputs[input];
    return Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && Object.hasOwn(prompt, v[0]) ? v[0] : undefined;
  }

  /**
   * Cache keys: a hash of the class and inputs, each link replaced by the key of the node it comes from (hashing keeps
   * keys small however much the graph fans out). Nodes no output needs were not validated, so cycles and very deep
   * chains are cut off rather than followed.
   */
  private signatures(prompt: Prompt): Map<string, string> {
    const sigs = new Map<string, string>();
    const inProgress = new Set<string>();
    const visit = (id: string): string => {
      const known = sigs.get(id);
      if (known !== undefined) return known;
      if (inProgress.has(id) || inProgress.size >= MAX_SIGNATURE_DEPTH) return `unresolved:${id}`;
      inProgress.add(id);
      const node = prompt[id] as PromptNode;
      const inputs = Object.keys(node.inputs).sort().map((k) => {
        const src = this.linkSource(prompt, node, k);
        return src === undefined ? [k, node.inputs[k]] : [k, ["link", visit(src), (node.inputs[k] as unknown[])[1]]];
      });
      inProgress.delete(id);
      const sig = createHash("sha256").update(JSON.stringify([node.class_type, inputs])).digest("base64");
      sigs.set(id, sig);
      return sig;
    };
    for (const id of Object.keys(prompt)) visit(id);
    return sigs;
  }

  /** Nodes needed by the outputs, dependencies first (the outputs were validated, so their links are sound). */
  private executionOrder(prompt: Prompt, outputs: string[]): string[] {
    const order: string[] = [];
    const seen = new Set<string>();
    const visit = (id: string) => {
      if (seen.has(id)) return;
      seen.add(id);
      const node = prompt[id] as PromptNode;
      for (const k of Object.keys(node.inputs)) {
        const src = this.linkSource(prompt, node, k);
        if (src !== undefined) visit(src);
      }
      order.push(id);
    };
    for (const o of outputs) visit(o);
    return order;
  }

  private shouldFail(ordinal: number, prompt: Prompt): boolean {
    const f = this.faultSet;
    let fail = f.failOnNth?.includes(ordinal) ?? false;
    if (f.failMarker !== undefined) {
      const marker = f.failMarker;
      fail ||= Object.values(prompt).some((n) => Object.values(n.inputs).some((v) => typeof v === "string" && v.includes(marker)));
    }
    // Draw even when already failing, so the sequence of draws depends only on the number of prompts.
    if (f.failRate !== undefined && f.failRate > 0) fail = this.rng() < f.failRate || fail;
    return fail;
  }

  private async execute(tuple: QueueTuple, epoch: number): Promise<void> {
    const [, promptId, prompt, extraData, outputs] = tuple;
    const clientId = typeof extraData.client_id === "string" ? extraData.client_id : null;
    const alive = () => this.epoch === epoch;
    this.currentClient = clientId;
    this.interruptRequested = false;
    this.promptMessages = 0;
    this.silenced = false;
    const ordinal = ++this.started;
    this.statistics.executions[promptId] = (this.statistics.executions[promptId] ?? 0) + 1;
    this.statistics.imagesByPrompt[promptId] ??= 0;
    this.opts.log(`executing prompt ${promptId} (#${ordinal})`);

    const messages: StatusMessage[] = [];
    // ComfyUI's add_message: recorded for the history, sent to the prompt's client (or to all if `broadcast` and
    // there is no client).
    const addMessage = (event: string, data: Record<string, unknown>, broadcast = false) => {
      const stamped = { ...data, timestamp: Date.now() };
      messages.push([event, stamped]);
      if (clientId !== null || broadcast) this.emit(event, stamped, clientId, true);
    };
    const toClient = (event: string, data: Record<string, unknown>) => {
      if (clientId !== null) this.emit(event, data, clientId, true);
    };

    addMessage("execution_start", { prompt_id: promptId });
    const sigs = this.opts.cache === "classic" ? this.signatures(prompt) : new Map<string, string>();
    const live = new Set(sigs.values());
    for (const k of [...this.cache.keys()]) if (!live.has(k)) this.cache.delete(k);
    const cachedNodes = Object.keys(prompt).filter((id) => this.cache.has(sigs.get(id) ?? "\u0000none"));
    const currentOutputs = [...cachedNodes];
    addMessage("execution_cached", { nodes: cachedNodes, prompt_id: promptId });

    const order = this.executionOrder(prompt, outputs);
    const isCached = (id: string) => this.cache.has(sigs.get(id) ?? "\u0000none");
    const fresh = order.filter((id) => !isCached(id));
    const failNode = this.faultSet.failNode ?? "KSampler";
    const failAt = this.shouldFail(ordinal, prompt)
      ? fresh.find((id) => (prompt[id] as PromptNode).class_type === failNode) ?? fresh.at(-1) ?? order.at(-1)
      : undefined;
    let crashPending = this.faultSet.crashOnNth === ordinal;
    const crash = () => {
      crashPending = false;
      this.opts.log(`injected crash while executing ${promptId}`);
      this.onCrash(this.faultSet.crashDownMs ?? 200);
      throw new Aborted();
    };
    const check = (nodeId: string) => {
      if (!alive()) throw new Aborted();
      if (this.interruptRequested) throw new Interrupted(nodeId);
    };

    const results = new Map<string, NodeResult>();
    const uiOutputs = dict<{ images: ImageRef[] }>();
    const meta: HistoryEntry["meta"] = dict();
    const executed: string[] = [];
    let outcome: "success" | "error" | "interrupted" = "success";
    let currentNode: string | undefined;
    try {
      for (const nodeId of order) {
        currentNode = nodeId;
        const node = prompt[nodeId] as PromptNode;
        const sig = sigs.get(nodeId);
        const hit = sig !== undefined ? this.cache.get(sig) : undefined;
        check(nodeId);
        if (crashPending && nodeId === order.at(-1)) crash();
        if (hit && nodeId !== failAt) {
          // Cached: no `executing`, but an output node still reports its (cached) output.
          results.set(nodeId, hit);
          if (hit.ui) {
            uiOutputs[nodeId] = structuredClone(hit.ui);
            meta[nodeId] = { node_id: nodeId, display_node: nodeId, parent_node: null, real_node_id: nodeId };
            toClient("executed", { node: nodeId, display_node: nodeId, output: hit.ui, prompt_id: promptId });
          }
          continue;
        }
        this.lastNodeId = nodeId;
        toClient("executing", { node: nodeId, display_node: nodeId, prompt_id: promptId });
        await this.sleep(this.timingSet.nodeMs);
        check(nodeId);
        if (nodeId === failAt) {
          throw new NodeError(this.faultSet.failExceptionType ?? "RuntimeError", this.faultSet.failMessage ?? "Simulated failure injected by sim-comfyui");
        }
        const inputs: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(node.inputs)) {
          const src = this.linkSource(prompt, node, k);
          inputs[k] = src === undefined ? v : (results.get(src) as NodeResult).outputs.at((v as unknown[])[1] as number);
        }
        const addProgress = (value: number, max: number, latent: SampledValue) => {
          // ComfyUI's progress hook sends to the prompt's client, or to everyone when there is none.
          this.emit("progress", { value, max, prompt_id: promptId, node: nodeId }, clientId, true);
          if (this.opts.previews) this.emit("preview", {}, clientId, true, this.previewFrame(latent, value / max));
        };
        const ctx: NodeContext = {
          images: this.images,
          prompt,
          extraPngInfo: extraData.extra_pnginfo,
          maxBatchPixels: this.opts.maxBatchPixels,
          sample: async (steps: number, latent: SampledValue) => {
            const crashAt = Math.ceil(steps / 2);
            for (let step = 1; step <= steps; step++) {
              await this.sleep(this.timingSet.stepMs);
              check(nodeId);
              if (crashPending && step === crashAt) crash();
              addProgress(step, steps, latent);
            }
          },
        };
        const executor = EXECUTORS.get(node.class_type);
        if (!executor) throw new NodeError("KeyError", `'${node.class_type}'`);
        const result = await executor(inputs, ctx);
        if (!alive()) throw new Aborted();
        results.set(nodeId, result);
        if (sig !== undefined) this.cache.set(sig, result);
        executed.push(nodeId);
        if (result.ui) {
          const produced = result.ui.images.length;
          this.statistics.imagesGenerated += produced;
          this.statistics.imagesByPrompt[promptId] = (this.statistics.imagesByPrompt[promptId] ?? 0) + produced;
          uiOutputs[nodeId] = structuredClone(result.ui);
          meta[nodeId] = { node_id: nodeId, display_node: nodeId, parent_node: null, real_node_id: nodeId };
          toClient("executed", { node: nodeId, display_node: nodeId, output: result.ui, prompt_id: promptId });
        }
      }
      addMessage("execution_success", { prompt_id: promptId });
    } catch (err) {
      if (err instanceof Aborted || !alive()) return; // crashed or closed: the prompt vanishes with the server
      const nodeId = err instanceof Interrupted ? err.nodeId : (currentNode as string);
      const nodeType = (prompt[nodeId] as PromptNode).class_type;
      if (err instanceof Interrupted) {
        outcome = "interrupted";
        addMessage("execution_interrupted", { prompt_id: promptId, node_id: nodeId, node_type: nodeType, executed }, true);
      } else {
        outcome = "error";
        const exceptionType = err instanceof NodeError ? err.exceptionType : err instanceof OutsideOutputError ? "Exception" : "RuntimeError";
        const message = err instanceof Error ? err.message : String(err);
        addMessage("execution_error", {
          prompt_id: promptId, node_id: nodeId, node_type: nodeType, executed,
          exception_message: `${message}\n${err instanceof NodeError ? err.tips : ""}`, exception_type: exceptionType,
          traceback: traceback(nodeType, message), current_inputs: {}, current_outputs: currentOutputs,
        });
      }
    }
    if (!alive()) return;

    // PromptQueue.task_done: history first, then the queue update, then `executing: null` (= finished).
    // A re-run prompt id keeps its place, as a Python dict assignment does.
    this.history.set(promptId, {
      prompt: tuple,
      outputs: uiOutputs,
      status: { status_str: outcome === "success" ? "success" : "error", completed: outcome === "success", messages },
      meta,
    });
    while (this.history.size > this.opts.maxHistory) this.history.delete(this.history.keys().next().value as string);
    if (outcome === "success") this.statistics.succeeded++;
    else if (outcome === "error") this.statistics.failed++;
    else this.statistics.interrupted++;
    this.running = null;
    this.queueUpdated();
    toClient("executing", { node: null, prompt_id: promptId });
    this.lastNodeId = null;
    this.currentClient = null;
    this.silenced = false;
    this.opts.log(`prompt ${promptId} finished: ${outcome}`);
    this.pump();
  }

  /** A binary preview frame: type 1 (preview image), format 2 (PNG), then a small PNG of the picture so far. */
  private previewFrame(latent: SampledValue, progress: number): Buffer {
    // Previews are decoded from the latent (1/8 of the image), shrunk to fit previewMaxSize.
    let w = Math.max(1, Math.round(latent.width / 8));
    let h = Math.max(1, Math.round(latent.height / 8));
    const scale = Math.min(1, this.opts.previewMaxSize / Math.max(w, h));
    w = Math.max(1, Math.round(w * scale));
    h = Math.max(1, Math.round(h * scale));
    const png = renderPng(imageKey(latent, 0), w, h, { progress, level: PREVIEW_COMPRESSION_LEVEL });
    const header = Buffer.alloc(8);
    header.writeUInt32BE(BINARY_PREVIEW_IMAGE, 0);
    header.writeUInt32BE(PREVIEW_FORMAT_PNG, 4);
    return Buffer.concat([header, png]);
  }
}

export type { ErrorInfo };
