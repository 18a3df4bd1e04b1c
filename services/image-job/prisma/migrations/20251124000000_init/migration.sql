-- image-job: jobs, images, and the kit's outbox/inbox.

CREATE TABLE "image_jobs" (
    "id" UUID NOT NULL,
    "user_id" TEXT NOT NULL,
    "idempotency_key" TEXT NOT NULL,
    "request_hash" TEXT NOT NULL,
    "workflow_id" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "prompt" TEXT NOT NULL,
    "negative_prompt" TEXT NOT NULL DEFAULT '',
    "width" INTEGER NOT NULL,
    "height" INTEGER NOT NULL,
    "count" INTEGER NOT NULL,
    "steps" INTEGER NOT NULL,
    "seed" BIGINT NOT NULL,
    "style_id" TEXT NOT NULL DEFAULT '',
    "price_per_image" BIGINT NOT NULL,
    "hold_id" TEXT NOT NULL,
    "credits_reserved" BIGINT NOT NULL,
    "credits_charged" BIGINT NOT NULL DEFAULT 0,
    "images_produced" INTEGER NOT NULL DEFAULT 0,
    "error_code" TEXT NOT NULL DEFAULT '',
    "error_message" TEXT NOT NULL DEFAULT '',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "worker_id" TEXT NOT NULL DEFAULT '',
    "run_timeout_ms" INTEGER NOT NULL,
    "dispatched_at" TIMESTAMPTZ(6),
    "queue_deadline" TIMESTAMPTZ(6) NOT NULL,
    "run_deadline" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "started_at" TIMESTAMPTZ(6),
    "finished_at" TIMESTAMPTZ(6),
    "settlement" TEXT NOT NULL DEFAULT '',
    "settled_at" TIMESTAMPTZ(6),
    "settle_attempts" INTEGER NOT NULL DEFAULT 0,
    "settle_error" TEXT NOT NULL DEFAULT '',

    CONSTRAINT "image_jobs_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "image_jobs_status_check" CHECK ("status" IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    CONSTRAINT "image_jobs_settlement_check" CHECK ("settlement" IN ('', 'commit', 'release')),
    CONSTRAINT "image_jobs_charge_check" CHECK ("credits_charged" >= 0 AND "credits_charged" <= "credits_reserved")
);

CREATE UNIQUE INDEX "image_jobs_user_id_idempotency_key_key" ON "image_jobs"("user_id", "idempotency_key");
CREATE INDEX "image_jobs_user_id_created_at_idx" ON "image_jobs"("user_id", "created_at");
CREATE INDEX "image_jobs_user_id_status_created_at_idx" ON "image_jobs"("user_id", "status", "created_at");
CREATE INDEX "image_jobs_model_id_status_created_at_idx" ON "image_jobs"("model_id", "status", "created_at");
CREATE INDEX "image_jobs_status_created_at_idx" ON "image_jobs"("status", "created_at");
CREATE INDEX "image_jobs_settlement_settled_at_idx" ON "image_jobs"("settlement", "settled_at");

CREATE TABLE "images" (
    "id" UUID NOT NULL,
    "job_id" UUID NOT NULL,
    "user_id" TEXT NOT NULL,
    "batch_index" INTEGER NOT NULL,
    "storage_key" TEXT NOT NULL,
    "content_type" TEXT NOT NULL,
    "width" INTEGER NOT NULL,
    "height" INTEGER NOT NULL,
    "size_bytes" INTEGER NOT NULL,
    "prompt" TEXT NOT NULL,
    "negative_prompt" TEXT NOT NULL DEFAULT '',
    "seed" BIGINT NOT NULL,
    "workflow_id" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "style_id" TEXT NOT NULL DEFAULT '',
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "images_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "images_storage_key_key" ON "images"("storage_key");
CREATE UNIQUE INDEX "images_job_id_batch_index_key" ON "images"("job_id", "batch_index");
CREATE INDEX "images_user_id_created_at_idx" ON "images"("user_id", "created_at");

ALTER TABLE "images" ADD CONSTRAINT "images_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "image_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

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
