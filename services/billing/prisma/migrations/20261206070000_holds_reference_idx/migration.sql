-- ListHolds: a reference's holds whatever their status (a sweeper learns that a hold was committed before the
-- caller's crash kept the result from its record). Until now only open holds were looked up by reference, through
-- the small partial index of open holds; resolved holds had no index but the account's. A reference names a handful
-- of holds (a chat reply's exact and speculative reserves, an image job's), so the rows are sorted in memory.
-- Cost: one more index entry per reserve and per settle (the settle's update changes the status the partial open
-- index depends on, so it was never a HOT update anyway).
CREATE INDEX "holds_reference_idx" ON "holds"("reference");
