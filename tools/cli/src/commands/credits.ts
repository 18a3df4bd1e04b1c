// Credit commands: balance, history.
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { LedgerEntryKind, type LedgerEntry } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { intArg, type CommandSpec } from "../args.js";
import type { Context } from "../context.js";
import { count, credits, dateTime, enumLabel, signedCredits, table } from "../format.js";
import { collectPages } from "./pages.js";

const DEFAULT_HISTORY_LIMIT = 20;

export const creditCommands: CommandSpec<Context>[] = [
  {
    name: "balance",
    summary: "Show your credits: balance, held by work in progress, and available.",
    async run(ctx) {
      ctx.requireSession();
      const b = await ctx.clients.client(BillingService).getBalance({});
      ctx.out(`${count(b.available, "credit")} available`);
      if (b.held > 0n) ctx.out(`  balance ${credits(b.balance)}, held by work in progress ${credits(b.held)}`);
    },
  },
  {
    name: "history",
    summary: "Show your credit history, newest first.",
    options: { limit: { type: "string", value: "N", description: `How many entries (default ${DEFAULT_HISTORY_LIMIT})` } },
    async run(ctx, args) {
      ctx.requireSession();
      const limit = intArg(args.options.limit, "--limit", { min: 1, max: 10_000, default: DEFAULT_HISTORY_LIMIT }, "history");
      const billing = ctx.clients.client(BillingService);
      const entries = await collectPages<LedgerEntry>(limit, async (page) => {
        const res = await billing.listLedgerEntries({ page });
        return { items: res.entries, next: res.page?.nextPageToken };
      });
      if (entries.length === 0) {
        ctx.out("No credit history yet.");
        return;
      }
      const rows = entries.map((e) => [
        dateTime(e.createdAt),
        enumLabel(LedgerEntryKind, e.kind),
        e.kind === LedgerEntryKind.RELEASE ? `(${credits(e.amount)})` : signedCredits(e.balanceDelta),
        e.description || e.reason,
      ]);
      for (const line of table(["WHEN", "KIND", "CREDITS", "WHAT"], rows)) ctx.out(line);
    },
  },
];
