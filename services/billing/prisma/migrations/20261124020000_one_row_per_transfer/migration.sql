-- One row per transfer. Until now a transfer was two ledger_entries rows (same transfer_id, signed amounts summing to
-- zero); from now on it is one ledger_transfers row that debits one account and credits another by a positive
-- amount, so debits = credits holds by construction. Only the user's side of a transfer is indexed for history (the
-- system side is a counterparty nobody lists), so a commit writes 1 row and 2 index entries for its charge instead
-- of 2 rows and 6 index entries (and no bigserial id). See services/billing/README.md, "Ledger design".
--
-- Also drops the holds -> accounts foreign key: its RI trigger ran one extra query (and WAL record) per reserve,
-- although the reserve inserts a hold only in the statement that updated its account row, and accounts are never
-- deleted. Like ledger entries (which never had a foreign key), the trial balance checks it instead
-- (hold_account_exists).
--
-- The data migration runs in the migration's transaction and refuses (rolling everything back) unless every old
-- transfer is exactly one debit row and one credit row that agree on everything but account and sign, and unless
-- every account's entries sum to the same total before and after.

CREATE TABLE "ledger_transfers" (
    "id" UUID NOT NULL,
    "debit_account_id" TEXT NOT NULL,
    "credit_account_id" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "kind" TEXT NOT NULL,
    "hold_id" UUID,
    "reverses_transfer_id" UUID,
    "reason" TEXT NOT NULL,
    "reference" TEXT NOT NULL,
    "description" TEXT NOT NULL,
    "usage" JSONB,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_transfers_pkey" PRIMARY KEY ("id"),
    -- A transfer moves a positive amount from one account to a different one.
    CONSTRAINT "ledger_transfers_amount_check" CHECK ("amount" > 0),
    CONSTRAINT "ledger_transfers_accounts_check" CHECK ("debit_account_id" <> "credit_account_id"),
    CONSTRAINT "ledger_transfers_kind_check" CHECK ("kind" IN ('grant', 'charge', 'reversal')),
    CONSTRAINT "ledger_transfers_reversal_check" CHECK (("kind" = 'reversal') = ("reverses_transfer_id" IS NOT NULL)),
    -- A charge is the transfer of its hold: id = hold_id, so the primary key also allows one charge per hold.
    CONSTRAINT "ledger_transfers_charge_check" CHECK (("kind" = 'charge') = ("hold_id" IS NOT NULL) AND ("hold_id" IS NULL OR "hold_id" = "id")),
    -- The system side of grants and charges is fixed, so the user's side is the other one (see the indexes below).
    CONSTRAINT "ledger_transfers_grant_check" CHECK ("kind" <> 'grant' OR "debit_account_id" = 'system:grants'),
    CONSTRAINT "ledger_transfers_charge_revenue_check" CHECK ("kind" <> 'charge' OR "credit_account_id" = 'system:revenue')
);

-- An account's history is its debits plus its credits, one index each, partial so that only the user's side of a
-- transfer gets an entry: a charge debits the user (credit: system:revenue), a grant credits the user (debit:
-- system:grants), a reversal swaps the sides of what it reverses, so it is indexed on both (rare). Besides the one
-- entry per transfer this saves, no transfer adds to a hot "system:revenue" leaf page. History queries repeat
-- these predicates; system accounts' balances (admin reads) are summed without an index.
CREATE INDEX "ledger_transfers_debit_account_id_created_at_idx" ON "ledger_transfers"("debit_account_id", "created_at")
    WHERE "kind" IN ('charge', 'reversal');
CREATE INDEX "ledger_transfers_credit_account_id_created_at_idx" ON "ledger_transfers"("credit_account_id", "created_at")
    WHERE "kind" IN ('grant', 'reversal');

-- A transfer is reversed at most once. Partial: only reversals carry an entry (Prisma cannot express it).
CREATE UNIQUE INDEX "ledger_transfers_reversal_once_key" ON "ledger_transfers"("reverses_transfer_id")
    WHERE "reverses_transfer_id" IS NOT NULL;

-- ---- data: two entries -> one transfer ---------------------------------------------------------------------------

DO $$
DECLARE
    bad RECORD;
BEGIN
    SELECT transfer_id, count(*) AS n, sum(amount) AS total INTO bad
    FROM "ledger_entries" GROUP BY transfer_id
    HAVING count(*) <> 2 OR sum(amount) <> 0 OR count(*) FILTER (WHERE amount < 0) <> 1
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger_entries: transfer % has % rows summing to %, not one debit and one credit; not migrated',
            bad.transfer_id, bad.n, bad.total;
    END IF;
END
$$;

-- The debit row is the one with the negative amount. The description and usage of a charge live on the user's
-- (debit) row only; grants and reversals carry the same description on both rows.
INSERT INTO "ledger_transfers" ("id", "debit_account_id", "credit_account_id", "amount", "kind", "hold_id",
    "reverses_transfer_id", "reason", "reference", "description", "usage", "created_at")
SELECT d.transfer_id, d.account_id, c.account_id, c.amount, d.kind, d.hold_id, d.reverses_transfer_id, d.reason,
       d.reference, coalesce(nullif(d.description, ''), c.description), coalesce(d.usage, c.usage), d.created_at
FROM "ledger_entries" d
JOIN "ledger_entries" c ON c.transfer_id = d.transfer_id AND c.amount > 0
WHERE d.amount < 0
  AND c.amount = -d.amount
  AND c.kind = d.kind
  AND c.hold_id IS NOT DISTINCT FROM d.hold_id
  AND c.reverses_transfer_id IS NOT DISTINCT FROM d.reverses_transfer_id
  AND c.reason = d.reason
  AND c.reference = d.reference
  AND c.created_at = d.created_at;

DO $$
DECLARE
    old_rows BIGINT;
    new_rows BIGINT;
    bad RECORD;
BEGIN
    SELECT count(*) INTO old_rows FROM "ledger_entries";
    SELECT count(*) INTO new_rows FROM "ledger_transfers";
    IF new_rows * 2 <> old_rows THEN
        RAISE EXCEPTION 'ledger_entries: % rows became % transfers (expected %): some pairs disagree on kind, hold, reversal, reason, reference or time; not migrated',
            old_rows, new_rows, old_rows / 2;
    END IF;
    SELECT coalesce(o.account_id, n.account_id) AS account_id, o.total AS old_total, n.total AS new_total INTO bad
    FROM (SELECT account_id, sum(amount) AS total FROM "ledger_entries" GROUP BY account_id) o
    FULL JOIN (
        SELECT account_id, sum(delta) AS total FROM (
            SELECT credit_account_id AS account_id, amount AS delta FROM "ledger_transfers"
            UNION ALL
            SELECT debit_account_id, -amount FROM "ledger_transfers") x
        GROUP BY account_id) n ON n.account_id = o.account_id
    WHERE o.total IS DISTINCT FROM n.total
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger_transfers: account % sums to % after the migration, % before; not migrated',
            bad.account_id, bad.new_total, bad.old_total;
    END IF;
END
$$;

DROP TABLE "ledger_entries";
DROP FUNCTION "ledger_entries_append_only"();

-- Append-only ledger: corrections are reversal transfers, never edits.
CREATE FUNCTION "ledger_transfers_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_transfers is append-only: % is not allowed (book a reversal instead)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER "ledger_transfers_append_only"
    BEFORE UPDATE OR DELETE ON "ledger_transfers"
    FOR EACH ROW EXECUTE FUNCTION "ledger_transfers_append_only"();

-- ---- holds: no foreign key to accounts (see the top of this file) -------------------------------------------------

ALTER TABLE "holds" DROP CONSTRAINT "holds_account_id_fkey";
