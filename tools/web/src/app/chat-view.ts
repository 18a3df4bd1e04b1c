// Chat: the conversations sidebar (a drawer on phones), the open conversation with its history (older pages on
// scroll up), replies streamed and rendered as markdown, stop, regenerate with sibling arrows, edit the last message
// and resend (its versions with arrows too), resume after a reload, and a model picker that starts a new conversation. The URL names the conversation (/c/<id>): reload and
// back/forward work.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChatService } from "@luna/contracts/luna/chat/v1/chat_service_pb.js";
import { FinishReason, MessageRole, MessageStatus, type ChatEvent, type Conversation, type Message } from "@luna/contracts/luna/chat/v1/chat_pb.js";
import { ModelService } from "@luna/contracts/luna/models/v1/model_service_pb.js";
import { ModelKind, ModelStatus, type Model } from "@luna/contracts/luna/models/v1/models_pb.js";
import { client, errorMessage, reportFailure } from "./api.js";
import { aboutSeconds, count, formatCredits, h, randomId, replace } from "./dom.js";
import { copyButton, renderMarkdown } from "./markdown.js";

const MODEL_KEY = "luna.model";
/** After Stop the server is asked to end the reply (so it comes with its bill); the stream is cut after this. */
const STOP_GRACE_MS = 3000;
/** Conversations per sidebar page, messages per history page. */
const CONVERSATIONS_PAGE = 30;
const MESSAGES_PAGE = 50;

export interface ChatViewDeps {
  /** Credits available after a reply was billed. */
  onBalance(available: bigint): void;
  /** Something changed the credits without telling the balance (a resumed reply ended): read it again. */
  onCreditsChanged(): void;
}

/** The conversation id a path names (`/c/<id>`), if any. */
export function conversationFromPath(path = location.pathname): string | undefined {
  const m = /^\/c\/([\w-]+)\/?$/.exec(path);
  return m?.[1];
}

function priceLabel(m: Model): string {
  const p = m.prices;
  if (!p) return "";
  return p.inputPer1kTokens === p.outputPer1kTokens
    ? `${formatCredits(p.inputPer1kTokens)} credits/1k tokens`
    : `${formatCredits(p.inputPer1kTokens)} in, ${formatCredits(p.outputPer1kTokens)} out /1k tokens`;
}

function contextLabel(m: Model): string {
  return m.contextWindow >= 1024 ? `${Math.round(m.contextWindow / 1024)}k context` : `${m.contextWindow} context`;
}

/** One rendered assistant reply. */
interface Reply {
  el: HTMLElement;
  body: HTMLElement;
  meta: HTMLElement;
  actions: HTMLElement;
  text: string;
}

/** Builds the chat panel (sidebar included); models and conversations load at once. */
export function chatView(deps: ChatViewDeps): { el: HTMLElement; route(): void; reload(): void } {
  const chat = client(ChatService);
  const modelSelect = h("select", { id: "model", "aria-label": "Model" });
  const modelInfo = h("span", { class: "muted model-info", id: "model-info" });
  const messages = h("div", { class: "messages", id: "messages", "aria-live": "polite" });
  const input = h("textarea", { id: "chat-input", rows: 2, placeholder: "Message Luna… (Enter sends, Shift+Enter: new line)" });
  const send = h("button", { type: "submit", class: "primary", id: "send" }, "Send");
  const stop = h("button", { type: "button", id: "stop", class: "danger", hidden: true }, "Stop");
  const systemPrompt = h("textarea", { id: "system-prompt", rows: 2, placeholder: "System prompt (optional): how the model should behave" });
  const maxTokens = h("input", { id: "max-tokens", type: "number", min: 1, step: 1, placeholder: "model maximum", inputmode: "numeric" });
  const settings = h("details", { class: "new-chat-settings", id: "new-chat-settings" },
    h("summary", {}, "Conversation settings"),
    h("label", {}, h("span", { class: "muted" }, "System prompt"), systemPrompt),
    h("label", {}, h("span", { class: "muted" }, "Max reply tokens"), maxTokens));
  const title = h("h1", { class: "conv-title", id: "conversation-title" }, "New chat");
  const list = h("ul", { class: "conv-list", id: "conversation-list" });
  const listStatus = h("p", { class: "muted list-status" });
  const sidebar = h("aside", { class: "sidebar", id: "sidebar" });
  const newChatButton = h("button", { type: "button", class: "primary", id: "new-chat" }, "+ New chat");
  const toggle = h("button", { type: "button", class: "ghost drawer-toggle", id: "toggle-sidebar", "aria-label": "Conversations",
    "aria-controls": "sidebar" }, "☰");

  let models: Model[] = [];
  let conversation: Conversation | undefined;
  /** Where the sidebar's next page of conversations starts ("" = none left). */
  let listToken = "";
  let listLoading = false;
  /** History: where older messages start ("" = none left). */
  let olderToken = "";
  let olderLoading = false;
  let current: { abort: AbortController; messageId: string; stopping: boolean } | undefined;
  /** Bumped whenever another conversation is opened, so a late answer for the previous one is dropped. */
  let generation = 0;
  /** Assistant messages by parent (user message) id: siblings oldest first, for the "1 / 2" arrows. */
  const siblings = new Map<string, Message[]>();
  const shown = new Map<string, number>();
  /**
   * Versions of a user message (EditMessage) by the first version's id (a version's `parentId`, or its own id):
   * oldest first, for the "‹ 1 / 2 ›" arrows under the message; the index shown of each.
   */
  const versions = new Map<string, Message[]>();
  const shownVersion = new Map<string, number>();
  const replyOf = new WeakMap<HTMLElement, Reply>();
  /** Max reply tokens chosen when this tab created a conversation (the API takes it per message). */
  const maxTokensFor = new Map<string, number>();

  // ---- Sidebar ------------------------------------------------------------------------------------------------

  const closeDrawer = () => document.body.classList.remove("drawer-open");
  toggle.addEventListener("click", () => document.body.classList.toggle("drawer-open"));

  const conversationLabel = (c: Conversation) => c.title || c.lastMessagePreview || "New chat";

  const listItem = (c: Conversation): HTMLElement => {
    const link = h("a", { href: `/c/${c.id}`, class: "conv-link", title: conversationLabel(c) }, conversationLabel(c));
    link.addEventListener("click", (ev) => {
      const mouse = ev as MouseEvent;
      if (mouse.ctrlKey || mouse.metaKey || mouse.shiftKey) return; // a new tab or window: let the browser do it
      ev.preventDefault();
      navigate(`/c/${c.id}`);
    });
    const rename = h("button", { type: "button", class: "ghost icon", title: "Rename", "aria-label": "Rename", "data-action": "rename" }, "✎");
    const del = h("button", { type: "button", class: "ghost icon", title: "Delete", "aria-label": "Delete", "data-action": "delete" }, "×");
    const li = h("li", { class: "conv", "data-id": c.id }, link, rename, del);
    if (conversation?.id === c.id) li.classList.add("active");
    rename.addEventListener("click", () => {
      const field = h("input", { class: "rename-input", value: c.title || conversationLabel(c), maxlength: 200, "aria-label": "New title" });
      link.replaceWith(field);
      field.focus();
      field.select();
      let done = false;
      const finish = (save: boolean) => {
        if (done) return;
        done = true;
        const text = field.value.trim();
        field.replaceWith(link);
        if (!save || !text || text === c.title) return;
        chat.renameConversation({ conversationId: c.id, title: text }).then((res) => {
          c.title = res.conversation?.title ?? text;
          link.textContent = conversationLabel(c);
          link.title = conversationLabel(c);
          if (conversation?.id === c.id) {
            conversation.title = c.title;
            setTitle(conversation);
          }
        }, (err: unknown) => showNotice(`Could not rename: ${errorMessage(err)}`));
      };
      field.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") finish(true);
        else if (ev.key === "Escape") finish(false);
      });
      field.addEventListener("blur", () => finish(true));
    });
    del.addEventListener("click", () => {
      if (!confirm(`Delete "${conversationLabel(c)}"? This cannot be undone.`)) return;
      chat.deleteConversation({ conversationId: c.id }).then(() => {
        li.remove();
        if (conversation?.id === c.id) navigate("/");
        if (!list.querySelector(".conv")) listStatus.textContent = "No conversations yet.";
      }, (err: unknown) => showNotice(`Could not delete: ${errorMessage(err)}`));
    });
    return li;
  };

  const loadConversations = async (reset: boolean) => {
    if (listLoading || (!reset && !listToken)) return;
    listLoading = true;
    try {
      const res = await chat.listConversations({ page: { pageSize: CONVERSATIONS_PAGE, pageToken: reset ? "" : listToken } });
      if (reset) replace(list);
      for (const c of res.conversations) {
        if (!list.querySelector(`.conv[data-id="${CSS.escape(c.id)}"]`)) list.append(listItem(c));
      }
      listToken = res.page?.nextPageToken ?? "";
      listStatus.textContent = list.querySelector(".conv") ? "" : "No conversations yet.";
    } catch (err) {
      listStatus.textContent = `Conversations could not be loaded: ${errorMessage(err)}`;
    } finally {
      listLoading = false;
    }
  };
  // More conversations as the list is scrolled to its end.
  const listBox = h("div", { class: "conv-scroll", id: "conversation-scroll" }, list, listStatus);
  listBox.addEventListener("scroll", () => {
    if (listBox.scrollTop + listBox.clientHeight >= listBox.scrollHeight - 40) void loadConversations(false);
  });
  const markActive = () => {
    for (const li of list.querySelectorAll<HTMLElement>(".conv")) li.classList.toggle("active", li.dataset.id === conversation?.id);
  };
  /** Moves (or adds) a conversation to the top of the list: it has the newest activity. */
  const bumpConversation = (c: Conversation) => {
    list.querySelector(`.conv[data-id="${CSS.escape(c.id)}"]`)?.remove();
    list.prepend(listItem(c));
    listStatus.textContent = "";
    markActive();
  };

  // ---- Models ---------------------------------------------------------------------------------------------------

  const selectedModel = () => models.find((m) => m.id === modelSelect.value);
  const showModelInfo = () => {
    const m = selectedModel();
    modelInfo.textContent = m ? `${priceLabel(m)} · ${contextLabel(m)}` : "";
  };
  modelSelect.addEventListener("change", () => {
    localStorage.setItem(MODEL_KEY, modelSelect.value);
    showModelInfo();
    // A conversation's model is fixed: another model starts a new conversation (the old one stays in the list).
    if (conversation && conversation.modelId !== modelSelect.value) navigate("/", { keepModel: true });
  });
  const loadModels = () => client(ModelService).listModels({ kind: ModelKind.TEXT }).then((res) => {
    models = res.models;
    const saved = localStorage.getItem(MODEL_KEY);
    // A STANDBY model is selectable: its pool scaled to zero and wakes when asked (the reply says "warming up").
    replace(modelSelect, ...models.map((m) => h("option", { value: m.id, disabled: m.status === ModelStatus.OFFLINE },
      `${m.displayName || m.id} · ${priceLabel(m)} · ${contextLabel(m)}${m.status === ModelStatus.STANDBY ? " (sleeping)" : ""}`)));
    const preferred = conversation ? models.find((m) => m.id === conversation!.modelId)
      : models.find((m) => m.id === saved) ?? models.find((m) => m.status === ModelStatus.AVAILABLE) ?? models[0];
    if (preferred) modelSelect.value = preferred.id;
    showModelInfo();
  }, (err: unknown) => showNotice(`Models could not be loaded: ${errorMessage(err)}`));
  let modelsLoaded = loadModels();

  // ---- Messages -------------------------------------------------------------------------------------------------

  const empty = h("p", { class: "empty muted" }, "Pick a model and say hello.");
  const notice = h("p", { class: "notice form-error", role: "alert", hidden: true });
  const showNotice = (text: string) => {
    notice.textContent = text;
    notice.hidden = !text;
  };

  const setTitle = (c: Conversation | undefined) => {
    title.textContent = c ? conversationLabel(c) : "New chat";
    document.title = c ? `${conversationLabel(c)} · Luna` : "Luna";
  };

  const scrollToEnd = () => (messages.scrollTop = messages.scrollHeight);

  /** A user message and, after it, the row of its buttons (edit, version arrows): kept outside the bubble's text. */
  const userBubble = (text: string, m?: Message): HTMLElement[] => {
    empty.remove();
    const bubble = h("div", { class: "msg user" }, h("div", { class: "text" }, text));
    if (m) {
      bubble.dataset.id = m.id;
      bubble.dataset.root = m.parentId || m.id;
    }
    return [bubble, h("div", { class: "user-tools", hidden: true })];
  };
  /** The reply element shown for a user bubble (after its button row), if any. */
  const replyElOf = (bubble: HTMLElement): HTMLElement | undefined => {
    const el = bubble.nextElementSibling?.nextElementSibling;
    return el instanceof HTMLElement && el.classList.contains("assistant") ? el : undefined;
  };

  const newReply = (): Reply => {
    empty.remove();
    const body = h("div", { class: "text md" });
    const meta = h("div", { class: "meta" });
    const actions = h("div", { class: "msg-actions" });
    return { el: h("div", { class: "msg assistant" }, body, meta, actions), body, meta, actions, text: "" };
  };

  /** Renders a reply's text as markdown, at most once per frame while it streams. */
  const renderLater = (() => {
    const pending = new Set<Reply>();
    let scheduled = false;
    return (r: Reply) => {
      pending.add(r);
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        const atEnd = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 60;
        for (const p of pending) renderMarkdown(p.body, p.text);
        pending.clear();
        if (atEnd) scrollToEnd();
      });
    };
  })();

  const finishedMeta = (m: { finishReason: FinishReason; completionTokens: bigint; creditsCharged: bigint }) =>
    `${m.finishReason === FinishReason.CANCELLED ? "stopped · " : ""}${count(m.completionTokens, "token")} · ${count(m.creditsCharged, "credit")}` +
    (m.finishReason === FinishReason.LENGTH ? " · reached the token limit" : "");

  /** Fills a reply element from a stored message. */
  const showStored = (r: Reply, m: Message) => {
    r.text = m.content;
    r.el.dataset.id = m.id;
    r.el.classList.remove("stopped", "failed", "streaming");
    renderMarkdown(r.body, m.content);
    if (m.status === MessageStatus.COMPLETE) r.meta.textContent = finishedMeta(m);
    else if (m.status === MessageStatus.STOPPED) {
      r.el.classList.add("stopped");
      r.meta.textContent = finishedMeta({ ...m, finishReason: FinishReason.CANCELLED });
    } else if (m.status === MessageStatus.FAILED) {
      r.el.classList.add("failed");
      r.meta.textContent = `failed: ${m.errorMessage || m.errorCode}`;
    } else r.meta.textContent = "";
  };

  /** The copy / regenerate buttons and the sibling arrows of a reply. */
  const fillActions = (r: Reply, parentId: string, isLast: boolean) => {
    const group = siblings.get(parentId) ?? [];
    const index = shown.get(parentId) ?? group.length - 1;
    const parts: HTMLElement[] = [copyButton("Copy", () => r.text, { "data-copy": "reply" })];
    if (group.length > 1) {
      const prev = h("button", { type: "button", class: "ghost icon", "aria-label": "Previous reply", "data-action": "prev-sibling",
        disabled: index === 0 }, "‹");
      const next = h("button", { type: "button", class: "ghost icon", "aria-label": "Next reply", "data-action": "next-sibling",
        disabled: index === group.length - 1 }, "›");
      const at = h("span", { class: "sibling-count muted" }, `${index + 1} / ${group.length}`);
      const go = (to: number) => {
        shown.set(parentId, to);
        showStored(r, group[to]!);
        fillActions(r, parentId, isLast);
      };
      prev.addEventListener("click", () => go(index - 1));
      next.addEventListener("click", () => go(index + 1));
      parts.push(h("span", { class: "siblings" }, prev, at, next));
    }
    if (isLast && !r.el.classList.contains("of-old-version")) {
      const regen = h("button", { type: "button", class: "ghost", "data-action": "regenerate", title: "Write this reply again",
        disabled: current !== undefined }, "↻ Regenerate");
      regen.addEventListener("click", () => void regenerate(r, parentId));
      parts.push(regen);
    }
    replace(r.actions, ...parts);
  };

  /** Only the last reply can be regenerated: redraw the buttons of every reply. */
  const refreshActions = () => {
    const replies = [...messages.querySelectorAll<HTMLElement>(".msg.assistant")];
    for (const el of replies) {
      const r = replyOf.get(el);
      if (r && el.dataset.parent) fillActions(r, el.dataset.parent, el === replies.at(-1));
    }
  };

  /**
   * Shows version `to` of a user message in its bubble, with that version's newest reply; the messages after it
   * belong to the newest version only (an older version ended the conversation when it was replaced), so they are
   * hidden while an older one is shown.
   */
  const showVersion = (bubble: HTMLElement, to: number) => {
    const root = bubble.dataset.root;
    const group = root ? versions.get(root) : undefined;
    const v = group?.[to];
    if (!root || !group || !v) return;
    shownVersion.set(root, to);
    bubble.querySelector(".text")!.textContent = v.content;
    bubble.classList.toggle("old-version", !v.active);
    const replyEl = replyElOf(bubble);
    const r = replyEl ? replyOf.get(replyEl) : undefined;
    if (r) {
      const replies = siblings.get(v.id) ?? [];
      const at = replies.findIndex((x) => x.active);
      const index = at >= 0 ? at : replies.length - 1;
      r.el.dataset.parent = v.id;
      r.el.classList.toggle("of-old-version", !v.active);
      shown.set(v.id, Math.max(0, index));
      if (replies[index]) showStored(r, replies[index]);
    }
    for (let el = (replyEl ?? bubble.nextElementSibling)?.nextElementSibling; el; el = el.nextElementSibling) {
      el.classList.toggle("other-branch", !v.active);
    }
    refreshActions();
    refreshUserActions();
  };

  /** Shows the newest version of every message again (before sending: the conversation continues from those). */
  const showNewestVersions = () => {
    for (const bubble of messages.querySelectorAll<HTMLElement>(".msg.user.old-version")) {
      const group = versions.get(bubble.dataset.root ?? "") ?? [];
      showVersion(bubble, Math.max(0, group.findIndex((v) => v.active)));
    }
  };

  /** The version arrows under every user message, and Edit under the last one (when its newest version is shown). */
  const refreshUserActions = () => {
    const bubbles = [...messages.querySelectorAll<HTMLElement>(".msg.user")];
    for (const bubble of bubbles) {
      const tools = bubble.nextElementSibling;
      if (!(tools instanceof HTMLElement) || !tools.classList.contains("user-tools")) continue;
      const group = versions.get(bubble.dataset.root ?? "") ?? [];
      const index = shownVersion.get(bubble.dataset.root ?? "") ?? group.length - 1;
      const parts: HTMLElement[] = [];
      if (group.length > 1) {
        const prev = h("button", { type: "button", class: "ghost icon", "aria-label": "Previous version", "data-action": "prev-version",
          disabled: index === 0 }, "‹");
        const next = h("button", { type: "button", class: "ghost icon", "aria-label": "Next version", "data-action": "next-version",
          disabled: index === group.length - 1 }, "›");
        prev.addEventListener("click", () => showVersion(bubble, index - 1));
        next.addEventListener("click", () => showVersion(bubble, index + 1));
        parts.push(h("span", { class: "siblings" }, prev, h("span", { class: "version-count muted" }, `${index + 1} / ${group.length}`), next));
      }
      if (bubble === bubbles.at(-1) && bubble.dataset.id && !bubble.classList.contains("old-version") && !bubble.classList.contains("editing")) {
        const edit = h("button", { type: "button", class: "ghost", "data-action": "edit", title: "Edit this message and send it again",
          disabled: current !== undefined }, "✎ Edit");
        edit.addEventListener("click", () => startEdit(bubble));
        parts.push(edit);
      }
      replace(tools, ...parts);
      tools.hidden = parts.length === 0;
    }
  };

  /** Shows a page of stored messages (oldest first), after what is shown, or before it (an older page). */
  const showMessages = (page: Message[], where: "append" | "prepend") => {
    const nodes: HTMLElement[] = [];
    const streaming: { r: Reply; m: Message }[] = [];
    for (const m of page) {
      if (m.role === MessageRole.USER) {
        const root = m.parentId || m.id;
        const group = versions.get(root) ?? [];
        if (!group.some((x) => x.id === m.id)) group.push(m);
        versions.set(root, group);
        if (m.active) nodes.push(...userBubble(m.content, m)); // older versions: reached with the arrows
        continue;
      }
      const group = siblings.get(m.parentId) ?? [];
      if (!group.some((x) => x.id === m.id)) group.push(m);
      siblings.set(m.parentId, group);
      if (!m.active) continue; // an older sibling: reached with the arrows of the active one
      const r = newReply();
      r.el.dataset.parent = m.parentId;
      replyOf.set(r.el, r);
      showStored(r, m);
      nodes.push(r.el);
      if (m.status === MessageStatus.STREAMING) streaming.push({ r, m });
    }
    for (const [parent, group] of siblings) {
      group.sort((a, b) => (a.createdAt && b.createdAt ? timestampMs(a.createdAt) - timestampMs(b.createdAt) : 0));
      shown.set(parent, Math.max(0, group.findIndex((x) => x.active)));
    }
    for (const [root, group] of versions) {
      group.sort((a, b) => (a.createdAt && b.createdAt ? timestampMs(a.createdAt) - timestampMs(b.createdAt) : 0));
      shownVersion.set(root, Math.max(0, group.findIndex((x) => x.active)));
    }
    if (where === "append") messages.append(...nodes);
    else {
      const before = messages.scrollHeight;
      messages.prepend(...nodes);
      messages.scrollTop += messages.scrollHeight - before; // keep what the reader was looking at in place
    }
    refreshActions();
    refreshUserActions();
    return streaming;
  };

  // Older messages as the history is scrolled to its top.
  const loadOlder = async () => {
    if (!conversation || !olderToken || olderLoading) return;
    olderLoading = true;
    const gen = generation;
    try {
      const res = await chat.getConversation({ conversationId: conversation.id, messagesPage: { pageSize: MESSAGES_PAGE, pageToken: olderToken } });
      if (gen !== generation) return;
      olderToken = res.messagesPage?.nextPageToken ?? "";
      showMessages(res.messages, "prepend");
    } catch (err) {
      showNotice(`Older messages could not be loaded: ${errorMessage(err)}`);
    } finally {
      olderLoading = false;
    }
  };
  messages.addEventListener("scroll", () => {
    if (messages.scrollTop < 80) void loadOlder();
  });

  const setBusy = (busy: boolean) => {
    send.disabled = busy;
    stop.hidden = !busy;
    for (const b of messages.querySelectorAll<HTMLButtonElement>("[data-action=regenerate], [data-action=edit]")) b.disabled = busy;
  };

  stop.addEventListener("click", () => {
    const c = current;
    if (!c || c.stopping) return;
    c.stopping = true;
    if (!c.messageId) return c.abort.abort();
    setTimeout(() => c.abort.abort(), STOP_GRACE_MS);
    chat.stopGeneration({ messageId: c.messageId }).catch(() => c.abort.abort());
  });

  /** Follows one reply's event stream into `r`: text as it arrives (markdown), "warming up" while the model wakes, the bill. */
  const follow = async (r: Reply, events: AsyncIterable<{ event?: ChatEvent }>): Promise<Partial<Message>> => {
    r.el.classList.add("streaming");
    /** What the stream said about the end, kept with the reply for the sibling arrows. */
    const end: Partial<Message> = { finishReason: FinishReason.CANCELLED, completionTokens: 0n, creditsCharged: 0n };
    const state = current!;
    // While the model warms up: the server's last `waiting` event, counted down locally between its repeats.
    let warming: { modelId: string; endsAt: number } | undefined;
    const showWarming = () => {
      if (warming) r.meta.textContent = `warming up ${warming.modelId} (${aboutSeconds(warming.endsAt - Date.now())})`;
    };
    const ticker = setInterval(showWarming, 1000);
    try {
      for await (const res of events) {
        const ev = res.event?.event;
        if (ev?.case === "started") {
          state.messageId = ev.value.assistantMessageId;
          r.el.dataset.id = ev.value.assistantMessageId;
          r.el.dataset.parent = ev.value.userMessageId;
        } else if (ev?.case === "waiting") {
          r.el.classList.add("warming");
          warming = { modelId: ev.value.modelId, endsAt: Date.now() + Number(ev.value.expectedWaitMs - ev.value.elapsedMs) };
          showWarming();
        } else if (ev?.case === "delta") {
          if (warming) {
            warming = undefined;
            r.el.classList.remove("warming");
            r.meta.textContent = "";
          }
          // `offset` is the reply's length after this delta: place the text there (a resumed stream starts at 0).
          const start = Number(ev.value.offset) - ev.value.text.length;
          r.text = (start >= 0 && start <= r.text.length ? r.text.slice(0, start) : r.text) + ev.value.text;
          renderLater(r);
        } else if (ev?.case === "finished") {
          renderMarkdown(r.body, r.text); // the whole reply now, not at the next frame
          r.meta.textContent = finishedMeta(ev.value);
          Object.assign(end, { finishReason: ev.value.finishReason, completionTokens: ev.value.completionTokens, creditsCharged: ev.value.creditsCharged });
          if (ev.value.finishReason === FinishReason.CANCELLED) r.el.classList.add("stopped");
          deps.onBalance(ev.value.balanceAfter);
        } else if (ev?.case === "error") {
          r.el.classList.add("failed");
          r.meta.textContent = `failed: ${ev.value.message || ev.value.code}`;
          Object.assign(end, { errorMessage: ev.value.message, errorCode: ev.value.code });
          deps.onBalance(ev.value.balanceAfter);
        }
      }
    } catch (err) {
      const cancelled = state.abort.signal.aborted || (err instanceof ConnectError && err.code === Code.Canceled);
      if (cancelled) {
        r.el.classList.add("stopped");
        r.meta.textContent ||= "stopped";
      } else {
        r.el.classList.add("failed");
        r.meta.textContent = errorMessage(err);
        reportFailure(err); // a stream the network cut: the page retries and resumes it once Luna answers
      }
    } finally {
      clearInterval(ticker);
      renderMarkdown(r.body, r.text);
      r.el.classList.remove("streaming", "warming");
      if (!r.text && !r.meta.textContent) r.meta.textContent = "(no reply)";
    }
    return end;
  };

  /** Records a finished reply as the newest sibling of its group and redraws the buttons. */
  const settle = (r: Reply, end: Partial<Message>) => {
    const parent = r.el.dataset.parent;
    const id = r.el.dataset.id;
    if (!parent || !id) return;
    replyOf.set(r.el, r);
    const group = siblings.get(parent) ?? [];
    const status = r.el.classList.contains("failed") ? MessageStatus.FAILED
      : r.el.classList.contains("stopped") ? MessageStatus.STOPPED : MessageStatus.COMPLETE;
    for (const m of group) m.active = false;
    const existing = group.findIndex((m) => m.id === id);
    const fields = { ...end, content: r.text, status, active: true };
    if (existing >= 0) Object.assign(group[existing]!, fields);
    else group.push({ id, parentId: parent, ...fields } as Message);
    siblings.set(parent, group);
    shown.set(parent, existing >= 0 ? existing : group.length - 1);
    const meta = r.meta.textContent; // what the stream said (tokens and credits) stays
    refreshActions();
    r.meta.textContent = meta;
  };

  const submit = async () => {
    const text = input.value.trim();
    if (!text || current) return;
    const modelId = conversation?.modelId ?? modelSelect.value;
    if (!modelId) return;
    const limit = maxTokens.value ? Number(maxTokens.value) : 0;
    if (!conversation && (!Number.isSafeInteger(limit) || limit < 0)) return showNotice("Max reply tokens must be a positive whole number.");
    showNotice("");
    showNewestVersions();
    input.value = "";
    const [bubble, tools] = userBubble(text);
    messages.append(bubble!, tools!);
    const r = newReply();
    messages.append(r.el);
    scrollToEnd();
    current = { abort: new AbortController(), messageId: "", stopping: false };
    setBusy(true);
    try {
      if (!conversation) {
        const res = await chat.createConversation({ modelId, systemPrompt: systemPrompt.value.trim() });
        if (!res.conversation) throw new Error("the server returned no conversation");
        conversation = res.conversation;
        maxTokensFor.set(conversation.id, limit);
        // The new chat page becomes the conversation: back goes to where the person was before it.
        history.replaceState(null, "", `/c/${conversation.id}`);
        settings.hidden = true;
        setTitle(conversation);
      }
      const c = conversation;
      if (!c.lastMessagePreview) {
        c.lastMessagePreview = text;
        setTitle(c); // untitled: named by its first message until it gets a title
      }
      bumpConversation(c);
      settle(r, await follow(r, chat.sendMessage({ conversationId: c.id, text, clientMessageId: randomId(), maxOutputTokens: maxTokensFor.get(c.id) ?? 0 },
        { signal: current.abort.signal })));
      // Stored: the message can be edited now (its first version).
      const id = r.el.dataset.parent;
      if (id) {
        bubble!.dataset.id = id;
        bubble!.dataset.root = id;
        versions.set(id, [{ id, parentId: "", content: text, active: true } as Message]);
      }
    } catch (err) {
      r.el.classList.add("failed");
      r.meta.textContent = errorMessage(err);
    } finally {
      current = undefined;
      setBusy(false);
      refreshUserActions();
      input.focus();
    }
  };

  /** Edit: the last message's text in place, in an editor; Enter (or Send) resends it, Escape cancels. */
  const startEdit = (bubble: HTMLElement) => {
    if (current || !bubble.dataset.id) return;
    const textEl = bubble.querySelector<HTMLElement>(".text")!;
    const before = textEl.textContent ?? "";
    const field = h("textarea", { class: "edit-input", id: "edit-input", rows: 3, "aria-label": "Edit your message" });
    field.value = before;
    const save = h("button", { type: "button", class: "primary", "data-action": "save-edit" }, "Send");
    const cancel = h("button", { type: "button", class: "ghost", "data-action": "cancel-edit" }, "Cancel");
    const editor = h("div", { class: "editor" }, field, h("div", { class: "editor-actions" }, cancel, save));
    textEl.replaceWith(editor);
    bubble.classList.add("editing");
    refreshUserActions();
    field.focus();
    const close = () => {
      editor.replaceWith(textEl);
      bubble.classList.remove("editing");
      refreshUserActions();
    };
    const done = () => {
      const text = field.value.trim();
      if (!text) return field.focus();
      close();
      void resend(bubble, bubble.dataset.id!, text);
    };
    cancel.addEventListener("click", close);
    save.addEventListener("click", done);
    field.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") close();
      else if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        done();
      }
    });
  };

  /** Sends an edited message (EditMessage): a new version with its own reply; the old one stays behind the arrows. */
  const resend = async (bubble: HTMLElement, oldId: string, text: string) => {
    if (current || !conversation) return;
    const c = conversation;
    showNotice("");
    const textEl = bubble.querySelector<HTMLElement>(".text")!;
    const before = textEl.textContent ?? "";
    const oldReply = replyElOf(bubble);
    textEl.textContent = text;
    const fresh = newReply();
    if (oldReply) oldReply.replaceWith(fresh.el);
    else bubble.nextElementSibling!.after(fresh.el);
    scrollToEnd();
    current = { abort: new AbortController(), messageId: "", stopping: false };
    setBusy(true);
    try {
      const end = await follow(fresh, chat.editMessage({ messageId: oldId, text, clientMessageId: randomId(), maxOutputTokens: maxTokensFor.get(c.id) ?? 0 },
        { signal: current.abort.signal }));
      const id = fresh.el.dataset.parent;
      if (!id) {
        // Refused before it started (credits, limits): nothing changed on the server, so nothing changes here.
        textEl.textContent = before;
        if (oldReply) fresh.el.replaceWith(oldReply);
        else fresh.el.remove();
        showNotice(`Could not edit: ${fresh.meta.textContent ?? ""}`);
        return;
      }
      const root = bubble.dataset.root || oldId;
      const group = versions.get(root) ?? [];
      for (const v of group) v.active = false;
      for (const m of siblings.get(oldId) ?? []) m.active = false;
      group.push({ id, parentId: root, content: text, active: true } as Message);
      versions.set(root, group);
      shownVersion.set(root, group.length - 1);
      bubble.dataset.id = id;
      bubble.dataset.root = root;
      settle(fresh, end);
      c.lastMessagePreview = text;
      bumpConversation(c);
    } finally {
      current = undefined;
      setBusy(false);
      refreshUserActions();
    }
  };

  const regenerate = async (r: Reply, parentId: string) => {
    const group = siblings.get(parentId) ?? [];
    const target = group[shown.get(parentId) ?? group.length - 1] ?? group.at(-1);
    if (!target || current || !conversation) return;
    const fresh = newReply();
    fresh.el.dataset.parent = parentId;
    r.el.replaceWith(fresh.el);
    current = { abort: new AbortController(), messageId: "", stopping: false };
    setBusy(true);
    try {
      settle(fresh, await follow(fresh, chat.regenerateMessage({ messageId: target.id, maxOutputTokens: maxTokensFor.get(conversation.id) ?? 0 },
        { signal: current.abort.signal })));
    } catch (err) {
      fresh.el.classList.add("failed");
      fresh.meta.textContent = errorMessage(err);
    } finally {
      current = undefined;
      setBusy(false);
    }
  };

  /** Continues a reply that was still being written (e.g. before a reload): it keeps streaming here, billed once. */
  const resume = async (r: Reply, m: Message) => {
    if (current) return;
    current = { abort: new AbortController(), messageId: m.id, stopping: false };
    setBusy(true);
    try {
      settle(r, await follow(r, chat.resumeStream({ messageId: m.id, offset: 0n }, { signal: current.abort.signal })));
      deps.onCreditsChanged();
    } finally {
      current = undefined;
      setBusy(false);
    }
  };

  // ---- Routing --------------------------------------------------------------------------------------------------

  const reset = () => {
    current?.abort.abort();
    current = undefined;
    setBusy(false);
    generation++;
    siblings.clear();
    shown.clear();
    versions.clear();
    shownVersion.clear();
    olderToken = "";
    showNotice("");
    replace(messages, empty);
  };

  /** Shows what the URL names: a conversation (/c/<id>), or a new chat. */
  const route = () => {
    closeDrawer();
    const id = conversationFromPath();
    reset();
    if (!id) {
      conversation = undefined;
      settings.hidden = false;
      setTitle(undefined);
      markActive();
      const saved = localStorage.getItem(MODEL_KEY);
      if (saved && models.some((m) => m.id === saved)) modelSelect.value = saved;
      showModelInfo();
      return;
    }
    settings.hidden = true;
    const gen = generation;
    replace(messages, h("p", { class: "empty muted" }, "Loading…"));
    chat.getConversation({ conversationId: id, messagesPage: { pageSize: MESSAGES_PAGE } }).then(async (res) => {
      if (gen !== generation) return;
      conversation = res.conversation;
      replace(messages);
      if (!conversation) return;
      setTitle(conversation);
      markActive();
      await modelsLoaded;
      if (gen !== generation) return;
      modelSelect.value = conversation.modelId;
      showModelInfo();
      olderToken = res.messagesPage?.nextPageToken ?? "";
      const streaming = showMessages(res.messages, "append");
      if (res.messages.length === 0) messages.append(empty);
      scrollToEnd();
      // A first page that does not fill the view cannot be scrolled up: fetch the older one at once then.
      if (olderToken && messages.scrollHeight <= messages.clientHeight) void loadOlder();
      for (const { r, m } of streaming) void resume(r, m);
    }, (err: unknown) => {
      if (gen !== generation) return;
      conversation = undefined;
      replace(messages, h("p", { class: "empty form-error" }, err instanceof ConnectError && err.code === Code.NotFound
        ? "This conversation does not exist (it may have been deleted)." : `The conversation could not be loaded: ${errorMessage(err)}`));
    });
  };

  const navigate = (path: string, opts: { keepModel?: boolean } = {}) => {
    if (location.pathname !== path) history.pushState(null, "", path);
    const model = modelSelect.value;
    route();
    if (opts.keepModel) {
      modelSelect.value = model;
      showModelInfo();
    }
  };
  newChatButton.addEventListener("click", () => {
    navigate("/");
    input.focus();
  });
  // After a sign-out this view is gone (another replaces it): it stops following the URL.
  window.addEventListener("popstate", () => {
    if (panel.isConnected) route();
  });

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

  replace(sidebar, newChatButton, h("h2", { class: "muted" }, "Conversations"), listBox);
  void loadConversations(true);
  const panel = h("section", { class: "panel chat", id: "chat" },
    h("div", { class: "toolbar" }, toggle, title),
    h("div", { class: "toolbar model-row" }, h("label", {}, h("span", { class: "muted" }, "Model"), modelSelect), modelInfo),
    settings, notice, messages, form);
  const el = h("div", { class: "chat-layout" }, sidebar, h("div", { class: "drawer-shade", onclick: closeDrawer }), panel);
  /** After Luna could not be reached: the list, the models (if they never came) and the open conversation, again. */
  const reload = () => {
    if (!models.length) modelsLoaded = loadModels();
    void loadConversations(true);
    if (!current && panel.isConnected) route(); // a stream cut by the outage resumes (ResumeStream) from here
  };
  return { el, route, reload };
}
