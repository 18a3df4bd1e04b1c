// Personal API keys (issue 22): for OpenAI-compatible clients (the openai SDKs, the Vercel AI SDK, Open WebUI), which
// send `Authorization: Bearer luna_sk_...` to Luna's `/v1/*`. Managing keys needs a signed-in session.
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { AuthService } from "@luna/contracts/luna/auth/v1/auth_service_pb.js";
import type { ApiKey } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { durationArg, str, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { UsageError } from "../errors.js";
import { dateTime, table } from "../format.js";

function keyState(k: ApiKey): string {
  if (k.revokedAt) return "revoked";
  if (k.expiresAt && Number(k.expiresAt.seconds) * 1000 < Date.now()) return "expired";
  return "active";
}

export const keyCommands: CommandSpec<Context>[] = [
  {
    name: "keys create",
    summary: "Create a personal API key for OpenAI-compatible clients (printed once).",
    details: [
      "Example: luna keys create \"my laptop\" --expires 90d",
      "Then: OPENAI_BASE_URL=<server>/v1 OPENAI_API_KEY=<the key> (see the README: OpenAI-compatible API).",
    ].join("\n"),
    positionals: [{ name: "<name>", description: "What the key is for (1-64 characters)" }],
    options: { expires: { type: "string", value: "DURATION", description: "Valid for e.g. 12h, 90d, 52w (default: never expires)" } },
    async run(ctx, args) {
      const cmd = "keys create";
      const [name] = args.positionals as [string];
      if (name.trim() === "") throw new UsageError("<name> must not be empty", cmd);
      const expires = str(args, "expires");
      const expiresIn = expires ? create(DurationSchema, { seconds: BigInt(durationArg(expires, "--expires", cmd)) }) : undefined;
      ctx.requireSession();
      const res = await ctx.clients.client(AuthService).createApiKey({ name, expiresIn });
      const key = res.apiKey!;
      ctx.out(key.key);
      ctx.note(`API key "${key.name}" (${key.id})${key.expiresAt ? `, expires ${dateTime(key.expiresAt)}` : ""}. It is shown only now.`);
    },
  },
  {
    name: "keys list",
    summary: "List your API keys (only their first characters).",
    options: { all: { type: "boolean", description: "Also list revoked and expired keys" } },
    async run(ctx, args) {
      ctx.requireSession();
      const res = await ctx.clients.client(AuthService).listApiKeys({ includeInactive: args.options.all === true });
      if (res.apiKeys.length === 0) return ctx.out("No API keys.");
      const rows = res.apiKeys.map((k) => [k.id, `${k.keyHint}…`, k.name, keyState(k), k.expiresAt ? dateTime(k.expiresAt) : "never",
        k.lastUsedAt ? dateTime(k.lastUsedAt) : "never", dateTime(k.createdAt)]);
      for (const line of table(["ID", "KEY", "NAME", "STATE", "EXPIRES", "LAST USED", "CREATED"], rows)) ctx.out(line);
    },
  },
  {
    name: "keys revoke",
    summary: "Revoke one of your API keys (it stops working within seconds).",
    positionals: [{ name: "<id>", description: "The key's id (luna keys list)" }],
    async run(ctx, args) {
      const [id] = args.positionals as [string];
      ctx.requireSession();
      const res = await ctx.clients.client(AuthService).revokeApiKey({ apiKeyId: id });
      ctx.out(`Revoked API key "${res.apiKey!.name}" (${res.apiKey!.keyHint}…).`);
    },
  },
];
