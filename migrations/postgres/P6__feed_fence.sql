-- runledger on PostgreSQL, schema version 6: a global event feed that never skips an event
-- committed late.
--
-- The feed (Events::after / Events::feed, the HTTP live stream) hands out events in cursor
-- order, and a follower continues after the last cursor it got. On SQLite writers commit one
-- at a time, so cursors are committed in order. On PostgreSQL they are not: a transaction
-- draws cursor 7, another draws 8 and commits first; a follower that read 8 and moved on
-- would never see 7. So the feed only hands out cursors below a HORIZON that no transaction
-- still in flight can commit under:
--
--   * Each transaction, before its first event, takes a FENCE: it reads the sequence's next
--     free cursor F (every cursor it draws from then on is >= F) and holds a shared advisory
--     lock keyed (job_events, F) until it ends. Its first event's identity value was drawn
--     BEFORE the fence, so the trigger draws that event a new cursor after it.
--   * A reader first reads the sequence's next free cursor N, then the smallest fence held
--     (pg_locks), and reads events with cursor < least(N, smallest fence) in a snapshot taken
--     after both (src/pg/storage/job_events.rs). Any cursor below that horizon was drawn
--     before the reader looked at the sequence, so its transaction had its fence by then; as
--     that fence was not held when the reader looked at the locks, the transaction had ended
--     (a lock is released after the commit becomes visible): committed and seen, or rolled back.
--   * The horizon only grows (a new fence is at least the sequence's next free cursor), and an
--     in-flight writer holds it back only until it ends.
--
-- The sequence must hand out values in order (CACHE 1, the identity default): a value a
-- session cached earlier would come out under a later fence. Doctor compares the sequence's
-- settings with the migrations'.
--
-- The fence's floor is kept in the transaction-local setting `runledger.feed_fence`, so a
-- transaction fences once however many events it appends; a rolled-back savepoint undoes both
-- the setting and its lock. An event whose cursor is given explicitly must not be below the
-- transaction's fence (EVENT_CURSOR), the rule SQLite states as "a cursor only grows".
-- `runledger copy` fences its transaction before it loads the events (src/pg/copy.rs).
--
-- The advisory key is (the low 15 bits of job_events' oid) << 47 | floor: ledgers in several
-- schemas of one database share the lock table, so each reader only counts the fences of its
-- own table (the table the session's search_path names, for writer and reader alike; two
-- tables whose oids agree in those bits only hold each other's horizon back while a writer
-- is in flight, never hide an event).

-- The fence key of `floor`: the low 15 bits of job_events' oid, then the floor.
CREATE FUNCTION runledger_feed_key(floor bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (('job_events'::regclass::oid::bigint & 32767) << 47) | floor
$$;

-- Takes this transaction's fence (once) and returns its floor.
CREATE FUNCTION runledger_feed_fence() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    floor bigint := nullif(current_setting('runledger.feed_fence', true), '')::bigint;
BEGIN
    IF floor IS NULL THEN
        SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
          INTO floor FROM job_events_cursor_seq;
        IF floor >= 140737488355328 THEN
            RAISE EXCEPTION 'EVENT_CURSOR: job_events: the cursor space of the feed fence (2^47) is used up';
        END IF;
        PERFORM pg_advisory_xact_lock_shared(runledger_feed_key(floor));
        PERFORM set_config('runledger.feed_fence', floor::text, true);
    END IF;
    RETURN floor;
END $$;

-- The cursor below which every event is committed or gone for good (see above). VOLATILE:
-- it reads the sequence and the lock table as they are now, in this order.
CREATE FUNCTION runledger_feed_horizon() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_free bigint;
    fenced bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
      INTO next_free FROM job_events_cursor_seq;
    SELECT min(((l.classid::bigint << 32) | l.objid::bigint) & 140737488355327)
      INTO fenced
      FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND (l.classid::bigint >> 15) = ('job_events'::regclass::oid::bigint & 32767);
    RETURN least(next_free, fenced);
END $$;

-- Version 1's rules, with the fence in front.
CREATE OR REPLACE FUNCTION job_events_seq_follows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    floor bigint := nullif(current_setting('runledger.feed_fence', true), '')::bigint;
BEGIN
    IF floor IS NULL THEN
        floor := runledger_feed_fence();
        -- this row's identity value was drawn before the fence: draw one after it
        NEW.cursor := nextval('job_events_cursor_seq');
    END IF;
    -- an explicit cursor, or one a session cached before the fence (a sequence altered to
    -- CACHE more than 1, which doctor reports), would be handed out under the horizon
    IF NEW.cursor < floor THEN
        RAISE EXCEPTION 'EVENT_CURSOR: job_events: a cursor is not below its transaction''s feed fence';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: job_events: job_id names no job';
    END IF;
    IF NEW.seq IS DISTINCT FROM coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1 THEN
        RAISE EXCEPTION 'EVENT_SEQ: job_events: seq must follow the job''s last event';
    END IF;
    RETURN NEW;
END $$;
