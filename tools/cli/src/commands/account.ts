// Account commands: signup, login, logout, me.
import { Code, ConnectError } from "@connectrpc/connect";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import type { User } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { str, type CommandSpec } from "../args.js";
import { roleName } from "../client.js";
import type { Context } from "../context.js";
import { CliError, describeError } from "../errors.js";
import { dateTime } from "../format.js";
import { passwordFrom, valueOrPrompt } from "../prompt.js";

const passwordStdin = { type: "boolean", description: "Read the password from the first line of stdin (for scripts)" } as const;

/**
 * Sign-in and sign-up carry no token, so an UNAUTHENTICATED answer is the server's verdict on the credentials
 * ("email or password is incorrect"), never "not signed in": pass it on as it is.
 */
async function credentialsCall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) {
      throw new CliError(err.rawMessage);
    }
    throw err;
  }
}

function signedInLine(user: User | undefined): string {
  return user ? `Signed in as ${user.email} (${roleName(user.role)}).` : "Signed in.";
}

export const accountCommands: CommandSpec<Context>[] = [
  {
    name: "signup",
    summary: "Create an account with an invite code and sign in.",
    details: "Missing values are asked for on a terminal; the password is never echoed.\n" +
      "Example: luna signup --email ann@example.com --invite ABCDE-FGHIJ-KLMNP-QRSTV --name Ann",
    options: {
      email: { type: "string", value: "EMAIL", description: "Your email address" },
      invite: { type: "string", value: "CODE", description: "The invite code you were given" },
      name: { type: "string", value: "NAME", description: "Display name (1-64 characters)" },
      "password-stdin": passwordStdin,
    },
    async run(ctx, args) {
      const email = await valueOrPrompt(ctx.io, str(args, "email"), "email", "Email: ", "signup");
      const inviteCode = await valueOrPrompt(ctx.io, str(args, "invite"), "invite", "Invite code: ", "signup");
      const displayName = await valueOrPrompt(ctx.io, str(args, "name"), "name", "Display name: ", "signup");
      const password = await passwordFrom(ctx.io, args.options["password-stdin"] === true, "signup", true);
      const res = await credentialsCall(() => ctx.clients.client(AuthService).signUp({ email, password, inviteCode, displayName }));
      ctx.clients.session.save(res.tokens, res.user);
      ctx.out(`Welcome, ${res.user?.displayName ?? displayName}! ${signedInLine(res.user)}`);
    },
  },
  {
    name: "login",
    summary: "Sign in with email and password.",
    details: "Example: echo \"$PASSWORD\" | luna login --email ann@example.com --password-stdin",
    options: {
      email: { type: "string", value: "EMAIL", description: "Your email address" },
      "password-stdin": passwordStdin,
    },
    async run(ctx, args) {
      const email = await valueOrPrompt(ctx.io, str(args, "email"), "email", "Email: ", "login");
      const password = await passwordFrom(ctx.io, args.options["password-stdin"] === true, "login");
      const res = await credentialsCall(() => ctx.clients.client(AuthService).signIn({ email, password }));
      ctx.clients.session.save(res.tokens, res.user);
      ctx.out(signedInLine(res.user));
    },
  },
  {
    name: "logout",
    summary: "End this session on the server and forget its tokens.",
    details: "With --everywhere, every session of the account ends (other machines and browsers too: their tokens are\n" +
      "refused within seconds) and this one is forgotten.",
    options: {
      everywhere: { type: "boolean", description: "End every session of the account, on every device" },
    },
    async run(ctx, args) {
      const session = ctx.clients.session.current;
      if (!session) {
        ctx.out(`Not signed in to ${ctx.settings.url}.`);
        return;
      }
      if (args.options.everywhere === true) {
        // Needs this session's access token, so the server is asked first; the tokens are forgotten either way.
        try {
          const { sessionsEnded } = await ctx.clients.client(AuthService).signOutEverywhere({});
          ctx.out(`Signed out everywhere (${sessionsEnded} session${sessionsEnded === 1 ? "" : "s"} ended).`);
        } finally {
          ctx.clients.session.forget();
        }
        return;
      }
      // The tokens are forgotten even when the server cannot be told: logging out must always work locally.
      ctx.clients.session.forget();
      try {
        await ctx.clients.client(AuthService).signOut({ refreshToken: session.refreshToken });
        ctx.out("Signed out.");
      } catch (err) {
        ctx.out("Signed out on this machine.");
        ctx.note(`luna: warning: the server could not end the session: ${describeError(err, { url: ctx.settings.url, signedIn: false })}`);
      }
    },
  },
  {
    name: "me",
    summary: "Show the signed-in account.",
    async run(ctx) {
      ctx.requireSession();
      const { user } = await ctx.clients.client(AuthService).getMe({});
      if (!user) return;
      ctx.out(`${user.displayName} <${user.email}>`);
      ctx.out(`  id       ${user.id}`);
      ctx.out(`  role     ${roleName(user.role)}${user.disabled ? " (disabled)" : ""}`);
      ctx.out(`  since    ${dateTime(user.createdAt)}`);
      ctx.out(`  server   ${ctx.settings.url}`);
    },
  },
];
