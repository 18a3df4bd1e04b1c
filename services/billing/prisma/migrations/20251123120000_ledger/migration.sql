-- Billing ledger. Mirrors prisma/schema.prisma, plus the rules Prisma cannot express: CHECK constraints that back up
-- every money invariant in the database itself, and a trigger that makes ledger_entries append-only.

-- CreateTable
CREATE TABLE "accounts" (
    "id" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'open',
    "balance" BIGINT NOT NULL DEFAULT 0,
    "held" BIGINT NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "closed_at" TIMESTAMPTZ(6),

    CONSTRAINT "accounts_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "accounts_kind_check" CHECK ("kind" IN ('user', 'system')),
    CONSTRAINT "accounts_status_check" CHECK ("status" IN ('open', 'closed')),
    CONSTRAINT "accounts_closed_at_check" CHECK (("status" = 'closed') = ("closed_at" IS NOT NULL)),
    -- available = balance - held >= 0 for users; system accounts keep no cached balance (derived from entries).
    CONSTRAINT "accounts_available_check" CHECK (
        ("kind" = 'user' AND "held" >= 0 AND "balance" - "held" >= 0)
        OR ("kind" = 'system' AND "held" = 0 AND "balance" = 0))
) WITH (fillfactor = 80);
-- fillfactor: every reserve and commit rewrites its account row (balance/held, no indexed column). The free 20 % of
-- each page lets Postgres put the new row version on the same page as a HOT update, so no accounts_pkey entry is
-- written per operation and old versions are pruned in place.

-- CreateTable
CREATE TABLE "holds" (
    "id" UUID NOT NULL,
    "account_id" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'open',
    "charged" BIGINT NOT NULL DEFAULT 0,
    "reason" TEXT NOT NULL,
    "reference" TEXT NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "available_after" BIGINT NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMPTZ(6) NOT NULL,
    "resolved_at" TIMESTAMPTZ(6),

    CONSTRAINT "holds_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "holds_amount_check" CHECK ("amount" > 0),
    CONSTRAINT "holds_status_check" CHECK ("status" IN ('open', 'committed', 'released', 'expired')),
    CONSTRAINT "holds_resolved_check" CHECK (("status" = 'open') = ("resolved_at" IS NULL)),
    -- a commit never exceeds its hold; only a commit charges.
    CONSTRAINT "holds_charged_check" CHECK ("charged" >= 0 AND "charged" <= "amount" AND ("status" = 'committed' OR "charged" = 0))
);

-- CreateTable
CREATE TABLE "ledger_entries" (
    "id" BIGSERIAL NOT NULL,
    "transfer_id" UUID NOT NULL,
    "account_id" TEXT NOT NULL,
    "amount" BIGINT NOT NULL,
    "kind" TEXT NOT NULL,
    "hold_id" UUID,
    "reverses_transfer_id" UUID,
    "reason" TEXT NOT NULL,
    "reference" TEXT NOT NULL,
    "description" TEXT NOT NULL,
    "usage" JSONB,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ledger_entries_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "ledger_entries_amount_check" CHECK ("amount" <> 0),
    CONSTRAINT "ledger_entries_kind_check" CHECK ("kind" IN ('grant', 'charge', 'reversal')),
    CONSTRAINT "ledger_entries_reversal_check" CHECK (("kind" = 'reversal') = ("reverses_transfer_id" IS NOT NULL)),
    -- A charge is the transfer of its hold: transfer_id = hold_id, so the unique (transfer_id, account_id) index
    -- below also allows one charge per hold (one row per side), without an index of its own.
    CONSTRAINT "ledger_entries_charge_check" CHECK (("kind" = 'charge') = ("hold_id" IS NOT NULL) AND ("hold_id" IS NULL OR "hold_id" = "transfer_id"))
);

-- CreateTable
CREATE TABLE "idempotency_keys" (
    "account_id" TEXT NOT NULL,
    "scope" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "response" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY ("account_id","scope","key"),
    -- Reserves keep their key on the hold itself (holds_account_id_idempotency_key_key).
    CONSTRAINT "idempotency_keys_scope_check" CHECK ("scope" IN ('grant'))
);

-- A reserve's idempotency record is its hold: one hold per (account, key), a racing duplicate fails on this index.
-- Also the index of an account's holds (history, open holds of a closing account).
CREATE UNIQUE INDEX "holds_account_id_idempotency_key_key" ON "holds"("account_id", "idempotency_key");

-- The sweeper's scan: only open holds, by deadline. Partial (Prisma cannot express it), so it stays small and a
-- resolved hold leaves it instead of adding an entry.
CREATE INDEX "holds_open_expires_at_idx" ON "holds"("expires_at") WHERE "status" = 'open';

-- CreateIndex
CREATE INDEX "ledger_entries_account_id_created_at_idx" ON "ledger_entries"("account_id", "created_at");

-- A transfer's rows (reversal lookups), one per account; for a charge (transfer_id = hold_id) one charge per hold.
CREATE UNIQUE INDEX "ledger_entries_transfer_id_account_id_key" ON "ledger_entries"("transfer_id", "account_id");

-- A transfer is reversed at most once. Partial: only reversal rows carry an entry (Prisma cannot express it).
CREATE UNIQUE INDEX "ledger_entries_reversal_once_key" ON "ledger_entries"("reverses_transfer_id", "account_id")
    WHERE "reverses_transfer_id" IS NOT NULL;

-- AddForeignKey
ALTER TABLE "holds" ADD CONSTRAINT "holds_account_id_fkey" FOREIGN KEY ("account_id") REFERENCES "accounts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- Append-only ledger: corrections are reversal transfers, never edits.
CREATE FUNCTION "ledger_entries_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only: % is not allowed (book a reversal instead)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER "ledger_entries_append_only"
    BEFORE UPDATE OR DELETE ON "ledger_entries"
    FOR EACH ROW EXECUTE FUNCTION "ledger_entries_append_only"();

-- The counterparties of every transfer.
INSERT INTO "accounts" ("id", "kind") VALUES ('system:grants', 'system'), ('system:revenue', 'system');

-- ---- Transactional outbox and inbox (packages/kit/sql/outbox_inbox.sql) -----------------------------------------

-- Events written in the same transaction as the state change; the outbox relay publishes them to JetStream in
-- seq order with Nats-Msg-Id = id and then sets published_at.
CREATE TABLE "outbox_events" (
    "id" UUID NOT NULL,
    "seq" BIGSERIAL NOT NULL,
    "subject" TEXT NOT NULL,
    "payload" BYTEA NOT NULL,
    "headers" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "published_at" TIMESTAMPTZ(6),

    CONSTRAINT "outbox_events_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "outbox_events_seq_key" ON "outbox_events"("seq");

-- The relay's scan: only the (few) unpublished rows, in seq order. Partial, so it is not in the Prisma schema.
CREATE INDEX "outbox_events_unpublished_seq_idx" ON "outbox_events"("seq") WHERE "published_at" IS NULL;

-- Wakes relays in other processes as soon as a transaction that enqueued events commits (NOTIFY is delivered at
-- commit and collapsed per transaction). Not visible to Prisma.
CREATE FUNCTION "luna_outbox_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('luna_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER "outbox_events_notify" AFTER INSERT ON "outbox_events"
    FOR EACH STATEMENT EXECUTE FUNCTION "luna_outbox_notify"();

-- Event ids a consumer has applied; inserted in the same transaction as the consumer's effect.
CREATE TABLE "inbox_events" (
    "consumer" TEXT NOT NULL,
    "event_id" TEXT NOT NULL,
    "processed_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "inbox_events_pkey" PRIMARY KEY ("consumer","event_id")
);
