// A tiny DOM builder: h("button", { class: "primary", onclick }, "Send").

type Attrs = Record<string, string | number | boolean | undefined | ((ev: Event) => void)>;
type Child = Node | string | null | undefined | false;

/** Creates an element with attributes (`on*` functions become listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  el.append(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
  return el;
}

/** Replaces an element's children. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren(...children.filter((c): c is Node | string => c !== null && c !== undefined && c !== false));
}

/** A random id for idempotency keys (crypto.randomUUID needs a secure context; plain-http LAN hosts have none). */
export function randomId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** "1 credit", "2 credits", "1,000 tokens". */
export function count(n: bigint | number, noun: string): string {
  return `${formatCredits(n)} ${noun}${Number(n) === 1 ? "" : "s"}`;
}

/** "1,000" */
export function formatCredits(n: bigint | number): string {
  return n.toLocaleString("en-US");
}

/** "about 42 s" for what is left of an expected wait, "any moment now" once it ran over (a model waking from zero). */
export function aboutSeconds(remainingMs: number): string {
  return remainingMs > 0 ? `about ${Math.ceil(remainingMs / 1000)} s` : "any moment now";
}
