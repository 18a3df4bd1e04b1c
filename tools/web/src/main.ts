// The Luna web client: sign in (or up with an invite), then chat (with the conversations sidebar), images and the
// account's usage, with the credit balance in the header.
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { clearSession, client, errorMessage, loadSession, SESSION_STORAGE_KEY, useConnectivity, whenSessionEnds } from "./app/api.js";
import { createConnectivity } from "./app/connectivity.js";
import { accountView } from "./app/account-view.js";
import { authView } from "./app/auth-view.js";
import { chatView } from "./app/chat-view.js";
import { count, h, replace } from "./app/dom.js";
import { imageView } from "./app/image-view.js";
import { keysView } from "./app/keys-view.js";

const root = document.getElementById("app")!;
/** How many times (a second apart) an empty new account's balance is checked again for the sign-up grant. */
const SIGNUP_GRANT_CHECKS = 10;

/** Runs when the tab becomes visible again (refreshes the balance while signed in). */
let onVisible: (() => void) | undefined;
/** Reloads what the signed-in page shows (after Luna could not be reached for a while). */
let reloadView: (() => void) | undefined;

// Luna unreachable: one banner for the whole page, probes with backoff, and everything shown is reloaded once Luna
// answers again. Signed in, the probe reads the balance (which the page wants anyway); signed out, the page itself.
const offlineBanner = h("div", { class: "offline-banner", id: "offline-banner", role: "status", hidden: true }, "Luna can't be reached — retrying…");
document.body.prepend(offlineBanner);
useConnectivity(createConnectivity({
  probe: async () => {
    if (loadSession()) return client(BillingService).getBalance({});
    const res = await fetch("/", { method: "HEAD", cache: "no-store" });
    if (res.status >= 502 && res.status <= 504) throw new TypeError(`Failed to fetch (HTTP ${res.status})`);
  },
  onDown: () => (offlineBanner.hidden = false),
  onUp: () => {
    offlineBanner.hidden = true;
    reloadView?.();
  },
}));
// A click outside the account menu closes it.
document.addEventListener("click", (ev) => {
  for (const menu of document.querySelectorAll<HTMLDetailsElement>("details.account-menu[open]")) {
    if (!menu.contains(ev.target as Node)) menu.open = false;
  }
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") onVisible?.();
});
// Signing out (or in) in another tab: this tab follows at once, instead of failing its next call.
window.addEventListener("storage", (ev) => {
  if (ev.key !== SESSION_STORAGE_KEY) return;
  if (!ev.newValue && document.body.classList.contains("signed-in")) showAuth();
  else if (ev.newValue && !document.body.classList.contains("signed-in")) showApp();
});

function showAuth(): void {
  onVisible = undefined;
  reloadView = undefined;
  document.body.classList.remove("signed-in", "drawer-open");
  replace(root, authView(showApp));
}

function showApp(): void {
  const session = loadSession();
  if (!session) return showAuth();
  document.body.classList.add("signed-in");
  const balance = h("span", { class: "balance", id: "balance", title: "Credits available" }, "…");
  const setBalance = (available: bigint) => (balance.textContent = count(available, "credit"));
  const refreshBalance = () =>
    client(BillingService).getBalance({}).then((b) => (setBalance(b.available), b.balance), () => ((balance.textContent = "— credits"), -1n));
  const who = h("span", { class: "who muted" }, session.email);
  const signOut = h("button", { type: "button", class: "ghost", id: "sign-out" }, "Sign out");
  const doSignOut = () => {
    const s = loadSession();
    clearSession();
    if (s) void client(AuthService).signOut({ refreshToken: s.refreshToken }).catch(() => undefined);
    history.replaceState(null, "", "/");
    showAuth();
  };
  // The account menu (the name in the top bar; an arrow on phones): sign out (phones), sign out everywhere.
  const everywhere = h("button", { type: "button", class: "ghost danger-text", id: "sign-out-everywhere", role: "menuitem" }, "Sign out everywhere");
  const menuError = h("p", { class: "form-error menu-error", role: "alert", hidden: true });
  const accountMenu = h("details", { class: "account-menu", id: "account-menu" },
    h("summary", { "aria-label": "Account", title: "Account" }, who, h("span", { class: "menu-caret", "aria-hidden": "true" }, "▾")),
    h("div", { class: "menu", role: "menu" },
      h("p", { class: "muted menu-email" }, session.email),
      // Phones have no room for the top bar's Sign out: it is here.
      h("button", { type: "button", class: "ghost menu-sign-out", "data-action": "menu-sign-out", role: "menuitem", onclick: doSignOut }, "Sign out"),
      everywhere,
      h("p", { class: "muted menu-hint" }, "Ends every session: this one and every other device or browser."),
      menuError));
  everywhere.addEventListener("click", () => {
    if (!confirm("Sign out everywhere? Every device and browser signed in to this account (this one too) will have to sign in again.")) return;
    everywhere.disabled = true;
    menuError.hidden = true;
    client(AuthService).signOutEverywhere({}).then(() => {
      clearSession(); // other tabs of this browser follow through the storage event; other devices at their next call
      history.replaceState(null, "", "/");
      showAuth();
    }, (err: unknown) => {
      everywhere.disabled = false;
      menuError.textContent = `Could not sign out everywhere: ${errorMessage(err)}`;
      menuError.hidden = false;
    });
  });
  signOut.addEventListener("click", doSignOut);

  const chat = chatView({ onBalance: setBalance, onCreditsChanged: () => void refreshBalance() });
  const images = imageView({ onCreditsChanged: () => void refreshBalance() });
  const account = accountView();
  // API keys live on the account page, below the usage.
  const keys = keysView();
  account.el.append(keys.el);
  const tabs = h("nav", { class: "tabs", role: "tablist" });
  const panels = { chat: chat.el, images: images.el, account: account.el };
  const select = (name: keyof typeof panels) => {
    for (const [key, el] of Object.entries(panels)) el.hidden = key !== name;
    for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-selected", String(b.dataset.tab === name));
    if (name === "images") images.refresh();
    if (name === "account") {
      account.refresh();
      keys.refresh();
      void refreshBalance();
    }
  };
  for (const [name, label] of [["chat", "Chat"], ["images", "Images"], ["account", "Usage"]] as const) {
    tabs.append(h("button", { type: "button", role: "tab", "data-tab": name, id: `tab-${name}`, onclick: () => select(name) }, label));
  }

  replace(root,
    h("header", { class: "topbar" }, h("strong", { class: "logo" }, "Luna"), tabs, h("div", { class: "spacer" }), balance, accountMenu, signOut),
    h("main", {}, chat.el, images.el, account.el));
  select("chat");
  chat.route();
  // A new account's credits arrive a moment after sign-up (billing grants them on the user.created event).
  void (async () => {
    for (let i = 0; i < SIGNUP_GRANT_CHECKS && (await refreshBalance()) === 0n; i++) await new Promise((r) => setTimeout(r, 1000));
  })();
  onVisible = () => void refreshBalance();
  reloadView = () => {
    void refreshBalance();
    chat.reload();
    if (!images.el.hidden) images.refresh();
    if (!account.el.hidden) {
      account.refresh();
      keys.refresh();
    }
  };
  // The name in the header comes from the server: also confirms the stored session still works.
  client(AuthService).getMe({}).then((res) => (who.textContent = res.user?.displayName || session.email), () => undefined);
}

whenSessionEnds(showAuth);
showApp();
