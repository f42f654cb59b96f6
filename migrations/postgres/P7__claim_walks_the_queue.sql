-- runledger on PostgreSQL, schema version 7 (issue 17's speed aim): the claim walks the
-- queue in id order, whatever the planner's statistics say. Version 6 is another change's.
--
-- The claim picks the oldest created job of the asked kinds, skipping rows another claimer
-- holds. P1's partial index `jobs_claim` (id) INCLUDE (kind) WHERE state = 'created' answers
-- that by walking its first entries. But while the table has no statistics (a new ledger; a
-- server without autovacuum; a burst of jobs since the last ANALYZE) the planner believes
-- the filter on the kind leaves about one row, and then prefers a bitmap scan of every
-- created job followed by a sort: O(queue) per claim (measured: 0.58 ms of a claim with
-- 2,000 queued jobs, against 0.01 ms for the walk; BENCHMARKS.md).
--
-- The pick is therefore a PL/pgSQL function planned with bitmap scans off, so only the
-- ordered walk of `jobs_claim` (or, for a tiny table, a scan and sort) is left to choose
-- from. Its plan is kept for the session, like every PL/pgSQL statement's. The claim calls
-- it once, as an InitPlan (`where id = (select jobs_claimable($3, $4))`), and the row lock
-- the pick takes (FOR UPDATE SKIP LOCKED) is held to the end of the claim's transaction, so
-- the claim's update meets the very row the pick locked, in its newest version (READ
-- COMMITTED re-reads a row changed since the statement began; the pick saw it created
-- under its lock, so no one else changed it since), and the state machine still checks the
-- transition. Nothing else changes: the same predicate, the same order, the same lock.
CREATE FUNCTION jobs_claimable(any_kind boolean, kinds text[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    picked bigint;
BEGIN
    SELECT id INTO picked FROM jobs
     WHERE state = 'created' AND (any_kind OR kind = ANY (kinds))
     ORDER BY id LIMIT 1
     FOR UPDATE SKIP LOCKED;
    RETURN picked;
END $$;
