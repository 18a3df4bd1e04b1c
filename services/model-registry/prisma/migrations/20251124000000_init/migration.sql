-- Model registry: the curated catalog. Matches prisma/schema.prisma; the CHECK constraints back up the service's
-- validation (Prisma cannot express them).

-- CreateTable
CREATE TABLE "models" (
    "id" TEXT NOT NULL,
    "display_name" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "kind" TEXT NOT NULL,
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "context_window" INTEGER NOT NULL,
    "max_output_tokens" INTEGER NOT NULL,
    "price_input_per_1k" BIGINT NOT NULL,
    "price_output_per_1k" BIGINT NOT NULL,
    "price_per_image" BIGINT NOT NULL,
    "sort_order" INTEGER NOT NULL DEFAULT 0,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "disabled_reason" TEXT NOT NULL DEFAULT '',
    "health_status" TEXT NOT NULL DEFAULT 'OFFLINE',
    "health_reason" TEXT NOT NULL DEFAULT 'awaiting first health check',
    "replica_health" JSONB NOT NULL DEFAULT '[]',
    "upstream_base_urls" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "upstream_resolve_url" TEXT NOT NULL DEFAULT '',
    "upstream_api_key_env" TEXT NOT NULL DEFAULT '',
    "served_model_name" TEXT NOT NULL DEFAULT '',
    "version" BIGINT NOT NULL DEFAULT 1,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "models_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "models_kind_check" CHECK ("kind" IN ('TEXT', 'IMAGE')),
    CONSTRAINT "models_health_status_check" CHECK ("health_status" IN ('AVAILABLE', 'DEGRADED', 'OFFLINE')),
    CONSTRAINT "models_prices_check" CHECK ("price_input_per_1k" >= 0 AND "price_output_per_1k" >= 0 AND "price_per_image" >= 0),
    CONSTRAINT "models_limits_check" CHECK ("context_window" >= 0 AND "max_output_tokens" >= 0)
);

-- CreateTable
CREATE TABLE "workflows" (
    "id" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "display_name" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "parameters" JSONB NOT NULL,
    "price_per_image" BIGINT NOT NULL,
    "sort_order" INTEGER NOT NULL DEFAULT 0,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "disabled_reason" TEXT NOT NULL DEFAULT '',
    "graph_json" TEXT NOT NULL,
    "bindings" JSONB NOT NULL,
    "style_loras" JSONB NOT NULL DEFAULT '[]',
    "version" BIGINT NOT NULL DEFAULT 1,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "workflows_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "workflows_price_check" CHECK ("price_per_image" >= 0)
);

-- CreateIndex
CREATE INDEX "workflows_model_id_idx" ON "workflows"("model_id");

-- AddForeignKey
ALTER TABLE "workflows" ADD CONSTRAINT "workflows_model_id_fkey" FOREIGN KEY ("model_id") REFERENCES "models"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- Luna transactional outbox and inbox (@luna/kit, copied from packages/kit/sql/outbox_inbox.sql).
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
