-- runledger on PostgreSQL, schema version 1 (issue 17): jobs and their audit rows, job
-- events, ingestion runs and due slots, with the same rules as the SQLite schema (V1..V6),
-- enforced by PostgreSQL itself.
--
-- The file is named P1__ (not V1__) on purpose: refinery's embed_migrations! for the SQLite
-- schema walks migrations/ recursively, and a V-file here would join the SQLite history.
-- src/pg/db.rs hands this text to refinery as version 1 of the PostgreSQL history.
--
-- Conventions, as in SQLite:
--   * timestamps are canonical UTC text `2026-11-22T11:30:00.000Z` (runledger_ts_ok: the
--     shape and a real calendar day), compared as text; the hashes of the logs cover them;
--   * trigger messages are `CODE: table: rule`; src/pg/error.rs maps them with
--     Error::from_trigger_message, exactly as Error::from_sqlite does;
--   * the logs' JSON (`audit_log.detail`, `job_events.payload`) is `json`, which keeps the
--     exact text the hash chain was computed over; every other JSON column is `jsonb`;
--   * state machines are PL/pgSQL trigger functions whose pair lists equal the Rust tables
--     (tests/pg: *_state_machine_agrees_with_sql).

-------------------------------------------------------------------------------- helpers
-- The helpers are PL/pgSQL, not SQL functions: a CHECK does not inline a SQL function and
-- re-plans its body at every statement (about 65 us a call, ten calls a job update), while
-- PL/pgSQL keeps its plans for the session (measured: nearly free; BENCHMARKS.md).

-- A canonical timestamp: the fixed-width shape and a day that exists (leap years by the
-- Gregorian rule; the calendar repeats every 400 years).
CREATE FUNCTION runledger_ts_ok(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF t IS NULL THEN
        RETURN true;
    END IF;
    IF t !~ '^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$' THEN
        RETURN false;
    END IF;
    RETURN substr(t, 9, 2)::int <= extract(day FROM make_date(2000 + substr(t, 1, 4)::int % 400, substr(t, 6, 2)::int, 1)
                                                   + interval '1 month' - interval '1 day')::int;
END $$;

-- Milliseconds since the epoch of a canonical timestamp (for duration checks).
CREATE FUNCTION runledger_ts_ms(t text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (extract(epoch FROM (replace(t, 'Z', '+00:00'))::timestamptz) * 1000)::bigint;
END $$;

-- A printable name: 1..max bytes, no control characters (C0, DEL, C1).
CREATE FUNCTION runledger_name_ok(t text, max int) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN t IS NULL OR (octet_length(t) BETWEEN 1 AND max AND t !~ '[\u0001-\u001f\u007f-\u009f]');
END $$;

-- A stable code or identifier: 1..64 of [A-Za-z0-9_.:-].
CREATE FUNCTION runledger_code_ok(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN t IS NULL OR t ~ '^[A-Za-z0-9_.:-]{1,64}$';
END $$;

---------------------------------------------------------------------------------- jobs
CREATE TABLE jobs (
    id             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        text    NOT NULL CHECK (runledger_name_ok(user_id, 256)),
    kind           text    NOT NULL CHECK (runledger_code_ok(kind)),
    state          text    NOT NULL DEFAULT 'created'
                   CHECK (state IN ('created', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    input          jsonb   NOT NULL DEFAULT '{}' CHECK (octet_length(input::text) <= 4194304),
    result         jsonb   CHECK (result IS NULL OR octet_length(result::text) <= 4194304),
    error_code     text    CHECK (runledger_code_ok(error_code)),
    error_message  text,
    progress       integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    step           text    CHECK (step IS NULL OR octet_length(step) <= 256),
    checkpoint     jsonb,
    checkpoint_at  text    CHECK (runledger_ts_ok(checkpoint_at)),
    tags           jsonb   NOT NULL DEFAULT '[]'
                   CHECK (jsonb_typeof(tags) = 'array' AND jsonb_array_length(tags) <= 32),
    parent_id      bigint  REFERENCES jobs(id) ON DELETE SET NULL,
    timeout_ms     bigint  CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    max_retries    bigint  NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    attempt        bigint  NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    worker_id      text    CHECK (runledger_name_ok(worker_id, 256)),
    recovery_count bigint  NOT NULL DEFAULT 0 CHECK (recovery_count >= 0),
    created_at     text    NOT NULL CHECK (runledger_ts_ok(created_at)),
    updated_at     text    NOT NULL CHECK (runledger_ts_ok(updated_at)),
    started_at     text    CHECK (runledger_ts_ok(started_at)),
    heartbeat_at   text    CHECK (runledger_ts_ok(heartbeat_at)),
    finished_at    text    CHECK (runledger_ts_ok(finished_at)),
    CHECK (parent_id IS NULL OR parent_id <> id),
    -- timestamps agree with the state
    CHECK ((state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (state NOT IN ('running', 'paused', 'completed') OR started_at IS NOT NULL),
    CHECK (state <> 'created' OR (started_at IS NULL AND heartbeat_at IS NULL AND worker_id IS NULL)),
    CHECK (state <> 'running' OR (heartbeat_at IS NOT NULL AND worker_id IS NOT NULL AND attempt > 0)),
    CHECK (started_at IS NULL OR started_at >= created_at),
    -- outcome columns agree with the state
    CHECK (state = 'completed' OR result IS NULL),
    CHECK (state <> 'completed' OR progress = 100),
    CHECK ((state = 'failed') = (error_code IS NOT NULL)),
    CHECK ((checkpoint IS NULL) = (checkpoint_at IS NULL)),
    -- why an operator cancelled it (SQLite: V9): only on a cancelled job, 1..1000 bytes
    cancel_reason  text    CHECK (cancel_reason IS NULL OR octet_length(cancel_reason) BETWEEN 1 AND 1000),
    CHECK (cancel_reason IS NULL OR state = 'cancelled')
);

-- The claim walks created jobs in id order and reads the kind from the index: INCLUDE, not a
-- key column, so the planner never turns `kind = any(...)` into an index condition that
-- returns every created job of the kind to sort them (O(n) per claim).
CREATE INDEX jobs_claim ON jobs (id) INCLUDE (kind) WHERE state = 'created';
CREATE INDEX jobs_running_heartbeat ON jobs (heartbeat_at) WHERE state = 'running';
CREATE INDEX jobs_user ON jobs (user_id, id);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

CREATE FUNCTION jobs_insert_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM 'created' OR NEW.attempt IS DISTINCT FROM 0
       OR NEW.recovery_count IS DISTINCT FROM 0 OR NEW.progress IS DISTINCT FROM 0
       OR NEW.step IS NOT NULL OR NEW.checkpoint IS NOT NULL OR NEW.finished_at IS NOT NULL
       OR NEW.updated_at IS DISTINCT FROM NEW.created_at THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: a job starts created with attempt 0';
    END IF;
    IF NEW.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.parent_id) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: jobs: parent_id names no job';
    END IF;
    IF jsonb_typeof(NEW.tags) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements(NEW.tags) e
            WHERE jsonb_typeof(e) <> 'string' OR octet_length(e #>> '{}') NOT BETWEEN 1 AND 64) THEN
        RAISE EXCEPTION 'INVALID_SHAPE: jobs: tags are 1..64-byte strings';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_insert_created BEFORE INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_insert_created();

-- Every update: identity, the machine (src/job/state.rs TRANSITIONS), fencing, and
-- terminal rows frozen. The same checks, in the same order, as SQLite's jobs_state_machine.
CREATE FUNCTION jobs_state_machine() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.user_id IS DISTINCT FROM OLD.user_id
       OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.tags IS DISTINCT FROM OLD.tags
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.timeout_ms IS DISTINCT FROM OLD.timeout_ms OR NEW.max_retries IS DISTINCT FROM OLD.max_retries THEN
        RAISE EXCEPTION 'IMMUTABLE: jobs: id, owner, kind, tags, limits and created_at never change';
    END IF;
    IF NEW.parent_id IS DISTINCT FROM OLD.parent_id THEN
        IF NEW.parent_id IS NOT NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.parent_id) THEN
            RAISE EXCEPTION 'IMMUTABLE: jobs: parent_id only clears when its parent is gone';
        END IF;
    END IF;
    -- (an array, not a VALUES list: a simple expression PL/pgSQL evaluates without a query)
    IF NEW.state IS DISTINCT FROM OLD.state
       AND NOT (OLD.state || '>' || NEW.state) = ANY (ARRAY[
            'created>running', 'created>cancelled',
            'running>paused', 'running>completed', 'running>failed',
            'running>cancelled', 'running>created',
            'paused>running', 'paused>created', 'paused>cancelled', 'paused>failed',
            'failed>created', 'cancelled>created']) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: not a transition of the job machine';
    END IF;
    IF OLD.state = 'completed'
       AND (NEW.state, NEW.input, NEW.result, NEW.error_code, NEW.error_message, NEW.progress,
            NEW.step, NEW.checkpoint, NEW.checkpoint_at, NEW.attempt, NEW.worker_id,
            NEW.recovery_count, NEW.updated_at, NEW.started_at, NEW.heartbeat_at, NEW.finished_at)
           IS DISTINCT FROM
           (OLD.state, OLD.input, OLD.result, OLD.error_code, OLD.error_message, OLD.progress,
            OLD.step, OLD.checkpoint, OLD.checkpoint_at, OLD.attempt, OLD.worker_id,
            OLD.recovery_count, OLD.updated_at, OLD.started_at, OLD.heartbeat_at, OLD.finished_at) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: completed is final';
    END IF;
    IF OLD.state IN ('created', 'paused', 'failed', 'cancelled') AND NEW.state = OLD.state
       AND ((NEW.input, NEW.result, NEW.error_code, NEW.error_message, NEW.progress, NEW.step,
             NEW.checkpoint, NEW.checkpoint_at, NEW.attempt, NEW.worker_id, NEW.started_at,
             NEW.heartbeat_at, NEW.finished_at, NEW.cancel_reason)
            IS DISTINCT FROM
            (OLD.input, OLD.result, OLD.error_code, OLD.error_message, OLD.progress, OLD.step,
             OLD.checkpoint, OLD.checkpoint_at, OLD.attempt, OLD.worker_id, OLD.started_at,
             OLD.heartbeat_at, OLD.finished_at, OLD.cancel_reason)
            OR (NEW.recovery_count IS DISTINCT FROM OLD.recovery_count AND NEW.recovery_count <> 0)) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: a job that is not running only has its recovery count reset';
    END IF;
    -- Invariant 6 (fencing): the attempt grows by exactly one exactly when the job is
    -- claimed (enters running), and a running job keeps its worker.
    IF (NEW.attempt IS DISTINCT FROM OLD.attempt
        OR (NEW.state = 'running' AND OLD.state <> 'running')
        OR (NEW.state = 'running' AND OLD.state = 'running' AND NEW.worker_id IS DISTINCT FROM OLD.worker_id))
       AND NOT (NEW.state = 'running' AND OLD.state IN ('created', 'paused') AND NEW.attempt = OLD.attempt + 1) THEN
        RAISE EXCEPTION 'STALE_ATTEMPT: jobs: attempt changes only by one on claim';
    END IF;
    IF NEW.recovery_count IS DISTINCT FROM OLD.recovery_count AND NEW.recovery_count <> 0
       AND NOT (NEW.recovery_count = OLD.recovery_count + 1 AND OLD.state = 'running') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: recovery_count only grows on recovery, or resets';
    END IF;
    IF NEW.started_at IS DISTINCT FROM OLD.started_at AND NEW.state <> 'created'
       AND NOT (OLD.state = 'created' AND NEW.state = 'running') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: started_at is set by the first claim only';
    END IF;
    IF OLD.finished_at IS NOT NULL AND NEW.finished_at IS NOT NULL AND NEW.finished_at <> OLD.finished_at THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: a finished job keeps its finish time';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_state_machine BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_state_machine();

CREATE FUNCTION jobs_delete_terminal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state NOT IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: jobs: only terminal jobs may be deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER jobs_delete_terminal_only BEFORE DELETE ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_delete_terminal_only();

-- TRUNCATE skips row triggers: refuse it on every table whose rows have rules.
CREATE FUNCTION runledger_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: %: truncate would skip the row rules', TG_TABLE_NAME;
END $$;
CREATE TRIGGER jobs_no_truncate BEFORE TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

----------------------------------------------------------------------------- audit_log
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity    text   NOT NULL CHECK (entity IN ('job', 'run', 'schedule', 'supervisor')),
    entity_id text   NOT NULL CHECK (runledger_name_ok(entity_id, 256)),
    action    text   NOT NULL CHECK (runledger_code_ok(action)),
    actor     text   NOT NULL CHECK (runledger_name_ok(actor, 256)),
    at        text   NOT NULL CHECK (runledger_ts_ok(at)),
    -- json, not jsonb: the exact text the chain hash was computed over (src/integrity.rs)
    detail    json   NOT NULL DEFAULT '{}' CHECK (json_typeof(detail) = 'object'),
    hash      text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);

CREATE FUNCTION audit_log_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: audit_log';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_immutable();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

---------------------------------------------------------------------------- job_events
CREATE TABLE job_events (
    cursor    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id    bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq       bigint NOT NULL CHECK (seq >= 1),
    kind      text   NOT NULL CHECK (kind IN ('created', 'claimed', 'progress', 'checkpoint', 'paused',
                                              'resumed', 'recovered', 'completed', 'failed', 'cancelled',
                                              'restarted')),
    payload   json   NOT NULL DEFAULT '{}' CHECK (json_typeof(payload) = 'object'),
    at        text   NOT NULL CHECK (runledger_ts_ok(at)),
    prev_hash text   NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash      text   NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    UNIQUE (job_id, seq)
);

-- A job's newest event, read by the statement that changes the job (under its row lock), so
-- the change's event is appended without a look-up of its own (src/pg/storage/jobs.rs).
CREATE FUNCTION job_events_last_seq(job bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT seq FROM job_events WHERE job_id = job ORDER BY seq DESC LIMIT 1);
END $$;
CREATE FUNCTION job_events_last_hash(job bigint) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (SELECT hash FROM job_events WHERE job_id = job ORDER BY seq DESC LIMIT 1);
END $$;

-- Each event follows its job's last one (the writer holds the job's row lock, taken by the
-- job change the event records).
CREATE FUNCTION job_events_seq_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: job_events: job_id names no job';
    END IF;
    IF NEW.seq IS DISTINCT FROM coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1 THEN
        RAISE EXCEPTION 'EVENT_SEQ: job_events: seq must follow the job''s last event';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER job_events_seq_follows BEFORE INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_seq_follows();

-- Bounded backlog: keep the newest 200 events of each job.
CREATE FUNCTION job_events_prune() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq > 200 THEN
        DELETE FROM job_events WHERE job_id = NEW.job_id AND seq <= NEW.seq - 200;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER job_events_prune AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_prune();

CREATE FUNCTION job_events_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: job_events';
END $$;
CREATE TRIGGER job_events_no_update BEFORE UPDATE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_no_update();

-- Only the pruning (events 200 behind the newest) and the removal of a deleted job's
-- events (the foreign key's cascade runs after the job row is gone) may delete.
CREATE FUNCTION job_events_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > (SELECT max(seq) FROM job_events WHERE job_id = OLD.job_id) - 200
       AND EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id) THEN
        RAISE EXCEPTION 'IMMUTABLE: job_events';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER job_events_no_delete BEFORE DELETE ON job_events
    FOR EACH ROW EXECUTE FUNCTION job_events_no_delete();
CREATE TRIGGER job_events_no_truncate BEFORE TRUNCATE ON job_events
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

--------------------------------------------------------------------------- ingest_runs
-- One timeline entry of the one shape src/run/timeline.rs reads (version 1, every key).
CREATE FUNCTION runledger_timeline_ok(timeline jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN jsonb_typeof(timeline) = 'array' AND NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements(timeline) e WHERE NOT coalesce((
            jsonb_typeof(e) = 'object'
            AND (SELECT count(*) FROM jsonb_object_keys(e)) = 11
            AND jsonb_typeof(e->'v') = 'number' AND e->>'v' = '1'
            AND jsonb_typeof(e->'stage') = 'string'
            AND e->>'kind' IN ('lock', 'gate', 'runner')
            AND jsonb_typeof(e->'attempt') = 'number' AND e->>'attempt' ~ '^[0-9]{1,10}$'
            AND (e->>'attempt')::bigint <= 4294967295
            AND e->>'status' IN ('started', 'success', 'failed', 'skipped')
            AND jsonb_typeof(e->'started_at') = 'string' AND runledger_ts_ok(e->>'started_at')
            AND jsonb_typeof(e->'finished_at') IN ('null', 'string') AND runledger_ts_ok(e->>'finished_at')
            AND jsonb_typeof(e->'duration_ms') IN ('null', 'number')
            AND jsonb_typeof(e->'error_code') IN ('null', 'string')
            AND jsonb_typeof(e->'message') IN ('null', 'string')
            AND e ? 'detail'), false));
END $$;

CREATE TABLE ingest_runs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline         text   NOT NULL CHECK (pipeline ~ '^[A-Za-z0-9_.-]{1,64}$'),
    scope            text   NOT NULL CHECK (scope IN ('targets', 'universe')),
    trigger          text   NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    status           text   NOT NULL DEFAULT 'started' CHECK (status IN ('started', 'success', 'failed')),
    -- Invariant 3: at most one started run per lock key (ingest_runs_one_active), and the
    -- key is exactly `pipeline:scope[:account]`, so no second spelling escapes the index.
    lock_key         text   NOT NULL CHECK (lock_key = pipeline || ':' || scope || coalesce(':' || account_id, '')),
    account_id       text   CHECK (runledger_name_ok(account_id, 128)),
    started_at       text   NOT NULL CHECK (runledger_ts_ok(started_at)),
    lease_expires_at text   CHECK (runledger_ts_ok(lease_expires_at)),
    finished_at      text   CHECK (runledger_ts_ok(finished_at)),
    duration_ms      bigint CHECK (duration_ms IS NULL OR duration_ms >= 0),
    error_code       text   CHECK (runledger_code_ok(error_code)),
    error_message    text,
    timeline         jsonb  NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(timeline) = 'array'),
    meta_json        jsonb  NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(meta_json) = 'object'),
    CHECK ((status = 'started') = (finished_at IS NULL)),
    CHECK ((finished_at IS NULL) = (duration_ms IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at),
    CHECK (duration_ms IS NULL OR duration_ms = runledger_ts_ms(finished_at) - runledger_ts_ms(started_at)),
    CHECK (status <> 'started' OR lease_expires_at IS NOT NULL),
    CHECK (lease_expires_at IS NULL OR lease_expires_at >= started_at),
    CHECK ((status = 'failed') = (error_code IS NOT NULL)),
    CHECK (status = 'failed' OR error_message IS NULL),
    CHECK (NOT meta_json ? 'source' OR (meta_json->>'source') IS NOT DISTINCT FROM trigger),
    CHECK (NOT meta_json ? 'scope' OR (meta_json->>'scope') IS NOT DISTINCT FROM scope),
    CHECK (NOT meta_json ? 'blockedStage'
           OR (status = 'failed' AND jsonb_typeof(meta_json->'blockedStage') = 'string'
               AND (meta_json->>'errorCode') IS NOT DISTINCT FROM error_code
               AND jsonb_typeof(meta_json->'source') = 'string' AND jsonb_typeof(meta_json->'scope') = 'string'))
);
CREATE UNIQUE INDEX ingest_runs_one_active ON ingest_runs (lock_key) WHERE status = 'started';
CREATE INDEX ingest_runs_lease ON ingest_runs (lease_expires_at) WHERE status = 'started';
CREATE INDEX ingest_runs_started ON ingest_runs (started_at);
CREATE INDEX ingest_runs_slot ON ingest_runs ((meta_json->>'slotId')) WHERE meta_json ? 'slotId';

-- A run is born started (or, turned away before it could hold its lock, directly failed
-- with meta_json.blockedStage). The one-started-run rule itself is the unique index: a
-- trigger's look-up could not see a concurrent, uncommitted start.
CREATE FUNCTION ingest_runs_insert_started() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (NEW.status = 'started'
            OR (NEW.status = 'failed' AND jsonb_typeof(NEW.meta_json->'blockedStage') = 'string')) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: ingest_runs: a run starts as started (or failed when blocked)';
    END IF;
    IF NOT runledger_timeline_ok(NEW.timeline) THEN
        RAISE EXCEPTION 'INVALID_SHAPE: ingest_runs: a timeline entry of a shape no reader knows';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ingest_runs_insert_started BEFORE INSERT ON ingest_runs
    FOR EACH ROW EXECUTE FUNCTION ingest_runs_insert_started();

-- Every update: terminal runs are final; the machine (src/run/state.rs TRANSITIONS);
-- identity; an append-only timeline (the last entry may only be closed in place).
CREATE FUNCTION ingest_runs_state_machine() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n int;
    o jsonb;
    w jsonb;
BEGIN
    IF OLD.status <> 'started' THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: ingest_runs: terminal runs are immutable';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES ('started', 'success'), ('started', 'failed')) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: ingest_runs: not a transition of the run machine';
    END IF;
    IF (NEW.id, NEW.pipeline, NEW.scope, NEW.trigger, NEW.lock_key, NEW.account_id, NEW.started_at)
       IS DISTINCT FROM (OLD.id, OLD.pipeline, OLD.scope, OLD.trigger, OLD.lock_key, OLD.account_id, OLD.started_at) THEN
        RAISE EXCEPTION 'IMMUTABLE: ingest_runs: identity columns';
    END IF;
    IF NEW.timeline IS DISTINCT FROM OLD.timeline THEN
        n := jsonb_array_length(OLD.timeline);
        IF jsonb_typeof(NEW.timeline) <> 'array' OR jsonb_array_length(NEW.timeline) < n THEN
            RAISE EXCEPTION 'IMMUTABLE: ingest_runs: timeline entries';
        END IF;
        FOR i IN 0 .. n - 1 LOOP
            o := OLD.timeline -> i;
            w := NEW.timeline -> i;
            IF w IS DISTINCT FROM o
               AND (i < n - 1 OR (o->>'status') IS DISTINCT FROM 'started'
                    OR (w->'stage') IS DISTINCT FROM (o->'stage')
                    OR (w->'attempt') IS DISTINCT FROM (o->'attempt')
                    OR (w->'started_at') IS DISTINCT FROM (o->'started_at')) THEN
                RAISE EXCEPTION 'IMMUTABLE: ingest_runs: timeline entries';
            END IF;
        END LOOP;
        IF NOT runledger_timeline_ok(NEW.timeline) THEN
            RAISE EXCEPTION 'INVALID_SHAPE: ingest_runs: a timeline entry of a shape no reader knows';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ingest_runs_state_machine BEFORE UPDATE ON ingest_runs
    FOR EACH ROW EXECUTE FUNCTION ingest_runs_state_machine();

CREATE FUNCTION ingest_runs_delete_terminal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'started' THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: ingest_runs: a started run cannot be deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER ingest_runs_delete_terminal_only BEFORE DELETE ON ingest_runs
    FOR EACH ROW EXECUTE FUNCTION ingest_runs_delete_terminal_only();
CREATE TRIGGER ingest_runs_no_truncate BEFORE TRUNCATE ON ingest_runs
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

----------------------------------------------------------------------------- schedules
CREATE TABLE schedules (
    id          bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text    NOT NULL UNIQUE CHECK (runledger_name_ok(name, 64)),
    pipeline    text    NOT NULL CHECK (pipeline ~ '^[A-Za-z0-9_.-]{1,64}$'),
    scope       text    NOT NULL CHECK (scope IN ('targets', 'universe', 'both')),
    -- the shape of src/schedule/rule.rs's canonical text (Rust checks the weekday list's
    -- canonical order; this CHECK its alphabet)
    rule        text    NOT NULL CHECK (rule ~ '^(daily ([01][0-9]|2[0-3]):[0-5][0-9]( [a-z,-]{3,27})?|every [1-9][0-9]{0,4}m|every [1-9][0-9]{0,2}h)$'),
    zone        text    NOT NULL CHECK (zone ~ '^[A-Za-z0-9_+/-]{1,64}$'),
    enabled     boolean NOT NULL DEFAULT true,
    misfire     text    NOT NULL DEFAULT 'latest_only' CHECK (misfire IN ('latest_only', 'all', 'skip')),
    last_due_at text    CHECK (runledger_ts_ok(last_due_at)),
    next_due_at text    CHECK (runledger_ts_ok(next_due_at)),
    created_at  text    NOT NULL CHECK (runledger_ts_ok(created_at)),
    updated_at  text    NOT NULL CHECK (runledger_ts_ok(updated_at)),
    CHECK (updated_at >= created_at),
    CHECK (next_due_at IS NULL OR last_due_at IS NULL OR next_due_at > last_due_at)
);

-- The high-water mark only moves forward, so a clock that jumps backwards (or a node whose
-- clock is behind) never materializes, and so never fires, a slot twice.
CREATE FUNCTION schedules_high_water_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'IMMUTABLE: schedules: id and created_at never change';
    END IF;
    IF OLD.last_due_at IS NOT NULL AND (NEW.last_due_at IS NULL OR NEW.last_due_at < OLD.last_due_at) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: schedules: last_due_at only moves forward';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER schedules_high_water_mark BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION schedules_high_water_mark();

CREATE FUNCTION schedules_delete_idle_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM due_runs WHERE schedule_id = OLD.id AND status = 'claimed') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: schedules: a slot of this schedule is being fired';
    END IF;
    RETURN OLD;
END $$;

------------------------------------------------------------------------------ due_runs
CREATE TABLE due_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule_id     bigint NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    due_at          text   NOT NULL CHECK (runledger_ts_ok(due_at)),
    status          text   NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'claimed', 'fired', 'skipped', 'failed')),
    created_at      text   NOT NULL CHECK (runledger_ts_ok(created_at)),
    claimed_at      text   CHECK (runledger_ts_ok(claimed_at)),
    claimed_by      text   CHECK (runledger_name_ok(claimed_by, 256)),
    finished_at     text   CHECK (runledger_ts_ok(finished_at)),
    run_ids         jsonb  NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(run_ids) = 'array'),
    outcome_code    text   CHECK (runledger_code_ok(outcome_code)),
    outcome_message text,
    UNIQUE (schedule_id, due_at),
    CHECK (created_at >= due_at),
    CHECK (claimed_at IS NULL OR claimed_at >= created_at),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (finished_at IS NULL OR claimed_at IS NULL OR finished_at >= claimed_at),
    CHECK ((status IN ('fired', 'skipped', 'failed')) = (finished_at IS NOT NULL)),
    CHECK ((claimed_at IS NULL) = (claimed_by IS NULL)),
    CHECK (status <> 'pending' OR claimed_at IS NULL),
    CHECK (status NOT IN ('claimed', 'fired', 'failed') OR claimed_at IS NOT NULL),
    CHECK (status IN ('fired', 'skipped', 'failed') OR (run_ids = '[]' AND outcome_code IS NULL)),
    CHECK (status <> 'fired' OR (jsonb_array_length(run_ids) > 0 AND outcome_code IS NULL)),
    CHECK ((status IN ('skipped', 'failed')) = (outcome_code IS NOT NULL)),
    CHECK (outcome_message IS NULL OR outcome_code IS NOT NULL)
);
CREATE INDEX due_runs_claim ON due_runs (due_at, id) WHERE status = 'pending';
CREATE INDEX due_runs_claimed ON due_runs (claimed_at) WHERE status = 'claimed';

CREATE TRIGGER schedules_delete_idle_only BEFORE DELETE ON schedules
    FOR EACH ROW EXECUTE FUNCTION schedules_delete_idle_only();
CREATE TRIGGER schedules_no_truncate BEFORE TRUNCATE ON schedules
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

-- A slot is born pending, after its schedule's high-water mark. (Two nodes materializing
-- the same instant meet the UNIQUE (schedule_id, due_at) key; runledger's own writer takes
-- the schedule's row lock first and inserts only after the mark.)
CREATE FUNCTION due_runs_insert_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'pending'
       OR NEW.due_at <= (SELECT last_due_at FROM schedules WHERE id = NEW.schedule_id) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: a slot is born pending, after the last materialized slot';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER due_runs_insert_pending BEFORE INSERT ON due_runs
    FOR EACH ROW EXECUTE FUNCTION due_runs_insert_pending();

-- Every update: terminal slots are final; the machine (src/schedule/state.rs TRANSITIONS);
-- identity; the claim's fence (only the give-back clears a claim); runs that exist.
CREATE FUNCTION due_runs_state_machine() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('fired', 'skipped', 'failed') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: terminal slots are final';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES
            ('pending', 'claimed'), ('pending', 'skipped'),
            ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'),
            ('claimed', 'pending')) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: not a transition of the slot machine';
    END IF;
    IF (NEW.id, NEW.schedule_id, NEW.due_at, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.schedule_id, OLD.due_at, OLD.created_at) THEN
        RAISE EXCEPTION 'IMMUTABLE: due_runs: a slot''s id, schedule and instant never change';
    END IF;
    IF OLD.claimed_by IS NOT NULL
       AND (NEW.claimed_by IS DISTINCT FROM OLD.claimed_by OR NEW.claimed_at IS DISTINCT FROM OLD.claimed_at)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'pending'
                AND NEW.claimed_by IS NULL AND NEW.claimed_at IS NULL) THEN
        RAISE EXCEPTION 'CLAIM_FENCE: due_runs: a claim is never handed to another ticker';
    END IF;
    IF NEW.run_ids IS DISTINCT FROM OLD.run_ids AND jsonb_typeof(NEW.run_ids) = 'array'
       AND EXISTS (SELECT 1 FROM jsonb_array_elements(NEW.run_ids) r
                    WHERE jsonb_typeof(r) <> 'number' OR (r #>> '{}') !~ '^[0-9]{1,18}$'
                       OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = (r #>> '{}')::bigint)) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: due_runs: run_ids name runs that do not exist';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER due_runs_state_machine BEFORE UPDATE ON due_runs
    FOR EACH ROW EXECUTE FUNCTION due_runs_state_machine();

CREATE FUNCTION due_runs_delete_not_claimed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'claimed' THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: a claimed slot cannot be deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER due_runs_delete_not_claimed BEFORE DELETE ON due_runs
    FOR EACH ROW EXECUTE FUNCTION due_runs_delete_not_claimed();
CREATE TRIGGER due_runs_no_truncate BEFORE TRUNCATE ON due_runs
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();
