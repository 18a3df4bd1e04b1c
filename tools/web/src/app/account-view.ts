// Account: who is signed in, the balance, and the usage history (the credit ledger, newest first, more on demand).
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BillingService } from "@luna/contracts/luna/billing/v1/billing_service_pb.js";
import { LedgerEntryKind, type LedgerEntry } from "@luna/contracts/luna/billing/v1/ledger_pb.js";
import { client, errorMessage } from "./api.js";
import { formatCredits, h, replace } from "./dom.js";

const PAGE = 50;

function when(e: LedgerEntry): string {
  return e.createdAt ? timestampDate(e.createdAt).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "";
}

function amount(e: LedgerEntry): string {
  // A release moves no balance: its amount is shown in brackets, as in the CLI's `luna history`.
  if (e.kind === LedgerEntryKind.RELEASE) return `(${formatCredits(e.amount)})`;
  const d = e.balanceDelta;
  return `${d > 0n ? "+" : ""}${formatCredits(d)}`;
}

export function accountView(): { el: HTMLElement; refresh(): void } {
  const rows = h("tbody", { id: "ledger" });
  const status = h("p", { class: "muted" });
  const more = h("button", { type: "button", class: "ghost", id: "ledger-more", hidden: true }, "Older entries");
  let token = "";
  const load = async (reset: boolean) => {
    try {
      const res = await client(BillingService).listLedgerEntries({ page: { pageSize: PAGE, pageToken: reset ? "" : token } });
      if (reset) replace(rows);
      for (const e of res.entries) {
        rows.append(h("tr", { class: `kind-${LedgerEntryKind[e.kind]?.toLowerCase() ?? "other"}` },
          h("td", {}, when(e)), h("td", {}, LedgerEntryKind[e.kind]?.toLowerCase() ?? ""), h("td", { class: "num" }, amount(e)),
          h("td", {}, e.description || e.reason)));
      }
      token = res.page?.nextPageToken ?? "";
      more.hidden = !token;
      status.textContent = rows.childElementCount ? "" : "No usage yet.";
    } catch (err) {
      status.textContent = `The usage history could not be loaded: ${errorMessage(err)}`;
    }
  };
  more.addEventListener("click", () => void load(false));
  const el = h("section", { class: "panel account", id: "account" },
    h("h2", {}, "Usage"),
    h("div", { class: "table-wrap" }, h("table", { class: "ledger" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Kind"), h("th", { class: "num" }, "Credits"), h("th", {}, "What"))), rows)),
    status, more);
  return { el, refresh: () => void load(true) };
}
