-- V10: the same rules for fewer instructions (issue 11, BENCHMARKS.md "Engine core").
--
-- Every rule keeps its name, its message and, for every row, its verdict. `jobs` and
-- `job_events` are rebuilt (as V5 did: their triggers and indexes go, the tables step aside,
-- new STRICT tables take every row with its id, cursor and AUTOINCREMENT high-water mark,
-- the old tables go, indexes and triggers come back), because a CHECK only changes with its
-- table; the triggers are created again in their old relative order (SQLite runs a table's
-- triggers of one kind in an order set by creation).
--
-- 1. `jobs_state_machine` (every UPDATE of a job): the machine's pairs were a row-value
--    `(OLD.state, NEW.state) NOT IN (VALUES ...)`, and `OLD.state IN (four states)`: SQLite
--    evaluates an IN over a list of more than two values (or over VALUES) by filling a
--    temporary b-tree, on every run of the trigger. The pairs are now a CASE on OLD.state
--    with each allowed target compared by `=` (the same table as src/job/state.rs). Same
--    three-valued result: OLD.state is NOT NULL; a NULL NEW.state gives NULL where the old
--    form gave NULL (OLD.state has moves: no refusal here, the NOT NULL constraint refuses
--    it) and 1 where it gave 1 (OLD.state has none, e.g. completed: refused).
-- 2. `jobs_insert_created` and `jobs_state_machine`, the input depth: the `json_tree` walk
--    now runs only when the input is longer than 100 characters. Each `[` or `.` counted in
--    a node's fullkey stands for a distinct character of the input text (an array's `[`,
--    an object's `{`, or a `.`/`[` of a key), so a count above 100 needs more than 100
--    characters: a shorter input could never be refused by the walk.
-- 3. `jobs_insert_created`, the tags: `json_each` runs only when the tags are not exactly
--    the empty array `[]`, over which it yields no row (the EXISTS was false).
-- 4. The CHECKs of `jobs` (`state IN (6 states)`, `state IN (3)`, `state NOT IN (3)`) and of
--    `job_events` (`kind IN (11 kinds)`) filled a temporary b-tree on every row written, for
--    the same reason as 1. Now `=` comparisons joined by OR: the same three-valued result
--    (a NULL gives NULL either way; collation and affinity are the column's, BINARY TEXT).
-- 5. `job_events.prev_hash` and `hash`: `length(h) = 64 AND h NOT GLOB '*[^0-9a-f]*'`
--    (a scan retried at every position) becomes `length(h) = 64 AND h GLOB` 64 times
--    `[0-9a-f]`, one pass. Both accept exactly the values whose text before any NUL (what
--    length and GLOB read) is 64 characters, each a lower-case hex digit.
-- Every other CHECK (the strftime round trips, the control-character GLOBs, json_valid) is
-- copied word for word.
--
-- tests/suite/attacks.rs tries every rule from the stock sqlite3 shell; doctor compares these
-- triggers with a fresh migration (src/doctor.rs, schema_object).

-- Step 1. Triggers and indexes go first (the renames below would rewrite them, and they must not
-- fire on the copy).
DROP TRIGGER jobs_insert_created;
DROP TRIGGER jobs_insert_fresh_id;
DROP TRIGGER jobs_state_machine;
DROP TRIGGER jobs_delete_terminal_only;
DROP TRIGGER jobs_delete_cascades;
DROP TRIGGER jobs_cancel_reason_fixed;
DROP TRIGGER job_events_seq_follows;
DROP TRIGGER job_events_prune;
DROP TRIGGER job_events_no_update;
DROP TRIGGER job_events_no_delete;
DROP INDEX jobs_claim;
DROP INDEX jobs_running_heartbeat;
DROP INDEX jobs_user;
DROP INDEX jobs_resumable;
DROP INDEX jobs_parent;

-- Step 2. The V9 tables step aside (job_events' reference follows jobs to jobs_v9).
ALTER TABLE jobs RENAME TO jobs_v9;
ALTER TABLE job_events RENAME TO job_events_v9;

-- Step 3. The new tables.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id        TEXT    NOT NULL CHECK (length(CAST(user_id AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(user_id AS BLOB), x'00') = 0 AND user_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*'),
    kind           TEXT    NOT NULL CHECK (length(CAST(kind AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(kind AS BLOB), x'00') = 0 AND kind NOT GLOB '*[^A-Za-z0-9_.:-]*'),
    state          TEXT    NOT NULL DEFAULT 'created'
                   CHECK (state = 'created' OR state = 'running' OR state = 'paused' OR state = 'completed'
                          OR state = 'failed' OR state = 'cancelled'),
    input          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(input) AND length(CAST(input AS BLOB)) <= 4194304),
    result         TEXT    CHECK (result IS NULL OR (json_valid(result) AND length(CAST(result AS BLOB)) <= 4194304)),
    error_code     TEXT    CHECK (error_code IS NULL OR (length(CAST(error_code AS BLOB)) BETWEEN 1 AND 64 AND instr(CAST(error_code AS BLOB), x'00') = 0 AND error_code NOT GLOB '*[^A-Za-z0-9_.:-]*')),
    error_message  TEXT    CHECK (error_message IS NULL OR instr(CAST(error_message AS BLOB), x'00') = 0),
    progress       INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    step           TEXT    CHECK (step IS NULL OR length(CAST(step AS BLOB)) BETWEEN 0 AND 256 AND instr(CAST(step AS BLOB), x'00') = 0),
    checkpoint     TEXT    CHECK (checkpoint IS NULL OR json_valid(checkpoint)),
    checkpoint_at  TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', checkpoint_at, '+0 seconds') IS checkpoint_at),
    tags           TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array' AND json_array_length(tags) <= 32),
    parent_id      INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    timeout_ms     INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    max_retries    INTEGER NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    attempt        INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    worker_id      TEXT    CHECK (worker_id IS NULL OR (length(CAST(worker_id AS BLOB)) BETWEEN 1 AND 256 AND instr(CAST(worker_id AS BLOB), x'00') = 0 AND worker_id NOT GLOB '*[' || char(1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159) || ']*')),
    recovery_count INTEGER NOT NULL DEFAULT 0 CHECK (recovery_count >= 0),
    created_at     TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '+0 seconds') IS created_at),
    updated_at     TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '+0 seconds') IS updated_at),
    started_at     TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+0 seconds') IS started_at),
    heartbeat_at   TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', heartbeat_at, '+0 seconds') IS heartbeat_at),
    finished_at    TEXT    CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', finished_at, '+0 seconds') IS finished_at),
    cancel_reason  TEXT
    CHECK (cancel_reason IS NULL
           OR (state = 'cancelled'
               AND length(CAST(cancel_reason AS BLOB)) BETWEEN 1 AND 1000
               AND instr(CAST(cancel_reason AS BLOB), x'00') = 0)),
    CHECK (parent_id IS NULL OR parent_id <> id),
    -- timestamps agree with the state
    CHECK ((state = 'completed' OR state = 'failed' OR state = 'cancelled') = (finished_at IS NOT NULL)),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (NOT (state = 'running' OR state = 'paused' OR state = 'completed') OR started_at IS NOT NULL),
    CHECK (state <> 'created' OR (started_at IS NULL AND heartbeat_at IS NULL AND worker_id IS NULL)),
    CHECK (state <> 'running' OR (heartbeat_at IS NOT NULL AND worker_id IS NOT NULL AND attempt > 0)),
    CHECK (started_at IS NULL OR started_at >= created_at),
    -- outcome columns agree with the state
    CHECK (state = 'completed' OR result IS NULL),
    CHECK (state <> 'completed' OR progress = 100),
    CHECK ((state = 'failed') = (error_code IS NOT NULL)),
    CHECK ((checkpoint IS NULL) = (checkpoint_at IS NULL))
) STRICT;

CREATE TABLE job_events (
    cursor    INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    kind      TEXT    NOT NULL CHECK (kind = 'created' OR kind = 'claimed' OR kind = 'progress' OR kind = 'checkpoint'
                                 OR kind = 'paused' OR kind = 'resumed' OR kind = 'recovered' OR kind = 'completed'
                                 OR kind = 'failed' OR kind = 'cancelled' OR kind = 'restarted'),
    payload   TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    at        TEXT    NOT NULL CHECK (strftime('%Y-%m-%dT%H:%M:%fZ', at, '+0 seconds') IS at),
    -- the hash of the job's previous event (seq - 1) and this event's hash (src/integrity.rs);
    -- NULL only for events written before V5 (integrity_legacy). 64 lower-case hex digits.
    prev_hash TEXT    CHECK (prev_hash IS NULL OR (length(prev_hash) = 64 AND prev_hash GLOB
                      '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]')),
    hash      TEXT    CHECK (hash IS NULL OR (length(hash) = 64 AND hash GLOB
                      '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]')),
    CHECK ((hash IS NULL) = (prev_hash IS NULL)),
    UNIQUE (job_id, seq)
) STRICT;

-- Step 4. Every row, with its id and cursor (a row the rules refuse fails the migration: the
-- rules are the old ones, so only a row planted past them can).
INSERT INTO jobs (id, user_id, kind, state, input, result, error_code, error_message, progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at, cancel_reason)
    SELECT id, user_id, kind, state, input, result, error_code, error_message, progress, step, checkpoint, checkpoint_at, tags, parent_id, timeout_ms, max_retries, attempt, worker_id, recovery_count, created_at, updated_at, started_at, heartbeat_at, finished_at, cancel_reason FROM jobs_v9 ORDER BY id;
INSERT INTO job_events (cursor, job_id, seq, kind, payload, at, prev_hash, hash)
    SELECT cursor, job_id, seq, kind, payload, at, prev_hash, hash FROM job_events_v9 ORDER BY cursor;

-- The AUTOINCREMENT high-water marks carry over, so no id or cursor is ever handed out twice.
INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'jobs');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs_v9'), 0)) WHERE name = 'jobs';
INSERT INTO sqlite_sequence (name, seq) SELECT 'job_events', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'job_events');
UPDATE sqlite_sequence SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'job_events_v9'), 0)) WHERE name = 'job_events';

-- Step 5. The V9 tables go, the child first.
DROP TABLE job_events_v9;
DROP TABLE jobs_v9;

-- Step 6. Indexes and triggers, in their old order.
CREATE INDEX jobs_claim ON jobs (id, kind) WHERE state = 'created';
CREATE INDEX jobs_running_heartbeat ON jobs (heartbeat_at) WHERE state = 'running';
CREATE INDEX jobs_user ON jobs (user_id, id);
CREATE INDEX jobs_resumable ON jobs (id) WHERE state = 'paused' AND checkpoint IS NOT NULL;
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TRIGGER jobs_insert_created
BEFORE INSERT ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: an id is never reused (REPLACE or explicit id)')
     WHERE NEW.id <> -1 AND (NEW.id <= coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)
                             OR EXISTS (SELECT 1 FROM jobs WHERE id = NEW.id));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a job starts created with attempt 0')
     WHERE NEW.state IS NOT 'created' OR NEW.attempt IS NOT 0 OR NEW.recovery_count IS NOT 0
        OR NEW.progress IS NOT 0 OR NEW.step IS NOT NULL OR NEW.checkpoint IS NOT NULL
        OR NEW.finished_at IS NOT NULL OR NEW.updated_at IS NOT NEW.created_at;
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: jobs: parent_id names no job')
     WHERE NEW.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.parent_id);
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: tags are 1..64-byte strings')
     WHERE NEW.tags IS NOT '[]' AND json_valid(NEW.tags) AND EXISTS (SELECT 1 FROM json_each(NEW.tags)
            WHERE type <> 'text' OR length(CAST(value AS BLOB)) NOT BETWEEN 1 AND 64
               OR instr(CAST(value AS BLOB), x'00') > 0);
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: input nested deeper than 100 levels')
     WHERE length(NEW.input) > 100 AND json_valid(NEW.input) AND EXISTS (SELECT 1 FROM json_tree(NEW.input)
            WHERE length(fullkey) - length(replace(replace(fullkey, '[', ''), '.', '')) > 100);
END;

CREATE TRIGGER jobs_insert_fresh_id
AFTER INSERT ON jobs
WHEN EXISTS (SELECT 1 FROM job_events WHERE job_id = NEW.id)
  OR EXISTS (SELECT 1 FROM jobs WHERE parent_id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: an id is never reused (rows still refer to it)');
END;

CREATE TRIGGER jobs_state_machine
BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: id, owner, kind, tags, limits and created_at never change')
     WHERE NEW.id IS NOT OLD.id OR NEW.user_id IS NOT OLD.user_id OR NEW.kind IS NOT OLD.kind
        OR NEW.tags IS NOT OLD.tags OR NEW.created_at IS NOT OLD.created_at
        OR NEW.timeout_ms IS NOT OLD.timeout_ms OR NEW.max_retries IS NOT OLD.max_retries;
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: parent_id only clears when its parent is gone')
     WHERE NEW.parent_id IS NOT OLD.parent_id
       AND (NEW.parent_id IS NOT NULL OR EXISTS (SELECT 1 FROM jobs WHERE id = OLD.parent_id));
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: not a transition of the job machine')
     WHERE NEW.state IS NOT OLD.state
       AND NOT (CASE OLD.state
            WHEN 'created' THEN NEW.state = 'running' OR NEW.state = 'cancelled'
            WHEN 'running' THEN NEW.state = 'paused' OR NEW.state = 'completed' OR NEW.state = 'failed'
                             OR NEW.state = 'cancelled' OR NEW.state = 'created'
            WHEN 'paused' THEN NEW.state = 'running' OR NEW.state = 'created' OR NEW.state = 'cancelled'
                            OR NEW.state = 'failed'
            WHEN 'failed' THEN NEW.state = 'created'
            WHEN 'cancelled' THEN NEW.state = 'created'
            ELSE 0 END);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: completed is final')
     WHERE OLD.state = 'completed'
       AND (NEW.state IS NOT OLD.state OR NEW.input IS NOT OLD.input OR NEW.result IS NOT OLD.result
         OR NEW.error_code IS NOT OLD.error_code OR NEW.error_message IS NOT OLD.error_message
         OR NEW.progress IS NOT OLD.progress OR NEW.step IS NOT OLD.step
         OR NEW.checkpoint IS NOT OLD.checkpoint OR NEW.checkpoint_at IS NOT OLD.checkpoint_at
         OR NEW.attempt IS NOT OLD.attempt OR NEW.worker_id IS NOT OLD.worker_id
         OR NEW.recovery_count IS NOT OLD.recovery_count OR NEW.updated_at IS NOT OLD.updated_at
         OR NEW.started_at IS NOT OLD.started_at OR NEW.heartbeat_at IS NOT OLD.heartbeat_at
         OR NEW.finished_at IS NOT OLD.finished_at);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a job that is not running only has its recovery count reset')
     WHERE (OLD.state = 'created' OR OLD.state = 'paused' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
       AND NEW.state IS OLD.state
       AND (NEW.input IS NOT OLD.input OR NEW.result IS NOT OLD.result
         OR NEW.error_code IS NOT OLD.error_code OR NEW.error_message IS NOT OLD.error_message
         OR NEW.progress IS NOT OLD.progress OR NEW.step IS NOT OLD.step
         OR NEW.checkpoint IS NOT OLD.checkpoint OR NEW.checkpoint_at IS NOT OLD.checkpoint_at
         OR NEW.attempt IS NOT OLD.attempt OR NEW.worker_id IS NOT OLD.worker_id
         OR (NEW.recovery_count IS NOT OLD.recovery_count AND NEW.recovery_count IS NOT 0)
         OR NEW.started_at IS NOT OLD.started_at OR NEW.heartbeat_at IS NOT OLD.heartbeat_at
         OR NEW.finished_at IS NOT OLD.finished_at);
    -- Invariant 6 (fencing): the attempt grows by exactly one exactly when the job is
    -- claimed (enters running), and a running job keeps its worker.
    SELECT RAISE(ABORT, 'STALE_ATTEMPT: jobs: attempt changes only by one on claim')
     WHERE (NEW.attempt IS NOT OLD.attempt
            OR (NEW.state = 'running' AND OLD.state IS NOT 'running')
            OR (NEW.state = 'running' AND OLD.state = 'running' AND NEW.worker_id IS NOT OLD.worker_id))
       AND NOT (NEW.state = 'running' AND OLD.state IN ('created', 'paused') AND NEW.attempt = OLD.attempt + 1);
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: recovery_count only grows on recovery, or resets')
     WHERE NEW.recovery_count IS NOT OLD.recovery_count AND NEW.recovery_count IS NOT 0
       AND NOT (NEW.recovery_count = OLD.recovery_count + 1 AND OLD.state = 'running');
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: started_at is set by the first claim only')
     WHERE NEW.started_at IS NOT OLD.started_at AND NEW.state IS NOT 'created'
       AND NOT (OLD.state = 'created' AND NEW.state = 'running');
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: a finished job keeps its finish time')
     WHERE OLD.finished_at IS NOT NULL AND NEW.finished_at IS NOT NULL AND NEW.finished_at IS NOT OLD.finished_at;
    SELECT RAISE(ABORT, 'INVALID_SHAPE: jobs: input nested deeper than 100 levels')
     WHERE NEW.input IS NOT OLD.input AND length(NEW.input) > 100 AND json_valid(NEW.input)
       AND EXISTS (SELECT 1 FROM json_tree(NEW.input)
            WHERE length(fullkey) - length(replace(replace(fullkey, '[', ''), '.', '')) > 100);
END;

CREATE TRIGGER jobs_delete_terminal_only
BEFORE DELETE ON jobs
WHEN OLD.state NOT IN ('completed', 'failed', 'cancelled')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: jobs: only terminal jobs may be deleted');
END;

CREATE TRIGGER jobs_delete_cascades
AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_events WHERE job_id = OLD.id;
    UPDATE jobs SET parent_id = NULL WHERE parent_id = OLD.id;
END;

CREATE TRIGGER job_events_seq_follows
BEFORE INSERT ON job_events
BEGIN
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: job_events: job_id names no job')
     WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = NEW.job_id);
    SELECT RAISE(ABORT, 'EVENT_SEQ: job_events: seq must follow the job''s last event')
     WHERE NEW.seq IS NOT coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1;
    SELECT RAISE(ABORT, 'EVENT_CURSOR: job_events: a cursor only grows')
     WHERE NEW.cursor <> -1
       AND NEW.cursor <= max(coalesce((SELECT max(cursor) FROM job_events), 0),
                             coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'job_events'), 0));
    SELECT RAISE(ABORT, 'INTEGRITY: job_events: a new event carries its chain hash')
     WHERE NEW.hash IS NULL;
END;

CREATE TRIGGER job_events_prune
AFTER INSERT ON job_events
WHEN NEW.seq > 200
BEGIN
    DELETE FROM job_events WHERE job_id = NEW.job_id AND seq <= NEW.seq - 200;
END;

CREATE TRIGGER job_events_no_update
BEFORE UPDATE ON job_events
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: job_events');
END;

CREATE TRIGGER job_events_no_delete
BEFORE DELETE ON job_events
WHEN OLD.seq > (SELECT max(seq) FROM job_events WHERE job_id = OLD.job_id) - 200
 AND EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: job_events');
END;

CREATE TRIGGER jobs_cancel_reason_fixed
BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: cancel_reason is set by the cancel and cleared by the restart only')
     WHERE NEW.cancel_reason IS NOT OLD.cancel_reason
       AND NOT (NEW.state = 'cancelled' AND OLD.state IS NOT 'cancelled')
       AND NOT (OLD.state = 'cancelled' AND NEW.state IS NOT 'cancelled' AND NEW.cancel_reason IS NULL);
END;
