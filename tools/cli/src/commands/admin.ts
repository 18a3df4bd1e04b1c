// Admin commands (role admin): invites, credit grants, the model catalog, accounts, the audit log.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { AuthAdminService, type AuditEvent } from "@luna/contracts/luna/auth/v1/auth_admin_service_pb.js";
import type { Invite, User } from "@luna/contracts/luna/auth/v1/auth_pb.js";
import { BillingAdminService } from "@luna/contracts/luna/billing/v1/billing_admin_service_pb.js";
import { ModelAdminService } from "@luna/contracts/luna/models/v1/model_admin_service_pb.js";
import { durationArg, intArg, str, type CommandSpec } from "../args.js";
import { roleName } from "../client.js";
import type { Context } from "../context.js";
import { CliError, UsageError } from "../errors.js";
import { clip, count, credits, dateTime, table } from "../format.js";
import { modelRows } from "./models.js";
import { collectPages } from "./pages.js";

const DEFAULT_LIST_LIMIT = 50;
const limitOption = { type: "string", value: "N", description: `How many to list (default ${DEFAULT_LIST_LIMIT})` } as const;

function inviteState(i: Invite): string {
  if (i.revokedAt) return "revoked";
  if (i.expiresAt && Number(i.expiresAt.seconds) * 1000 < Date.now()) return "expired";
  if (i.usesLeft <= 0) return "used up";
  return "active";
}

/** A user id, or an email resolved to its account's id. */
async function resolveUser(ctx: Context, who: string): Promise<User | string> {
  if (!who.includes("@")) return who;
  const email = who.trim().toLowerCase();
  const res = await ctx.clients.client(AuthAdminService).listUsers({ emailPrefix: email, page: { pageSize: 100 } });
  const user = res.users.find((u) => u.email === email);
  if (!user) throw new CliError(`no account with email ${email}`);
  return user;
}

/** Reads an audit event's details: the kinds other services record get a sentence, the rest their JSON. */
export function auditDetails(e: Pick<AuditEvent, "kind" | "detailsJson">): { subject?: string; text: string } {
  let d: Record<string, unknown>;
  try {
    d = JSON.parse(e.detailsJson || "{}") as Record<string, unknown>;
  } catch {
    return { text: e.detailsJson };
  }
  const s = (k: string): string => (typeof d[k] === "string" ? d[k] : "");
  const amount = (): string => (/^\d+$/.test(s("amount")) ? credits(BigInt(s("amount"))) : s("amount"));
  if (e.kind === "credits.granted") return { text: `+${amount()} credits: ${s("reason")}` };
  if (e.kind === "credits.reversed") return { text: `-${amount()} credits (reversed ${s("reversedTransferId")}): ${s("reason")}` };
  if (/^(model|workflow)\./.test(e.kind) && s("entryId")) {
    const fields = Array.isArray(d.changedFields) ? d.changedFields.join(", ") : "";
    const what = e.kind.endsWith(".created") || e.kind.endsWith(".updated") ? fields : s("reason");
    return { subject: `${s("entryType")}:${s("entryId")}`, text: `v${s("version")}${what ? ` ${what}` : ""}` };
  }
  return { text: e.detailsJson === "{}" ? "" : e.detailsJson };
}

export const adminCommands: CommandSpec<Context>[] = [
  {
    name: "admin invites create",
    summary: "Create invite codes (printed once, one per line).",
    details: "Example: luna admin invites create --count 5 --uses 1 --expires 7d --note \"beta wave 2\"",
    options: {
      count: { type: "string", value: "N", description: "How many codes, 1-100 (default 1)" },
      uses: { type: "string", value: "N", description: "Sign-ups each code admits, 1-10000 (default 1)" },
      expires: { type: "string", value: "DURATION", description: "Valid for e.g. 12h, 7d, 2w (default: never expires)" },
      note: { type: "string", value: "TEXT", description: "Who the codes are for (up to 200 characters)" },
    },
    async run(ctx, args) {
      const cmd = "admin invites create";
      const count = intArg(args.options.count, "--count", { min: 1, max: 100, default: 1 }, cmd);
      const usesPerCode = intArg(args.options.uses, "--uses", { min: 1, max: 10_000, default: 1 }, cmd);
      const expires = str(args, "expires");
      const expiresIn = expires ? create(DurationSchema, { seconds: BigInt(durationArg(expires, "--expires", cmd)) }) : undefined;
      ctx.requireSession();
      const res = await ctx.clients.client(AuthAdminService).createInvites({ count, usesPerCode, expiresIn, note: str(args, "note") ?? "" });
      for (const invite of res.invites) ctx.out(invite.code);
      const expiry = res.invites[0]?.expiresAt ? `, expire ${dateTime(res.invites[0].expiresAt)}` : "";
      ctx.note(`${res.invites.length} invite code(s), ${usesPerCode} use(s) each${expiry}. They are shown only now.`);
    },
  },
  {
    name: "admin invites list",
    summary: "List invites, newest first (codes are not shown again, only their first characters).",
    options: { all: { type: "boolean", description: "Also list revoked, expired and used-up invites" }, limit: limitOption },
    async run(ctx, args) {
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_LIST_LIMIT }, "admin invites list");
      ctx.requireSession();
      const auth = ctx.clients.client(AuthAdminService);
      const invites = await collectPages<Invite>(limit, async (page) => {
        const res = await auth.listInvites({ page, includeInactive: args.options.all === true });
        return { items: res.invites, next: res.page?.nextPageToken };
      });
      if (invites.length === 0) return ctx.out("No invites.");
      const rows = invites.map((i) => [i.id, `${i.codeHint}…`, inviteState(i), `${i.usesLeft}/${i.usesTotal}`,
        i.expiresAt ? dateTime(i.expiresAt) : "never", dateTime(i.createdAt), clip(i.note, 40)]);
      for (const line of table(["ID", "CODE", "STATE", "USES LEFT", "EXPIRES", "CREATED", "NOTE"], rows)) ctx.out(line);
    },
  },
  {
    name: "admin grant",
    summary: "Grant credits to a user (by id or email).",
    details: "Example: luna admin grant ann@example.com 500 --reason \"beta feedback\"",
    positionals: [
      { name: "<user>", description: "User id or email" },
      { name: "<credits>", description: "Whole credits, > 0" },
    ],
    options: {
      reason: { type: "string", value: "TEXT", description: "Why (shown in the user's history; required)" },
      "idempotency-key": { type: "string", value: "KEY", description: "Makes a retried grant count once (default: a new random key)" },
    },
    async run(ctx, args) {
      const cmd = "admin grant";
      const [who, amountText] = args.positionals as [string, string];
      const amount = intArg(amountText, "<credits>", { min: 1 }, cmd);
      const reason = str(args, "reason");
      if (!reason) throw new UsageError("missing --reason", cmd);
      ctx.requireSession();
      const user = await resolveUser(ctx, who);
      const accountId = typeof user === "string" ? user : user.id;
      const res = await ctx.clients.client(BillingAdminService).grantCredits({
        accountId, amount: BigInt(amount), reason, idempotencyKey: str(args, "idempotency-key") ?? `cli-grant-${randomUUID()}`,
      });
      const label = typeof user === "string" ? accountId : user.email;
      ctx.out(`Granted ${count(res.amount, "credit")} to ${label}; balance now ${credits(res.balance)}.`);
    },
  },
  {
    name: "admin models list",
    summary: "List every model, disabled ones included.",
    async run(ctx) {
      ctx.requireSession();
      const res = await ctx.clients.client(ModelAdminService).getAdminCatalog({});
      const models = res.models.flatMap((c) => (c.model ? [c.model] : []));
      if (models.length === 0) return ctx.out("The catalog is empty.");
      for (const line of modelRows(models)) ctx.out(line);
    },
  },
  ...(["enable", "disable"] as const).map((verb): CommandSpec<Context> => ({
    name: `admin models ${verb}`,
    summary: verb === "enable" ? "Turn a model on." : "Turn a model off (it is never served, nor its workflows).",
    positionals: [{ name: "<id>", description: "Model id (see `luna admin models list`)" }],
    options: verb === "disable" ? { reason: { type: "string", value: "TEXT", description: "Shown to users while disabled" } } : {},
    async run(ctx, args) {
      ctx.requireSession();
      const res = await ctx.clients.client(ModelAdminService).setModelEnabled({
        modelId: args.positionals[0]!, enabled: verb === "enable", reason: str(args, "reason") ?? "",
      });
      ctx.out(`Model ${res.model?.model?.id ?? args.positionals[0]} ${verb}d.`);
    },
  })),
  {
    name: "admin users list",
    summary: "List accounts, newest first.",
    options: { email: { type: "string", value: "PREFIX", description: "Only emails starting with this" }, limit: limitOption },
    async run(ctx, args) {
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_LIST_LIMIT }, "admin users list");
      ctx.requireSession();
      const auth = ctx.clients.client(AuthAdminService);
      const users = await collectPages<User>(limit, async (page) => {
        const res = await auth.listUsers({ page, emailPrefix: str(args, "email") ?? "" });
        return { items: res.users, next: res.page?.nextPageToken };
      });
      if (users.length === 0) return ctx.out("No accounts.");
      const rows = users.map((u) => [u.id, u.email, roleName(u.role) + (u.disabled ? " (disabled)" : ""), dateTime(u.createdAt), u.displayName]);
      for (const line of table(["ID", "EMAIL", "ROLE", "CREATED", "NAME"], rows)) ctx.out(line);
    },
  },
  {
    name: "admin audit",
    summary: "List the audit log (security and admin events), newest first.",
    details: "Example: luna admin audit --user ann@example.com --kind sign_in.failed,sign_in.locked --limit 20\n" +
      "Kinds: sign_up, sign_in.failed, sign_in.locked, password.changed, session.revoked, account.deleted, account.disabled,\n" +
      "account.enabled, role.changed, invites.created, invite.revoked, api_key.created, api_key.revoked;\n" +
      "recorded by billing: credits.granted, credits.reversed; by the model registry: model.created, model.updated,\n" +
      "model.enabled, model.disabled, workflow.created, workflow.updated, workflow.enabled, workflow.disabled.",
    options: {
      user: { type: "string", value: "ID|EMAIL", description: "Only events by or about this account (deleted accounts: by id)" },
      kind: { type: "string", value: "KIND[,KIND]", description: "Only these kinds (comma-separated)" },
      limit: limitOption,
    },
    async run(ctx, args) {
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_LIST_LIMIT }, "admin audit");
      const kinds = (str(args, "kind") ?? "").split(",").map((k) => k.trim()).filter((k) => k !== "");
      ctx.requireSession();
      const who = str(args, "user");
      const user = who ? await resolveUser(ctx, who) : undefined;
      const userId = user === undefined ? "" : typeof user === "string" ? user : user.id;
      const auth = ctx.clients.client(AuthAdminService);
      const events = await collectPages<AuditEvent>(limit, async (page) => {
        const res = await auth.listAuditEvents({ page, userId, kinds });
        return { items: res.events, next: res.page?.nextPageToken };
      });
      if (events.length === 0) return ctx.out("No audit events.");
      const rows = events.map((e) => {
        const d = auditDetails(e);
        return [dateTime(e.time), e.kind, e.actorId || "-", e.subjectId || e.subjectEmail || d.subject || "-", e.source,
          e.requestId || "-", clip(d.text, 60)];
      });
      for (const line of table(["TIME", "KIND", "ACTOR", "SUBJECT", "SOURCE", "REQUEST", "DETAILS"], rows)) ctx.out(line);
    },
  },
];
