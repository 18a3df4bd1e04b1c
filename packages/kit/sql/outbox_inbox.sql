-- Luna transactional outbox and inbox (@luna/kit). Copy this file into the service's first migration
-- (prisma/migrations/<ts>_init/migration.sql); the matching Prisma models are in outbox_inbox.prisma.

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
