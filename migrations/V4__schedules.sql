-- Schedules and their due slots.
--
-- `schedules` holds each calendar rule and, beside it, the scheduler's cursor: the last
-- materialized slot (`last_due_at`, a high-water mark that only moves forward) and the next
-- slot to materialize (`next_due_at`, indexed for the tick's "which schedules are due" scan).
-- `due_runs` holds one row per (schedule, due instant); its state machine lives here and in
-- src/schedule/state.rs (TRANSITIONS); the test due_run_state_machine_agrees_with_sql
-- proves the two equal.
-- Timestamps are fixed-width UTC text: 2026-11-22T11:30:00.000Z.

CREATE TABLE schedules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    pipeline    TEXT    NOT NULL CHECK (length(pipeline) BETWEEN 1 AND 64),
    scope       TEXT    NOT NULL CHECK (length(scope) BETWEEN 1 AND 64),
    -- canonical text of src/schedule/rule.rs: `daily 19:30`, `daily 19:30 mon-fri`, `every 15m`
    rule        TEXT    NOT NULL CHECK (rule GLOB 'daily [0-2][0-9]:[0-5][0-9]'
                                     OR rule GLOB 'daily [0-2][0-9]:[0-5][0-9] [a-z]*'
                                     OR rule GLOB 'every [1-9]*[mh]'),
    -- IANA name
    zone        TEXT    NOT NULL CHECK (length(zone) BETWEEN 1 AND 64),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    misfire     TEXT    NOT NULL DEFAULT 'latest_only' CHECK (misfire IN ('latest_only', 'all', 'skip')),
    -- the scheduler's cursor
    last_due_at TEXT,
    next_due_at TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    CHECK (created_at  GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (updated_at  GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (last_due_at IS NULL OR last_due_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (next_due_at IS NULL OR next_due_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (updated_at >= created_at),
    -- the next slot is always after the last one
    CHECK (next_due_at IS NULL OR last_due_at IS NULL OR next_due_at > last_due_at)
);

-- The tick's first query: enabled schedules whose next slot is due.
CREATE INDEX schedules_due ON schedules (next_due_at) WHERE enabled = 1 AND next_due_at IS NOT NULL;

-- The high-water mark only moves forward, so a clock that jumps backwards never
-- materializes (and so never fires) a slot twice.
CREATE TRIGGER schedules_high_water_mark
BEFORE UPDATE OF last_due_at ON schedules
WHEN OLD.last_due_at IS NOT NULL AND (NEW.last_due_at IS NULL OR NEW.last_due_at < OLD.last_due_at)
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: schedules: last_due_at only moves forward');
END;

-- A schedule with a slot in flight cannot be deleted (its ticker will record the outcome).
CREATE TRIGGER schedules_delete_idle_only
BEFORE DELETE ON schedules
WHEN EXISTS (SELECT 1 FROM due_runs WHERE schedule_id = OLD.id AND status = 'claimed')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: schedules: a slot of this schedule is being fired');
END;

CREATE TABLE due_runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id     INTEGER NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    due_at          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'claimed', 'fired', 'skipped', 'failed')),
    created_at      TEXT    NOT NULL,
    claimed_at      TEXT,
    claimed_by      TEXT    CHECK (claimed_by IS NULL OR length(claimed_by) BETWEEN 1 AND 256),
    finished_at     TEXT,
    run_ids         TEXT    NOT NULL DEFAULT '[]'
                    CHECK (json_valid(run_ids) AND json_type(run_ids) = 'array'),
    outcome_code    TEXT    CHECK (outcome_code IS NULL OR length(outcome_code) BETWEEN 1 AND 64),
    outcome_message TEXT,
    UNIQUE (schedule_id, due_at),
    CHECK (due_at      GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (created_at  GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (claimed_at  IS NULL OR claimed_at  GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (finished_at IS NULL OR finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    -- a slot is materialized once it is due, claimed and finished after that
    CHECK (created_at >= due_at),
    CHECK (claimed_at IS NULL OR claimed_at >= created_at),
    CHECK (finished_at IS NULL OR finished_at >= created_at),
    CHECK (finished_at IS NULL OR claimed_at IS NULL OR finished_at >= claimed_at),
    -- timestamps agree with the status
    CHECK ((status IN ('fired', 'skipped', 'failed')) = (finished_at IS NOT NULL)),
    CHECK ((claimed_at IS NULL) = (claimed_by IS NULL)),
    CHECK (status <> 'pending' OR claimed_at IS NULL),
    CHECK (status NOT IN ('claimed', 'fired', 'failed') OR claimed_at IS NOT NULL),
    -- outcome columns agree with the status
    CHECK (status IN ('fired', 'skipped', 'failed') OR (run_ids = '[]' AND outcome_code IS NULL)),
    CHECK (status <> 'fired' OR (json_array_length(run_ids) > 0 AND outcome_code IS NULL)),
    CHECK ((status IN ('skipped', 'failed')) = (outcome_code IS NOT NULL)),
    CHECK (outcome_message IS NULL OR outcome_code IS NOT NULL)
);

-- The claim query, exactly: pending slots that are due, oldest first.
CREATE INDEX due_runs_claim ON due_runs (due_at) WHERE status = 'pending';
-- The abandoned-claim sweep: claimed slots by claim time.
CREATE INDEX due_runs_claimed ON due_runs (claimed_at) WHERE status = 'claimed';
-- (schedule_id, due_at) is indexed by the UNIQUE constraint: per-schedule history.
-- runbook.sql's schedule_missed_slots and schedule_in_flight_slots: the few slots that were
-- skipped or failed, or are still in flight, newest / oldest first, whatever the history.
CREATE INDEX due_runs_missed ON due_runs (due_at) WHERE status IN ('skipped', 'failed');
CREATE INDEX due_runs_in_flight ON due_runs (due_at) WHERE status IN ('pending', 'claimed');

-- Invariant 1: only the transitions of the machine (src/schedule/state.rs TRANSITIONS).
CREATE TRIGGER due_runs_state_machine
BEFORE UPDATE OF status ON due_runs
WHEN NEW.status IS NOT OLD.status
 AND (OLD.status, NEW.status) NOT IN (VALUES
        ('pending', 'claimed'), ('pending', 'skipped'),
        ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'))
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs');
END;

-- Terminal slots are final: nothing of a fired, skipped or failed slot changes again.
CREATE TRIGGER due_runs_terminal_is_final
BEFORE UPDATE ON due_runs
WHEN OLD.status IN ('fired', 'skipped', 'failed')
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: terminal slots are final');
END;

-- A slot's schedule and instant never change.
CREATE TRIGGER due_runs_identity_is_fixed
BEFORE UPDATE OF schedule_id, due_at, created_at ON due_runs
WHEN NEW.schedule_id IS NOT OLD.schedule_id OR NEW.due_at IS NOT OLD.due_at
  OR NEW.created_at IS NOT OLD.created_at
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: due_runs');
END;

-- A slot is born pending, and only after its schedule's high-water mark: a slot at or
-- before the last materialized one is never created again.
CREATE TRIGGER due_runs_insert_pending_after_high_water_mark
BEFORE INSERT ON due_runs
WHEN NEW.status <> 'pending'
  OR NEW.due_at <= (SELECT last_due_at FROM schedules WHERE id = NEW.schedule_id)
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: a slot is born pending, after the last materialized slot');
END;

-- A slot being fired cannot be deleted (finished history may be pruned).
CREATE TRIGGER due_runs_delete_not_claimed
BEFORE DELETE ON due_runs
WHEN OLD.status = 'claimed'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: a claimed slot cannot be deleted');
END;
