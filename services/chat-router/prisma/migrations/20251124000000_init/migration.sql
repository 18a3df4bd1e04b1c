-- chat-router: conversations and messages (+ the kit's outbox/inbox tables below).

CREATE TABLE "conversations" (
    "id" UUID NOT NULL,
    "user_id" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "title" TEXT NOT NULL DEFAULT '',
    "system_prompt" TEXT NOT NULL DEFAULT '',
    "system_prompt_tokens" INTEGER NOT NULL DEFAULT 0,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_activity_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_message_preview" TEXT NOT NULL DEFAULT '',
    "message_count" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "conversations_pkey" PRIMARY KEY ("id")
);

-- ListConversations: the caller's conversations, newest activity first (keyset pagination on both columns).
CREATE INDEX "conversations_user_id_last_activity_at_id_idx" ON "conversations"("user_id", "last_activity_at" DESC, "id" DESC);

CREATE TABLE "messages" (
    "id" UUID NOT NULL,
    "conversation_id" UUID NOT NULL,
    "seq" BIGSERIAL NOT NULL,
    "role" TEXT NOT NULL,
    "content" TEXT NOT NULL DEFAULT '',
    "status" TEXT NOT NULL,
    "parent_id" UUID,
    "active" BOOLEAN NOT NULL DEFAULT true,
    "client_message_id" TEXT,
    "model_id" TEXT NOT NULL DEFAULT '',
    "token_count" INTEGER,
    "finish_reason" TEXT NOT NULL DEFAULT '',
    "prompt_tokens" INTEGER NOT NULL DEFAULT 0,
    "completion_tokens" INTEGER NOT NULL DEFAULT 0,
    "max_output_tokens" INTEGER NOT NULL DEFAULT 0,
    "credits_held" BIGINT NOT NULL DEFAULT 0,
    "credits_charged" BIGINT NOT NULL DEFAULT 0,
    "balance_after" BIGINT NOT NULL DEFAULT 0,
    "available_after_reserve" BIGINT NOT NULL DEFAULT 0,
    "hold_id" UUID,
    "error_code" TEXT NOT NULL DEFAULT '',
    "error_message" TEXT NOT NULL DEFAULT '',
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "messages_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "messages_seq_key" ON "messages"("seq");

-- SendMessage idempotency: one user message per client message id and conversation.
CREATE UNIQUE INDEX "messages_conversation_id_client_message_id_key" ON "messages"("conversation_id", "client_message_id");

-- History and GetConversation pages, in order.
CREATE INDEX "messages_conversation_id_seq_idx" ON "messages"("conversation_id", "seq");

-- The sweeper's scan for streaming replies whose replica stopped checkpointing.
CREATE INDEX "messages_status_updated_at_idx" ON "messages"("status", "updated_at");

-- At most one reply in progress per conversation (a second SendMessage waits for, or stops, the first). Partial,
-- so it is not in the Prisma schema.
CREATE UNIQUE INDEX "messages_one_streaming_per_conversation" ON "messages"("conversation_id") WHERE "status" = 'streaming';

ALTER TABLE "messages" ADD CONSTRAINT "messages_conversation_id_fkey" FOREIGN KEY ("conversation_id") REFERENCES "conversations"("id") ON DELETE CASCADE ON UPDATE CASCADE;

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
