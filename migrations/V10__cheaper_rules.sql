-- V10: the same rules for fewer instructions (issue 11, BENCHMARKS.md "Engine core").
--
-- Only triggers are replaced (a trigger is dropped and created again; no table is rebuilt,
-- no row is touched). Each keeps its name, its messages and, for every row, its verdict:
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
--
-- tests/suite/attacks.rs tries every rule from the stock sqlite3 shell; doctor compares these
-- triggers with a fresh migration (src/doctor.rs, schema_object).

DROP TRIGGER jobs_insert_created;
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

DROP TRIGGER jobs_state_machine;
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

-- Unchanged, created again so that it still fires after jobs_state_machine (SQLite runs a
-- table's triggers of one kind newest first; V9 created this one after the machine).
DROP TRIGGER jobs_cancel_reason_fixed;
CREATE TRIGGER jobs_cancel_reason_fixed
BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: cancel_reason is set by the cancel and cleared by the restart only')
     WHERE NEW.cancel_reason IS NOT OLD.cancel_reason
       AND NOT (NEW.state = 'cancelled' AND OLD.state IS NOT 'cancelled')
       AND NOT (OLD.state = 'cancelled' AND NEW.state IS NOT 'cancelled' AND NEW.cancel_reason IS NULL);
END;
