-- runledger on PostgreSQL, schema version 4 (issue 17's speed aim): job events notify only
-- while someone listens for them.
--
-- A transaction that sends a NOTIFY takes one lock for the whole database at its commit and
-- keeps it through the commit's WAL flush, so notifying transactions commit one at a time
-- (no group commit): with version 2's NOTIFY per appended event, every claim and every
-- complete paid it (BENCHMARKS.md). Workers wait for claimable jobs (`runledger_work`, which
-- is unchanged and only sent when a job becomes claimable); only event followers (a stream of
-- a job's timeline) need `runledger_events`. Such a listener registers its backend here
-- (src/pg/listener.rs), and an appended event notifies only while a listener is registered.
--
-- No wake is lost: a listener LISTENs first, then registers under an ACCESS EXCLUSIVE lock of
-- this table. Every writer's trigger reads this table (ACCESS SHARE, held to its commit), so
-- the registration waits for the writers that looked before it (their events are committed,
-- and the listener's caller reads them next), and every writer after it sees the row.
--
-- UNLOGGED: it lists live sessions, which a crash ends (its rows go with it); a listener
-- whose session ended without unregistering is removed by the next registration (its pid is
-- no longer a live backend). Until then events notify as in version 2: slower, never wrong.

CREATE UNLOGGED TABLE runledger_event_listeners (
    pid integer NOT NULL PRIMARY KEY
);

CREATE OR REPLACE FUNCTION runledger_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runledger_event_listeners) THEN
        PERFORM pg_notify('runledger_events', TG_TABLE_SCHEMA || '/' || NEW.job_id || '/' || NEW.seq);
    END IF;
    RETURN NULL;
END $$;
