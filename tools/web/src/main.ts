// The Luna web client: sign in (or up with an invite), then chat (with the conversations sidebar), images and the
// account's usage, with the credit balance in the header.
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { clearSession, client, loadSession, SESSION_STORAGE_KEY, whenSessionEnds } from "./app/api.js";
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
  signOut.addEventListener("click", () => {
    const s = loadSession();
    clearSession();
    if (s) void client(AuthService).signOut({ refreshToken: s.refreshToken }).catch(() => undefined);
    history.replaceState(null, "", "/");
    showAuth();
  });

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
    h("header", { class: "topbar" }, h("strong", { class: "logo" }, "Luna"), tabs, h("div", { class: "spacer" }), balance, who, signOut),
    h("main", {}, chat.el, images.el, account.el));
  select("chat");
  chat.route();
  // A new account's credits arrive a moment after sign-up (billing grants them on the user.created event).
  void (async () => {
    for (let i = 0; i < SIGNUP_GRANT_CHECKS && (await refreshBalance()) === 0n; i++) await new Promise((r) => setTimeout(r, 1000));
  })();
  onVisible = () => void refreshBalance();
  // The name in the header comes from the server: also confirms the stored session still works.
  client(AuthService).getMe({}).then((res) => (who.textContent = res.user?.displayName || session.email), () => undefined);
}

whenSessionEnds(showAuth);
showApp();
