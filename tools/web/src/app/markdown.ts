// Replies as markdown, rendered safely: marked parses (GitHub flavour), any raw HTML in the reply is shown as text,
// DOMPurify sanitises what marked produced, highlight.js colours fenced code, and links open in a new tab.
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import { Marked } from "marked";
import { h } from "./dom.js";

// The languages models write most; others are shown uncoloured (the full set would triple the bundle).
for (const [name, lang] of Object.entries({ bash, css, go, javascript, json, python, rust, sql, typescript, xml, yaml })) {
  hljs.registerLanguage(name, lang);
}
hljs.registerAliases(["sh", "shell", "zsh"], { languageName: "bash" });
hljs.registerAliases(["js", "jsx", "mjs"], { languageName: "javascript" });
hljs.registerAliases(["ts", "tsx"], { languageName: "typescript" });
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["yml"], { languageName: "yaml" });
hljs.registerAliases(["rs"], { languageName: "rust" });

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  renderer: {
    // Never raw HTML from the model: a tag in a reply is shown as the text it is.
    html: ({ text }) => escapeHtml(text),
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Copies text to the clipboard and says so on the button for a moment. */
export function copyButton(label: string, text: () => string, extra: Record<string, string> = {}): HTMLButtonElement {
  const button = h("button", { type: "button", class: "copy ghost", ...extra }, label);
  button.addEventListener("click", () => {
    navigator.clipboard.writeText(text()).then(() => {
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1500);
    }, () => (button.textContent = "Copy failed"));
  });
  return button;
}

/** Renders markdown into `el` (replacing its content): sanitised HTML, highlighted code blocks with a copy button. */
export function renderMarkdown(el: HTMLElement, source: string): void {
  const html = marked.parse(source, { async: false });
  el.innerHTML = DOMPurify.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form", "input", "button", "img"] });
  for (const code of el.querySelectorAll<HTMLElement>("pre > code")) {
    const text = (code.textContent ?? "").replace(/\n$/, ""); // marked ends a fence's text with a newline
    const lang = /\blanguage-([\w+-]+)/.exec(code.className)?.[1];
    if (lang && hljs.getLanguage(lang)) {
      code.innerHTML = hljs.highlight(text, { language: lang, ignoreIllegals: true }).value; // hljs escapes the text
      code.classList.add("hljs");
    }
    const pre = code.parentElement!;
    const bar = h("div", { class: "code-bar" }, h("span", { class: "muted" }, lang ?? "text"), copyButton("Copy code", () => text, { "data-copy": "code" }));
    pre.replaceWith(h("div", { class: "code-block" }, bar, pre.cloneNode(true)));
  }
  for (const table of el.querySelectorAll("table")) table.replaceWith(h("div", { class: "table-wrap" }, table.cloneNode(true)));
}
