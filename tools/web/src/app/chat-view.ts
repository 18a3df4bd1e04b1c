// Chat: a model switcher, the conversation, a streamed reply and a stop button.
import { Code, ConnectError } from "@connectrpc/connect";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { FinishReason } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelKind, ModelStatus, type Model } from "@luna/contracts/luna/models/v1/models_pb.js";
import { client, errorMessage } from "./api.js";
import { aboutSeconds, count, h, randomId, replace } from "./dom.js";

const MODEL_KEY = "luna.model";
/** After Stop the server is asked to end the reply (so it comes with its bill); the stream is cut after this. */
const STOP_GRACE_MS = 3000;

export interface ChatViewDeps {
  /** Credits available after a reply was billed. */
  onBalance(available: bigint): void;
}

/** Builds the chat panel; models load at once. */
export function chatView(deps: ChatViewDeps): HTMLElement {
  const chat = client(ChatService);
  const modelSelect = h("select", { id: "model", "aria-label": "Model" });
  const messages = h("div", { class: "messages", id: "messages", "aria-live": "polite" });
  const input = h("textarea", { id: "chat-input", rows: 2, placeholder: "Message Luna… (Enter sends, Shift+Enter: new line)" });
  const send = h("button", { type: "submit", class: "primary", id: "send" }, "Send");
  const stop = h("button", { type: "button", id: "stop", class: "danger", hidden: true }, "Stop");
  const empty = h("p", { class: "empty muted" }, "Pick a model and say hello.");
  let models: Model[] = [];
  let conversationId: string | undefined;
  let current: { abort: AbortController; messageId: string; stopping: boolean } | undefined;

  const newChat = () => {
    conversationId = undefined;
    replace(messages, empty);
  };
  modelSelect.addEventListener("change", () => {
    localStorage.setItem(MODEL_KEY, modelSelect.value);
    newChat(); // a conversation's model is fixed: switching starts a new one
  });

  void client(ModelService).listModels({ kind: ModelKind.TEXT }).then((res) => {
    models = res.models;
    const saved = localStorage.getItem(MODEL_KEY);
    // A STANDBY model is selectable: its pool scaled to zero and wakes when asked (the reply says "warming up").
    replace(modelSelect, ...models.map((m) => h("option", { value: m.id, disabled: m.status === ModelStatus.OFFLINE },
      `${m.displayName || m.id}${m.status === ModelStatus.STANDBY ? " (sleeping)" : ""}`)));
    const preferred = models.find((m) => m.id === saved) ?? models.find((m) => m.status === ModelStatus.AVAILABLE) ?? models[0];
    if (preferred) modelSelect.value = preferred.id;
  }, (err: unknown) => replace(messages, h("p", { class: "form-error" }, `Models could not be loaded: ${errorMessage(err)}`)));

  const bubble = (role: "user" | "assistant", text: string) => {
    empty.remove();
    const body = h("div", { class: "text" }, text);
    const meta = h("div", { class: "meta" });
    const el = h("div", { class: `msg ${role}` }, body, meta);
    messages.append(el);
    messages.scrollTop = messages.scrollHeight;
    return { el, body, meta };
  };

  const newChatButton = h("button", { type: "button", class: "ghost", id: "new-chat", onclick: newChat }, "New chat");
  const setBusy = (busy: boolean) => {
    send.disabled = busy;
    stop.hidden = !busy;
    modelSelect.disabled = busy;
    newChatButton.disabled = busy;
  };

  stop.addEventListener("click", () => {
    const c = current;
    if (!c || c.stopping) return;
    c.stopping = true;
    if (!c.messageId) return c.abort.abort();
    setTimeout(() => c.abort.abort(), STOP_GRACE_MS);
    chat.stopGeneration({ messageId: c.messageId }).catch(() => c.abort.abort());
  });

  const submit = async () => {
    const text = input.value.trim();
    if (!text || current) return;
    const modelId = modelSelect.value;
    if (!modelId) return;
    input.value = "";
    bubble("user", text);
    const reply = bubble("assistant", "");
    reply.el.classList.add("streaming");
    current = { abort: new AbortController(), messageId: "", stopping: false };
    setBusy(true);
    let written = "";
    // While the model warms up: the server's last `waiting` event, counted down locally between its repeats.
    let warming: { modelId: string; endsAt: number } | undefined;
    const showWarming = () => {
      if (warming) reply.meta.textContent = `warming up ${warming.modelId} (${aboutSeconds(warming.endsAt - Date.now())})`;
    };
    const ticker = setInterval(showWarming, 1000);
    try {
      if (!conversationId) {
        const res = await chat.createConversation({ modelId });
        conversationId = res.conversation?.id;
      }
      const stream = chat.sendMessage({ conversationId, text, clientMessageId: randomId() }, { signal: current.abort.signal });
      for await (const res of stream) {
        const ev = res.event?.event;
        if (ev?.case === "started") current.messageId = ev.value.assistantMessageId;
        else if (ev?.case === "waiting") {
          reply.el.classList.add("warming");
          warming = { modelId: ev.value.modelId, endsAt: Date.now() + Number(ev.value.expectedWaitMs - ev.value.elapsedMs) };
          showWarming();
        } else if (ev?.case === "delta") {
          if (warming) {
            warming = undefined;
            reply.el.classList.remove("warming");
            reply.meta.textContent = "";
          }
          written += ev.value.text;
          reply.body.textContent = written;
          messages.scrollTop = messages.scrollHeight;
        } else if (ev?.case === "finished") {
          const f = ev.value;
          const stopped = f.finishReason === FinishReason.CANCELLED ? "stopped · " : "";
          reply.meta.textContent = `${stopped}${count(f.completionTokens, "token")} · ${count(f.creditsCharged, "credit")}`;
          if (stopped) reply.el.classList.add("stopped");
          deps.onBalance(f.balanceAfter);
        } else if (ev?.case === "error") {
          reply.el.classList.add("failed");
          reply.meta.textContent = `failed: ${ev.value.message || ev.value.code}`;
          deps.onBalance(ev.value.balanceAfter);
        }
      }
    } catch (err) {
      const cancelled = current.abort.signal.aborted || (err instanceof ConnectError && err.code === Code.Canceled);
      if (cancelled) {
        reply.el.classList.add("stopped");
        reply.meta.textContent = "stopped";
      } else {
        reply.el.classList.add("failed");
        reply.meta.textContent = errorMessage(err);
      }
    } finally {
      clearInterval(ticker);
      reply.el.classList.remove("streaming", "warming");
      if (!written && !reply.meta.textContent) reply.meta.textContent = "(no reply)";
      current = undefined;
      setBusy(false);
      input.focus();
    }
  };

  const form = h("form", { class: "composer" }, input, h("div", { class: "actions" }, stop, send));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void submit();
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      void submit();
    }
  });

  replace(messages, empty);
  return h("section", { class: "panel chat", id: "chat" },
    h("div", { class: "toolbar" },
      h("label", {}, h("span", { class: "muted" }, "Model"), modelSelect),
      newChatButton),
    messages, form);
}
