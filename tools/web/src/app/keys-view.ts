// API keys (issue 22): create a personal key for OpenAI-compatible clients (shown once, with a copy button), see the
// keys (first characters, expiry, last use) and revoke them. A separate component: main.ts places it on the
// account page.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { ApiKey } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { client, errorMessage } from "./api.js";
import { h, replace } from "./dom.js";
import { copyButton } from "./markdown.js";

const DAY_S = 86_400;
const EXPIRY_CHOICES: ReadonlyArray<[string, number]> = [["Never", 0], ["30 days", 30], ["90 days", 90], ["1 year", 365]];

function date(t: Timestamp | undefined, none: string): string {
  return t ? timestampDate(t).toLocaleDateString(undefined, { dateStyle: "medium" }) : none;
}

function state(k: ApiKey): string {
  if (k.revokedAt) return "revoked";
  if (k.expiresAt && timestampDate(k.expiresAt).getTime() < Date.now()) return "expired";
  return "active";
}

export function keysView(): { el: HTMLElement; refresh(): void } {
  const rows = h("tbody", { id: "api-keys" });
  const status = h("p", { class: "muted", id: "api-keys-status" });
  const created = h("div", { class: "new-key", id: "new-key", hidden: true });
  const name = h("input", { type: "text", id: "api-key-name", placeholder: "What is it for? (e.g. my laptop)", maxlength: 64, required: true });
  const expiry = h("select", { id: "api-key-expiry", "aria-label": "Expires" },
    ...EXPIRY_CHOICES.map(([label, days]) => h("option", { value: String(days) }, label)));
  const submit = h("button", { type: "submit", class: "primary", id: "api-key-create" }, "Create key");

  const load = async () => {
    try {
      const res = await client(AuthService).listApiKeys({});
      replace(rows, ...res.apiKeys.map((k) => {
        const revoke = h("button", { type: "button", class: "ghost", "data-revoke": k.id }, "Revoke");
        revoke.addEventListener("click", () => {
          if (!confirm(`Revoke the API key "${k.name}"? Clients using it stop working within seconds.`)) return;
          revoke.disabled = true;
          client(AuthService).revokeApiKey({ apiKeyId: k.id }).then(() => void load(),
            (err: unknown) => ((status.textContent = `Could not revoke the key: ${errorMessage(err)}`), (revoke.disabled = false)));
        });
        return h("tr", { "data-key": k.id },
          h("td", {}, k.name), h("td", {}, h("code", {}, `${k.keyHint}…`)), h("td", {}, state(k)),
          h("td", {}, date(k.createdAt, "")), h("td", {}, date(k.expiresAt, "never")), h("td", {}, date(k.lastUsedAt, "never")), h("td", {}, revoke));
      }));
      status.textContent = res.apiKeys.length ? "" : "No API keys yet.";
    } catch (err) {
      status.textContent = `The API keys could not be loaded: ${errorMessage(err)}`;
    }
  };

  const form = h("form", { class: "key-form", id: "api-key-form" }, name, expiry, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const days = Number(expiry.value);
    submit.disabled = true;
    client(AuthService).createApiKey({ name: name.value, expiresIn: days ? create(DurationSchema, { seconds: BigInt(days * DAY_S) }) : undefined })
      .then((res) => {
        const key = res.apiKey!.key;
        replace(created,
          h("p", {}, "Your new key — copy it now, it is shown only once:"),
          h("code", { id: "new-key-value" }, key), copyButton("Copy key", () => key, { id: "new-key-copy" }),
          h("p", { class: "muted" }, `Use it with any OpenAI-compatible client: base URL ${location.origin}/v1, API key as above.`));
        created.hidden = false;
        name.value = "";
        status.textContent = "";
        void load();
      }, (err: unknown) => (status.textContent = `Could not create the key: ${errorMessage(err)}`))
      .finally(() => (submit.disabled = false));
  });

  const el = h("section", { class: "panel api-keys", id: "keys" },
    h("h2", {}, "API keys"),
    h("p", { class: "muted" }, "For OpenAI-compatible clients (the openai SDKs, the Vercel AI SDK, Open WebUI). A key spends your credits."),
    form, created,
    h("div", { class: "table-wrap" }, h("table", { class: "ledger" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Key"), h("th", {}, "State"), h("th", {}, "Created"), h("th", {}, "Expires"),
        h("th", {}, "Last used"), h("th", {}, ""))), rows)),
    status);
  return { el, refresh: () => void load() };
}
