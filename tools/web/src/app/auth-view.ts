// Sign in, or sign up with an invite code.
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import { client, errorMessage, saveSession } from "./api.js";
import { h } from "./dom.js";

/** Renders the sign-in / sign-up card; calls `onSignedIn` once a session is stored. */
export function authView(onSignedIn: () => void): HTMLElement {
  let mode: "signin" | "signup" = new URLSearchParams(location.search).has("invite") ? "signup" : "signin";
  const error = h("p", { class: "form-error", role: "alert" });
  const field = (label: string, input: HTMLInputElement) => h("label", {}, h("span", {}, label), input);
  const invite = h("input", { name: "invite", autocomplete: "off", placeholder: "XXXXX-XXXXX-XXXXX-XXXXX",
    value: new URLSearchParams(location.search).get("invite") ?? "" });
  const name = h("input", { name: "name", autocomplete: "nickname", maxlength: 64 });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const password = h("input", { name: "password", type: "password", required: true, minlength: 8 });
  const submit = h("button", { type: "submit", class: "primary" });
  const signupOnly = [field("Invite code", invite), field("Display name", name)];
  const toggle = h("button", { type: "button", class: "link" });

  const render = () => {
    password.autocomplete = mode === "signup" ? "new-password" : "current-password";
    for (const el of signupOnly) el.hidden = mode !== "signup";
    invite.required = name.required = mode === "signup";
    submit.textContent = mode === "signup" ? "Create account" : "Sign in";
    toggle.textContent = mode === "signup" ? "I have an account — sign in" : "I have an invite — sign up";
    error.textContent = "";
  };
  toggle.addEventListener("click", () => {
    mode = mode === "signup" ? "signin" : "signup";
    render();
  });

  const form = h("form", { class: "card auth", id: "auth" },
    h("h1", {}, "Luna"),
    h("p", { class: "muted" }, "Open models, your images. Invite-only beta."),
    ...signupOnly, field("Email", email), field("Password", password), error, submit, toggle);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    const auth = client(AuthService);
    const call = mode === "signup"
      ? auth.signUp({ email: email.value, password: password.value, inviteCode: invite.value, displayName: name.value })
      : auth.signIn({ email: email.value, password: password.value });
    call.then((res) => {
      saveSession(res.tokens, res.user?.email ?? email.value);
      history.replaceState(null, "", location.pathname);
      onSignedIn();
    }, (err: unknown) => {
      error.textContent = errorMessage(err);
    }).finally(() => (submit.disabled = false));
  });
  render();
  return form;
}
