-- runledger on PostgreSQL, schema version 9: the rules of `jobs` and `job_events`, the two
-- tables every claim, heartbeat and completion writes, as one CHECK per table that calls one
-- PL/pgSQL function over the whole row. The rules are the same expressions as the
-- per-column CHECKs of version 1 they replace (word for word, but for the event hashes and
-- `runledger_code_ok`, spelled below without bounded regular expressions: the same sets),
-- evaluated in the same order (by the old constraint's name, as PostgreSQL orders a table's
-- CHECKs), and a broken rule fails the same way: SQLSTATE 23514 (check_violation), the
-- message `new row for relation "jobs" violates check constraint "jobs_progress_check"`, and
-- the old constraint's name in the error's constraint field. Only the catalog differs:
-- `\d jobs` lists `jobs_row_check`. (`runledger_code_ok` serves every table's code CHECK.)
--
-- Why (BENCHMARKS.md, issue 17): PostgreSQL keeps no CHECK expression between statements.
-- Each INSERT or UPDATE re-reads every CHECK's stored expression tree (21.7 KB of node text
-- for the 33 CHECKs of `jobs`) and plans it again, about 280 us of the 765 us of server CPU
-- a job's claim and completion cost. A CHECK that is one function call is a few bytes to
-- re-read, and PL/pgSQL keeps the function's compiled body and plans for the session.
--
-- A NULL rule passes, as in a CHECK: `IF NOT (rule)` raises only on false. Doctor sees a
-- dropped or NOT VALID row check, and a function whose text changed (its source's md5), as
-- it sees every other schema object.
--
-- The other tables keep their per-column CHECKs: a run, a slot or a probe writes a few rows,
-- not a few per job.

-- A timestamp whose day is 28 or less exists in every month: the calendar is looked up only
-- for the 29th to the 31st (the same answers as version 1's function; fewer date operations).
CREATE OR REPLACE FUNCTION runledger_ts_ok(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF t IS NULL THEN
        RETURN true;
    END IF;
    IF t !~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$' THEN
        RETURN false;
    END IF;
    IF substr(t, 9, 2) COLLATE "C" <= '28' THEN
        RETURN true;
    END IF;
    RETURN substr(t, 9, 2)::int <= extract(day FROM make_date(2000 + substr(t, 1, 4)::int % 400, substr(t, 6, 2)::int, 1)
                                                   + interval '1 month' - interval '1 day')::int;
END $$;

-- A stable code: version 1's `t ~ '^[A-Za-z0-9_.:-]{1,64}$'`, spelled as a length and a
-- negated class (the bounded repetition costs PostgreSQL's regex engine about 4 us a value,
-- the class 0.25 us; measured over 100,000 codes). The alphabet is ASCII, so 1..64 bytes
-- of it are 1..64 characters.
CREATE OR REPLACE FUNCTION runledger_code_ok(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN t IS NULL OR (octet_length(t) BETWEEN 1 AND 64 AND t !~ '[^A-Za-z0-9_.:-]');
END $$;

-- Raises what PostgreSQL raises for a CHECK constraint `con` of table `tbl` that a new row
-- breaks (without the row in a DETAIL: job inputs stay out of server logs).
CREATE FUNCTION runledger_check_failed(tbl text, con text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', SCHEMA = current_schema(), TABLE = tbl,
        CONSTRAINT = con,
        MESSAGE = format('new row for relation "%s" violates check constraint "%s"', tbl, con);
END $$;

---------------------------------------------------------------------------------- jobs
CREATE FUNCTION jobs_row_ok(r jobs) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT (r.attempt >= 0) THEN
        RETURN runledger_check_failed('jobs', 'jobs_attempt_check'); END IF;
    IF NOT (r.cancel_reason IS NULL OR octet_length(r.cancel_reason) BETWEEN 1 AND 1000) THEN
        RETURN runledger_check_failed('jobs', 'jobs_cancel_reason_check'); END IF;
    IF NOT (r.parent_id IS NULL OR r.parent_id <> r.id) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check'); END IF;
    -- timestamps agree with the state
    IF NOT ((r.state IN ('completed', 'failed', 'cancelled')) = (r.finished_at IS NOT NULL)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check1'); END IF;
    -- outcome columns agree with the state
    IF NOT ((r.checkpoint IS NULL) = (r.checkpoint_at IS NULL)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check10'); END IF;
    -- why an operator cancelled it: only on a cancelled job
    IF NOT (r.cancel_reason IS NULL OR r.state = 'cancelled') THEN
        RETURN runledger_check_failed('jobs', 'jobs_check11'); END IF;
    IF NOT (r.finished_at IS NULL OR r.finished_at >= r.created_at) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check2'); END IF;
    IF NOT (r.state NOT IN ('running', 'paused', 'completed') OR r.started_at IS NOT NULL) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check3'); END IF;
    IF NOT (r.state <> 'created' OR (r.started_at IS NULL AND r.heartbeat_at IS NULL AND r.worker_id IS NULL)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check4'); END IF;
    IF NOT (r.state <> 'running' OR (r.heartbeat_at IS NOT NULL AND r.worker_id IS NOT NULL AND r.attempt > 0)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check5'); END IF;
    IF NOT (r.started_at IS NULL OR r.started_at >= r.created_at) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check6'); END IF;
    IF NOT (r.state = 'completed' OR r.result IS NULL) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check7'); END IF;
    IF NOT (r.state <> 'completed' OR r.progress = 100) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check8'); END IF;
    IF NOT ((r.state = 'failed') = (r.error_code IS NOT NULL)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_check9'); END IF;
    IF NOT (runledger_ts_ok(r.checkpoint_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_checkpoint_at_check'); END IF;
    IF NOT (runledger_ts_ok(r.created_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_created_at_check'); END IF;
    IF NOT (runledger_code_ok(r.error_code)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_error_code_check'); END IF;
    IF NOT (runledger_ts_ok(r.finished_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_finished_at_check'); END IF;
    IF NOT (runledger_ts_ok(r.heartbeat_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_heartbeat_at_check'); END IF;
    IF NOT (octet_length(r.input::text) <= 4194304) THEN
        RETURN runledger_check_failed('jobs', 'jobs_input_check'); END IF;
    IF NOT (runledger_code_ok(r.kind)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_kind_check'); END IF;
    IF NOT (r.max_retries >= 0) THEN
        RETURN runledger_check_failed('jobs', 'jobs_max_retries_check'); END IF;
    IF NOT (r.progress BETWEEN 0 AND 100) THEN
        RETURN runledger_check_failed('jobs', 'jobs_progress_check'); END IF;
    IF NOT (r.recovery_count >= 0) THEN
        RETURN runledger_check_failed('jobs', 'jobs_recovery_count_check'); END IF;
    IF NOT (r.result IS NULL OR octet_length(r.result::text) <= 4194304) THEN
        RETURN runledger_check_failed('jobs', 'jobs_result_check'); END IF;
    IF NOT (runledger_ts_ok(r.started_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_started_at_check'); END IF;
    IF NOT (r.state IN ('created', 'running', 'paused', 'completed', 'failed', 'cancelled')) THEN
        RETURN runledger_check_failed('jobs', 'jobs_state_check'); END IF;
    IF NOT (r.step IS NULL OR octet_length(r.step) <= 256) THEN
        RETURN runledger_check_failed('jobs', 'jobs_step_check'); END IF;
    IF NOT (jsonb_typeof(r.tags) = 'array' AND jsonb_array_length(r.tags) <= 32) THEN
        RETURN runledger_check_failed('jobs', 'jobs_tags_check'); END IF;
    IF NOT (r.timeout_ms IS NULL OR r.timeout_ms > 0) THEN
        RETURN runledger_check_failed('jobs', 'jobs_timeout_ms_check'); END IF;
    IF NOT (runledger_ts_ok(r.updated_at)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_updated_at_check'); END IF;
    IF NOT (runledger_name_ok(r.user_id, 256)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_user_id_check'); END IF;
    IF NOT (runledger_name_ok(r.worker_id, 256)) THEN
        RETURN runledger_check_failed('jobs', 'jobs_worker_id_check'); END IF;
    RETURN true;
END $$;

-- IF EXISTS: a ledger whose CHECK was dropped by hand gets the rule back here, and version
-- 11 checks its rows against it.
ALTER TABLE jobs
    DROP CONSTRAINT IF EXISTS jobs_attempt_check,
    DROP CONSTRAINT IF EXISTS jobs_cancel_reason_check,
    DROP CONSTRAINT IF EXISTS jobs_check,
    DROP CONSTRAINT IF EXISTS jobs_check1,
    DROP CONSTRAINT IF EXISTS jobs_check10,
    DROP CONSTRAINT IF EXISTS jobs_check11,
    DROP CONSTRAINT IF EXISTS jobs_check2,
    DROP CONSTRAINT IF EXISTS jobs_check3,
    DROP CONSTRAINT IF EXISTS jobs_check4,
    DROP CONSTRAINT IF EXISTS jobs_check5,
    DROP CONSTRAINT IF EXISTS jobs_check6,
    DROP CONSTRAINT IF EXISTS jobs_check7,
    DROP CONSTRAINT IF EXISTS jobs_check8,
    DROP CONSTRAINT IF EXISTS jobs_check9,
    DROP CONSTRAINT IF EXISTS jobs_checkpoint_at_check,
    DROP CONSTRAINT IF EXISTS jobs_created_at_check,
    DROP CONSTRAINT IF EXISTS jobs_error_code_check,
    DROP CONSTRAINT IF EXISTS jobs_finished_at_check,
    DROP CONSTRAINT IF EXISTS jobs_heartbeat_at_check,
    DROP CONSTRAINT IF EXISTS jobs_input_check,
    DROP CONSTRAINT IF EXISTS jobs_kind_check,
    DROP CONSTRAINT IF EXISTS jobs_max_retries_check,
    DROP CONSTRAINT IF EXISTS jobs_progress_check,
    DROP CONSTRAINT IF EXISTS jobs_recovery_count_check,
    DROP CONSTRAINT IF EXISTS jobs_result_check,
    DROP CONSTRAINT IF EXISTS jobs_started_at_check,
    DROP CONSTRAINT IF EXISTS jobs_state_check,
    DROP CONSTRAINT IF EXISTS jobs_step_check,
    DROP CONSTRAINT IF EXISTS jobs_tags_check,
    DROP CONSTRAINT IF EXISTS jobs_timeout_ms_check,
    DROP CONSTRAINT IF EXISTS jobs_updated_at_check,
    DROP CONSTRAINT IF EXISTS jobs_user_id_check,
    DROP CONSTRAINT IF EXISTS jobs_worker_id_check,
    -- new rows are checked from here on; existing ones by version 11, without holding writers
    ADD CONSTRAINT jobs_row_check CHECK (jobs_row_ok(jobs)) NOT VALID;

---------------------------------------------------------------------------- job_events
CREATE FUNCTION job_events_row_ok(r job_events) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT (runledger_ts_ok(r.at)) THEN
        RETURN runledger_check_failed('job_events', 'job_events_at_check'); END IF;
    -- a hash is 64 of [0-9a-f]: version 1's `hash ~ '^[0-9a-f]{64}$'`, spelled as a length
    -- and a negated class (the bounded repetition costs PostgreSQL's regex engine about 12 us
    -- a value, the class under 1 us; measured over 100,000 hashes)
    IF NOT (octet_length(r.hash) = 64 AND r.hash !~ '[^0-9a-f]') THEN
        RETURN runledger_check_failed('job_events', 'job_events_hash_check'); END IF;
    IF NOT (r.kind IN ('created', 'claimed', 'progress', 'checkpoint', 'paused', 'resumed',
                       'recovered', 'completed', 'failed', 'cancelled', 'restarted')) THEN
        RETURN runledger_check_failed('job_events', 'job_events_kind_check'); END IF;
    IF NOT (json_typeof(r.payload) = 'object') THEN
        RETURN runledger_check_failed('job_events', 'job_events_payload_check'); END IF;
    IF NOT (octet_length(r.prev_hash) = 64 AND r.prev_hash !~ '[^0-9a-f]') THEN
        RETURN runledger_check_failed('job_events', 'job_events_prev_hash_check'); END IF;
    IF NOT (r.seq >= 1) THEN
        RETURN runledger_check_failed('job_events', 'job_events_seq_check'); END IF;
    RETURN true;
END $$;

ALTER TABLE job_events
    DROP CONSTRAINT IF EXISTS job_events_at_check,
    DROP CONSTRAINT IF EXISTS job_events_hash_check,
    DROP CONSTRAINT IF EXISTS job_events_kind_check,
    DROP CONSTRAINT IF EXISTS job_events_payload_check,
    DROP CONSTRAINT IF EXISTS job_events_prev_hash_check,
    DROP CONSTRAINT IF EXISTS job_events_seq_check,
    ADD CONSTRAINT job_events_row_check CHECK (job_events_row_ok(job_events)) NOT VALID;
