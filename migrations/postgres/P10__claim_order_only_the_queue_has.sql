-- runledger on PostgreSQL, schema version 10: the claim's pick walks the queue even when the
-- statistics say every job is created.
--
-- Version 7 made the pick (`jobs_claimable`) a function planned without bitmap scans, so that
-- it walks `jobs_claim` in id order. One more plan was left: the primary key also walks `jobs`
-- in id order, filtering on the state. When the table's statistics were taken while most
-- jobs were created (autovacuum's ANALYZE after a burst of new jobs), the planner expects the
-- first row of that walk to match, and the primary key is the smaller index: it picks it, and
-- every claim then reads past every job claimed since, completed ones included, until the next
-- ANALYZE. Measured: 2,108 buffers and 1.0 ms for a pick after 3,000 of 6,000 jobs were
-- claimed, against 4 buffers and 0.02 ms through `jobs_claim` (BENCHMARKS.md).
--
-- The queue index now keeps `id NULLS FIRST` and the pick orders `id NULLS FIRST`. `id` is
-- never NULL, so the order is the same; but only an index built in that order can return it
-- without a sort (the primary key, read either way, gives NULLS LAST ascending), and so the
-- walk of the queue is the only ordered plan whatever the statistics say. Version 7's
-- `enable_bitmapscan = off` stays: without statistics the planner still prefers a bitmap scan
-- and a sort for this order too (checked with EXPLAIN). Nothing else changes: the same
-- predicate, the same order of jobs, the same lock.
--
-- The index is rebuilt in the migration's transaction, which holds writers of `jobs` back
-- while it builds (the queue's entries only: created jobs).
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (id NULLS FIRST) INCLUDE (kind) WHERE state = 'created';

CREATE OR REPLACE FUNCTION jobs_claimable(any_kind boolean, kinds text[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    picked bigint;
BEGIN
    SELECT id INTO picked FROM jobs
     WHERE state = 'created' AND (any_kind OR kind = ANY (kinds))
     ORDER BY id NULLS FIRST LIMIT 1
       FOR UPDATE SKIP LOCKED;
    RETURN picked;
END $$;
