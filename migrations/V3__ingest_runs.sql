-- Ingestion runs, the module catalog with its probe results, and immutable raw records.
--
-- The run state machine lives here and in src/run/state.rs (TRANSITIONS); the test
-- run_state_machine_agrees_with_sql proves the two equal.
-- Timestamps are fixed-width UTC text: 2026-11-22T11:30:00.000Z.
-- Everything here reads and writes with a stock sqlite3 shell >= 3.37 (julianday, json1).

CREATE TABLE ingest_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL CHECK (length(pipeline) BETWEEN 1 AND 64),
    scope            TEXT    NOT NULL CHECK (scope IN ('targets', 'universe')),
    trigger          TEXT    NOT NULL CHECK (trigger IN ('schedule', 'manual')),
    status           TEXT    NOT NULL DEFAULT 'started'
                     CHECK (status IN ('started', 'success', 'failed')),
    -- Invariant 3: at most one started run per lock key (index ingest_runs_one_active).
    lock_key         TEXT    NOT NULL CHECK (length(lock_key) BETWEEN 1 AND 256),
    account_id       TEXT    CHECK (account_id IS NULL OR length(account_id) BETWEEN 1 AND 128),
    started_at       TEXT    NOT NULL,
    -- The holder renews its lease while it works; a started run whose lease expired is
    -- finalized as failed ABANDONED (invariant 4). Terminal rows keep their last lease.
    lease_expires_at TEXT,
    finished_at      TEXT,
    duration_ms      INTEGER,
    error_code       TEXT    CHECK (error_code IS NULL OR length(error_code) BETWEEN 1 AND 64),
    error_message    TEXT,
    timeline         TEXT    NOT NULL DEFAULT '[]'
                     CHECK (json_valid(timeline) AND json_type(timeline) = 'array'),
    meta_json        TEXT    NOT NULL DEFAULT '{}'
                     CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (finished_at IS NULL OR finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK (lease_expires_at IS NULL OR lease_expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    -- Invariant 2: timestamps agree with the state.
    CHECK ((status = 'started') = (finished_at IS NULL)),
    CHECK ((finished_at IS NULL) = (duration_ms IS NULL)),
    CHECK (finished_at IS NULL OR finished_at >= started_at),
    CHECK (duration_ms IS NULL OR duration_ms =
           CAST(round((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER)),
    CHECK (status <> 'started' OR lease_expires_at IS NOT NULL),
    -- Outcome columns agree with the state.
    CHECK ((status = 'failed') = (error_code IS NOT NULL)),
    CHECK (status = 'failed' OR error_message IS NULL)
);

-- Invariant 3: the lock. Error::from_sqlite maps its UNIQUE failure to RunAlreadyActive.
CREATE UNIQUE INDEX ingest_runs_one_active ON ingest_runs (lock_key) WHERE status = 'started';
-- Lease sweep: started runs by lease expiry.
CREATE INDEX ingest_runs_lease ON ingest_runs (lease_expires_at) WHERE status = 'started';
-- runbook latest_runs: newest first.
CREATE INDEX ingest_runs_started ON ingest_runs (started_at);
-- runbook blocked_failures and the API's status filter: newest of one status.
CREATE INDEX ingest_runs_status_started ON ingest_runs (status, started_at);
-- runbook health_summary: counted from the index alone.
CREATE INDEX ingest_runs_scope_status ON ingest_runs (scope, status);
-- runbook last_success (skip-scan over pipeline, scope; then the newest success).
CREATE INDEX ingest_runs_pipeline ON ingest_runs (pipeline, scope, status, started_at);
-- runbook pipeline_stage_durations: one pipeline, newest first.
CREATE INDEX ingest_runs_pipeline_started ON ingest_runs (pipeline, started_at);
-- runbook abandoned_runs: failures by code, newest first.
CREATE INDEX ingest_runs_error_code ON ingest_runs (error_code, started_at) WHERE error_code IS NOT NULL;

-- Invariant 1: a run is born started (or, when it was turned away or blocked before it
-- could hold its lock, directly failed with meta_json.blockedStage).
CREATE TRIGGER ingest_runs_insert_started
BEFORE INSERT ON ingest_runs
WHEN NOT (NEW.status = 'started'
          OR (NEW.status = 'failed'
              AND (CASE WHEN json_valid(NEW.meta_json)
                        THEN json_type(NEW.meta_json, '$.blockedStage') END) IS 'text'))
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: a run starts as started (or failed when blocked)');
END;

-- Invariant 1: terminal runs never change (first, so it wins over the next trigger).
CREATE TRIGGER ingest_runs_terminal_is_final
BEFORE UPDATE ON ingest_runs
WHEN OLD.status <> 'started'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: terminal runs are immutable');
END;

-- Invariant 1: only the transitions of src/run/state.rs TRANSITIONS.
CREATE TRIGGER ingest_runs_state_machine
BEFORE UPDATE OF status ON ingest_runs
WHEN NEW.status IS NOT OLD.status
 AND (OLD.status, NEW.status) NOT IN (VALUES ('started', 'success'), ('started', 'failed'))
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs');
END;

-- What a run is (and which lock it holds) never changes after insert.
CREATE TRIGGER ingest_runs_identity_fixed
BEFORE UPDATE OF id, pipeline, scope, trigger, lock_key, account_id, started_at ON ingest_runs
WHEN NEW.id IS NOT OLD.id OR NEW.pipeline IS NOT OLD.pipeline OR NEW.scope IS NOT OLD.scope
  OR NEW.trigger IS NOT OLD.trigger OR NEW.lock_key IS NOT OLD.lock_key
  OR NEW.account_id IS NOT OLD.account_id OR NEW.started_at IS NOT OLD.started_at
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: identity columns');
END;

-- The timeline only grows (the last entry may be closed in place).
CREATE TRIGGER ingest_runs_timeline_grows
BEFORE UPDATE OF timeline ON ingest_runs
WHEN json_valid(NEW.timeline) AND json_type(NEW.timeline) = 'array'
 AND json_array_length(NEW.timeline) < json_array_length(OLD.timeline)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: ingest_runs: timeline entries');
END;

-- A started run holds its lock and may not vanish; retention deletes terminal runs only.
CREATE TRIGGER ingest_runs_delete_terminal_only
BEFORE DELETE ON ingest_runs
WHEN OLD.status = 'started'
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: a started run cannot be deleted');
END;

-- The module catalog: what preflight probes, per scope.
CREATE TABLE ingest_modules (
    module     TEXT    PRIMARY KEY CHECK (length(module) BETWEEN 1 AND 64),
    domain     TEXT    NOT NULL CHECK (length(domain) BETWEEN 1 AND 64),
    -- JSON array of the scopes it serves, e.g. ["targets","universe"].
    scopes     TEXT    NOT NULL DEFAULT '["targets","universe"]'
               CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    updated_at TEXT    NOT NULL
               CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z')
);

-- Probe results (connectivity tests), one row per probe; the newest per module counts.
CREATE TABLE ingest_probes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    module     TEXT    NOT NULL REFERENCES ingest_modules(module) ON DELETE CASCADE,
    status     TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    code       TEXT    CHECK (code IS NULL OR length(code) BETWEEN 1 AND 64),
    message    TEXT,
    latency_ms INTEGER NOT NULL CHECK (latency_ms >= 0),
    tested_at  TEXT    NOT NULL
               CHECK (tested_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z'),
    CHECK ((status = 'failed') = (code IS NOT NULL))
);
CREATE INDEX ingest_probes_module ON ingest_probes (module, tested_at, id);

-- Invariant 5: raw payloads, stored once per SHA-256, immutable.
CREATE TABLE raw_payloads (
    sha256  TEXT    PRIMARY KEY
            CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    size    INTEGER NOT NULL CHECK (size >= 0),
    payload BLOB    NOT NULL CHECK (typeof(payload) = 'blob' AND length(payload) = size)
);

-- What a run downloaded: one row per download, pointing at its (shared) payload.
-- The run reference is checked at commit, so retention can delete a run and its records
-- in one transaction.
CREATE TABLE raw_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER NOT NULL REFERENCES ingest_runs(id) DEFERRABLE INITIALLY DEFERRED,
    source        TEXT    NOT NULL CHECK (length(source) BETWEEN 1 AND 64),
    upstream_ref  TEXT    CHECK (upstream_ref IS NULL OR length(upstream_ref) BETWEEN 1 AND 512),
    content_type  TEXT    NOT NULL CHECK (length(content_type) BETWEEN 1 AND 128),
    size          INTEGER NOT NULL CHECK (size >= 0),
    sha256        TEXT    NOT NULL REFERENCES raw_payloads(sha256),
    created_at    TEXT    NOT NULL
                  CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9].[0-9][0-9][0-9]Z')
);
CREATE INDEX raw_records_run ON raw_records (run_id, id);
CREATE INDEX raw_records_sha256 ON raw_records (sha256);

-- A record's size is its payload's size, and only a started run adds records.
CREATE TRIGGER raw_records_insert_checked
BEFORE INSERT ON raw_records
WHEN NEW.size IS NOT (SELECT size FROM raw_payloads WHERE sha256 = NEW.sha256)
  OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = NEW.run_id AND status = 'started')
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records: records are added by a started run for a stored payload');
END;

CREATE TRIGGER raw_records_no_update
BEFORE UPDATE ON raw_records
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records');
END;

-- Retention exception: a record may be deleted only once its run is gone.
CREATE TRIGGER raw_records_delete_orphans_only
BEFORE DELETE ON raw_records
WHEN EXISTS (SELECT 1 FROM ingest_runs WHERE id = OLD.run_id)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records');
END;

CREATE TRIGGER raw_payloads_no_update
BEFORE UPDATE ON raw_payloads
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_payloads');
END;

-- Retention exception: a payload may be deleted only when no record references it.
CREATE TRIGGER raw_payloads_delete_unreferenced_only
BEFORE DELETE ON raw_payloads
WHEN EXISTS (SELECT 1 FROM raw_records WHERE sha256 = OLD.sha256)
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_payloads');
END;
