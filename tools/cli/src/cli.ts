// `luna`: finds the command named by the leading words of argv, parses its arguments and runs it. Every failure ends
// as one line on stderr with exit code 1 (2 for usage mistakes).
import { commandHelp, parseCommandArgs, type CommandSpec } from "./args.js";
import { accountCommands } from "./commands/account.js";
import { adminCommands } from "./commands/admin.js";
import { chatCommands } from "./commands/chat.js";
import { conversationCommands } from "./commands/conversations.js";
import { creditCommands } from "./commands/credits.js";
import { imageCommands } from "./commands/image.js";
import { keyCommands } from "./commands/keys.js";
import { modelCommands } from "./commands/models.js";
import { createContext, DEFAULT_URL, loadSettings, notSignedIn, type Context } from "./context.js";
import { describeError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from "./errors.js";
import { writeLine, type Io } from "./io.js";
import { VERSION } from "./version.js";

/** Every command, in the order `luna --help` lists them. */
export const COMMANDS: CommandSpec<Context>[] = [
  ...accountCommands, ...creditCommands, ...modelCommands, ...chatCommands, ...conversationCommands, ...imageCommands, ...keyCommands,
  ...adminCommands,
];

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    "Usage: luna <command> [options]",
    "",
    "The command-line client of Luna: chat with open models, generate images, manage credits.",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)} ${c.summary}`),
    "",
    "Environment:",
    `  LUNA_URL              Server (default ${DEFAULT_URL}); --url overrides it`,
    "  LUNA_CONFIG_DIR       Where credentials.json is kept (default $XDG_CONFIG_HOME/luna or ~/.config/luna)",
    "  LUNA_HTTP_VERSION     1.1 (default) or 2",
    "  LUNA_TIMEOUT_SECONDS  Deadline of each request (default 30; streams have none)",
    "",
    "Run 'luna <command> --help' for a command's options.",
  ].join("\n");
}

/** The help of a command group ("admin", "admin invites"): its subcommands. */
function groupHelp(prefix: string, members: CommandSpec<Context>[]): string {
  const width = Math.max(...members.map((c) => c.name.length)) + 2;
  return [`Usage: luna ${prefix} <command> [options]`, "", "Commands:", ...members.map((c) => `  ${c.name.padEnd(width)} ${c.summary}`)].join("\n");
}

/** Finds the command whose name is the longest prefix of the leading words. */
function findCommand(words: string[]): { spec?: CommandSpec<Context>; used: number } {
  let best: { spec?: CommandSpec<Context>; used: number } = { used: 0 };
  for (const spec of COMMANDS) {
    const parts = spec.name.split(" ");
    if (parts.length > best.used && parts.every((p, i) => words[i] === p)) best = { spec, used: parts.length };
  }
  return best;
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function run(argv: string[], io: Io): Promise<number> {
  let url: string | undefined;
  let signedIn = false;
  let signInHint: (() => string) | undefined;
  try {
    const args = [...argv];
    // `--url` may also come before the command: move it behind, where the command's own parser reads it.
    const moved: string[] = [];
    while (args[0] === "--url" || args[0]?.startsWith("--url=")) {
      const a = args.shift()!;
      if (a !== "--url") moved.push(a);
      else if (args.length > 0) moved.push(`--url=${args.shift()}`);
      else throw new UsageError("--url needs a value");
    }
    if (args[0] === "--version" || args[0] === "-V") return (writeLine(io.stdout, VERSION), EXIT_OK);
    if (args[0] === "help") {
      // `luna help admin grant` = `luna admin grant --help`
      args.shift();
      args.push("--help");
    }
    if (args[0] === "--help" || args[0] === "-h") return (writeLine(io.stdout, mainHelp()), EXIT_OK);
    args.push(...moved);
    const words: string[] = [];
    for (const a of args) {
      if (a.startsWith("-")) break;
      words.push(a);
    }
    const { spec, used } = findCommand(words);
    if (!spec) {
      const group = words.join(" ");
      const members = words.length > 0 ? COMMANDS.filter((c) => c.name.startsWith(`${group} `)) : [];
      if (members.length > 0) {
        const wantsHelp = args.includes("--help") || args.includes("-h");
        writeLine(wantsHelp ? io.stdout : io.stderr, groupHelp(group, members));
        return wantsHelp ? EXIT_OK : EXIT_USAGE;
      }
      if (words.length === 0) {
        // `luna --bogus`: name the flag rather than only printing the help.
        if (args[0]?.startsWith("-")) throw new UsageError(`unknown option ${args[0].split("=")[0]}`);
        writeLine(io.stderr, mainHelp());
        return EXIT_USAGE;
      }
      throw new UsageError(`unknown command "${words.join(" ")}"`);
    }
    const parsed = parseCommandArgs(spec, args.slice(used));
    if (parsed.options.help) {
      writeLine(io.stdout, commandHelp(spec));
      return EXIT_OK;
    }
    const settings = loadSettings(io.env, typeof parsed.options.url === "string" ? parsed.options.url : undefined);
    url = settings.url;
    const ctx = createContext(io, settings);
    signedIn = ctx.clients.session.current !== undefined;
    signInHint = () => notSignedIn(settings.url, ctx.store);
    return (await spec.run(ctx, parsed)) ?? EXIT_OK;
  } catch (err) {
    const message = describeError(err, { url: url ?? io.env.LUNA_URL ?? DEFAULT_URL, signedIn,
      notSignedIn: signInHint?.() });
    if (err instanceof UsageError) {
      writeLine(io.stderr, `luna: ${message} (see 'luna ${err.command ? `${err.command} ` : ""}--help')`);
      return EXIT_USAGE;
    }
    writeLine(io.stderr, `luna: ${message}`);
    return EXIT_FAILURE;
  }
}
