-- ListHolds: a reference's holds whatever their status (a caller's sweeper learns that a hold was committed before
-- its crash kept the result from the caller's record). Open holds were already found by reference through the small
-- partial index of open holds (holds_open_expires_at_idx); resolved holds had no index but the account's. This one
-- covers resolved holds only: a reserve (an insert of an open hold) adds no entry to it, and a commit or release adds
-- one (its update changes `status`, which the open index's predicate reads, so it was never a HOT update anyway).
-- A reference names a handful of holds (a reply's exact and speculative reserves, a job's), sorted in memory.
-- Partial (Prisma cannot express it): see schema.prisma.
CREATE INDEX "holds_resolved_reference_idx" ON "holds"("reference") WHERE "status" <> 'open';
