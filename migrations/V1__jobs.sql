-- Durable jobs and the append-only audit log.
--
-- The job state machine lives here and in src/job/state.rs (TRANSITIONS); the test
-- job_state_machine_agrees_with_sql proves the two equal.
-- Timestamps are fixed-width UTC text: 2026-11-22T11:30:00.000Z.

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        TEXT    NOT NULL CHECK (length(user_id) BETWEEN 1 AND 256),
    kind           TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 64 AND kind NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    state          TEXT    NOT NULL DEFAULT 'created'
                   CHECK (state IN ('created', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    input          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    result         TEXT    CHECK (result IS NULL OR json_valid(result)),
    error_code     TEXT,
    error_message  TEXT,
    progress       INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    step           TEXT    CHECK (step IS NULL OR length(step) <= 256),
    checkpoint     TEXT    CHECK (checkpoint IS NULL OR json_valid(checkpoint)),
    checkpoint_at  TEXT,
    tags           TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    parent_id      INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    timeout_ms     INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    max_retries    INTEGER NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    attempt        INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    worker_id      TEXT,
    recovery_count INTEGER NOT NULL DEFAULT 0 CHECK (recovery_count >= 0),
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    started_at     TEXT,
    heartbeat_at   TEXT,
    finished_at    TEXT,
    -- fixed-width UTC timestamps only
    CHECK (created_at   GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (updated_at   GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (started_at   IS NULL OR started_at   GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (heartbeat_at IS NULL OR heartbeat_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (finished_at  IS NULL OR finished_at  GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
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
    CHECK (checkpoint IS NULL OR checkpoint_at IS NOT NULL)
);

-- The claim query: oldest created job (by id), kind read from the index itself.
CREATE INDEX jobs_claim ON jobs (id, kind) WHERE state = 'created';
-- The stale scan and "find running": only running rows, ordered by heartbeat.
CREATE INDEX jobs_running_heartbeat ON jobs (heartbeat_at) WHERE state = 'running';
-- Per-user listings and stats (newest first; a state filter reads along it). No index on
-- state itself: it would be rewritten by every transition on the hot path.
CREATE INDEX jobs_user ON jobs (user_id, id);
-- Resumable jobs: paused with a checkpoint.
CREATE INDEX jobs_resumable ON jobs (id) WHERE state = 'paused' AND checkpoint IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- Invariant 1: only the transitions of the machine (src/job/state.rs TRANSITIONS).
CREATE TRIGGER jobs_state_machine
BEFORE UPDATE OF state ON jobs
WHEN NEW.state IS NOT OLD.state
 AND (OLD.state, NEW.state) NOT IN (VALUES
        ('created', 'running'), ('created', 'cancelled'),
        ('running', 'paused'), ('running', 'completed'), ('running', 'failed'),
        ('running', 'cancelled'), ('running', 'created'),
        ('paused', 'running'), ('paused', 'created'), ('paused', 'cancelled'), ('paused', 'failed'),
        ('failed', 'created'), ('cancelled', 'created'))
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs');
END;

-- completed is final: nothing of a completed job's outcome changes again (parent_id may
-- still be cleared when its parent is deleted).
CREATE TRIGGER jobs_completed_is_final
BEFORE UPDATE OF state, input, result, error_code, error_message, progress, step, checkpoint,
                 checkpoint_at, attempt, worker_id, started_at, heartbeat_at, finished_at ON jobs
WHEN OLD.state = 'completed'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: completed is final');
END;

-- Invariant 6 (fencing): the attempt number only grows, by exactly one, when the job
-- is claimed (enters running).
CREATE TRIGGER jobs_attempt_fencing
BEFORE UPDATE OF attempt ON jobs
WHEN NEW.attempt IS NOT OLD.attempt
 AND NOT (NEW.state = 'running' AND OLD.state IN ('created', 'paused') AND NEW.attempt = OLD.attempt + 1)
BEGIN
    SELECT RAISE(ABORT, 'STALE_ATTEMPT: jobs: attempt changes only by one on claim');
END;

-- A job is created in state 'created', attempt 0.
CREATE TRIGGER jobs_insert_created
BEFORE INSERT ON jobs
WHEN NEW.state <> 'created' OR NEW.attempt <> 0
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a job starts created with attempt 0');
END;

-- Only terminal jobs may be deleted.
CREATE TRIGGER jobs_delete_terminal_only
BEFORE DELETE ON jobs
WHEN OLD.state NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: only terminal jobs may be deleted');
END;

-- Who did what, when. Append-only (invariant 5).
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT    NOT NULL CHECK (entity IN ('job', 'run', 'schedule', 'supervisor')),
    entity_id TEXT    NOT NULL,
    action    TEXT    NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
    actor     TEXT    NOT NULL CHECK (length(actor) BETWEEN 1 AND 256),
    at        TEXT    NOT NULL CHECK (at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    detail    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object')
);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id, id);

CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: audit_log');
END;

CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: audit_log');
END;
