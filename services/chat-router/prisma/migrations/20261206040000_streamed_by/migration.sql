-- The replica that streams a reply (its live-hub id, written with the reply's placeholder): a follower on another
-- replica asks that replica's snapshot subject, `luna.live.chat.snapshot.<streamed_by>.<message id>`. '' = written
-- before this column (or a user message): the follower asks the per-reply subject the previous version listened on.
ALTER TABLE "messages" ADD COLUMN "streamed_by" TEXT NOT NULL DEFAULT '';
