-- The per-job event log a UI resyncs from, and the supervisor's bookkeeping.
--
-- cursor is the global position: AUTOINCREMENT, so it only grows and is never reused, even
-- after deletes. seq is the per-job sequence 1, 2, 3...; at most 200 events per job are
-- kept (older ones pruned by a trigger), while the jobs row always holds the current truth.

CREATE TABLE job_events (
    cursor  INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  INTEGER NOT NULL,
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    kind    TEXT    NOT NULL CHECK (kind IN ('created', 'claimed', 'progress', 'checkpoint', 'paused',
                                             'resumed', 'recovered', 'completed', 'failed', 'cancelled',
                                             'restarted')),
    payload TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    at      TEXT    NOT NULL CHECK (at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    UNIQUE (job_id, seq)
);

-- Sequences are gapless: each event follows the job's last one.
CREATE TRIGGER job_events_seq_follows
BEFORE INSERT ON job_events
WHEN NEW.seq <> coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1
BEGIN
    SELECT RAISE(ABORT, 'EVENT_SEQ: job_events: seq must follow the job''s last event');
END;

-- Bounded backlog: keep the newest 200 events of each job.
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

-- Only the pruning (events 200 behind the newest) and the removal of a deleted job's
-- events may delete.
CREATE TRIGGER job_events_no_delete
BEFORE DELETE ON job_events
WHEN OLD.seq > (SELECT max(seq) FROM job_events WHERE job_id = OLD.job_id) - 200
 AND EXISTS (SELECT 1 FROM jobs WHERE id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: job_events');
END;

-- One row per supervisor name: when it last ticked and what it did (survives restarts).
CREATE TABLE supervisor_state (
    name            TEXT    PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 256),
    last_tick_at    TEXT    CHECK (last_tick_at IS NULL OR last_tick_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    ticks           INTEGER NOT NULL DEFAULT 0 CHECK (ticks >= 0),
    jobs_recovered  INTEGER NOT NULL DEFAULT 0 CHECK (jobs_recovered >= 0),
    jobs_failed     INTEGER NOT NULL DEFAULT 0 CHECK (jobs_failed >= 0)
);
