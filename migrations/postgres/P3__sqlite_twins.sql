-- runledger on PostgreSQL, schema version 3 (issue 17): the tables SQLite had alone —
-- supervisors' bookkeeping, the module catalog and its probes, raw payloads and the raw
-- records of the runs that downloaded them — with the rules of their SQLite definitions
-- (V5, V8, V10), enforced by PostgreSQL itself. Version 3 is another change's.
--
-- The conventions of P1: canonical timestamp text (runledger_ts_ok), printable names
-- (runledger_name_ok), trigger messages `CODE: table: rule` (src/pg/error.rs), TRUNCATE
-- refused by statement triggers. Where SQLite needs a trigger only because it has
-- `INSERT OR REPLACE` (supervisor_state_insert_new, raw_payloads_insert_same_bytes) or
-- AUTOINCREMENT ids (the "an id is never reused" checks), PostgreSQL needs none: it has no
-- REPLACE, a primary key refuses a second row, ids are identity columns, and a payload's
-- key is checked against its bytes.

---------------------------------------------------------------------- supervisor_state
-- One bookkeeping row per supervisor name; supervisors on several nodes under one name
-- share it (their ticks add up). Written by an upsert whose update half the rule below
-- guards.
CREATE TABLE supervisor_state (
    name           text   PRIMARY KEY CHECK (runledger_name_ok(name, 256)),
    last_tick_at   text   CHECK (runledger_ts_ok(last_tick_at)),
    ticks          bigint NOT NULL DEFAULT 0 CHECK (ticks >= 0),
    jobs_recovered bigint NOT NULL DEFAULT 0 CHECK (jobs_recovered >= 0),
    jobs_failed    bigint NOT NULL DEFAULT 0 CHECK (jobs_failed >= 0)
);

CREATE FUNCTION supervisor_state_counters_grow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name OR NEW.ticks < OLD.ticks
       OR NEW.jobs_recovered < OLD.jobs_recovered OR NEW.jobs_failed < OLD.jobs_failed
       OR (OLD.last_tick_at IS NOT NULL AND NEW.last_tick_at IS NULL) THEN
        RAISE EXCEPTION 'IMMUTABLE: supervisor_state: the name is fixed and counters only grow';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER supervisor_state_counters_grow BEFORE UPDATE ON supervisor_state
    FOR EACH ROW EXECUTE FUNCTION supervisor_state_counters_grow();
CREATE TRIGGER supervisor_state_no_truncate BEFORE TRUNCATE ON supervisor_state
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

------------------------------------------------------------------------ ingest_modules
CREATE TABLE ingest_modules (
    module     text    PRIMARY KEY CHECK (runledger_name_ok(module, 64)),
    domain     text    NOT NULL CHECK (runledger_name_ok(domain, 64)),
    scopes     jsonb   NOT NULL DEFAULT '["targets", "universe"]' CHECK (jsonb_typeof(scopes) = 'array'),
    enabled    boolean NOT NULL DEFAULT true,
    updated_at text    NOT NULL CHECK (runledger_ts_ok(updated_at))
);

-- Scopes are among targets, universe (SQLite: ingest_modules_scopes_insert/_update); a
-- module is never renamed.
CREATE FUNCTION ingest_modules_scopes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.module IS DISTINCT FROM OLD.module THEN
        RAISE EXCEPTION 'IMMUTABLE: ingest_modules: a module is never renamed';
    END IF;
    IF jsonb_typeof(NEW.scopes) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements(NEW.scopes) s
            WHERE jsonb_typeof(s) <> 'string' OR s #>> '{}' NOT IN ('targets', 'universe')) THEN
        RAISE EXCEPTION 'INVALID_SHAPE: ingest_modules: scopes are among targets, universe';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ingest_modules_scopes BEFORE INSERT OR UPDATE ON ingest_modules
    FOR EACH ROW EXECUTE FUNCTION ingest_modules_scopes();
CREATE TRIGGER ingest_modules_no_truncate BEFORE TRUNCATE ON ingest_modules
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

------------------------------------------------------------------------- ingest_probes
CREATE TABLE ingest_probes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module     text   NOT NULL REFERENCES ingest_modules(module) ON DELETE CASCADE,
    status     text   NOT NULL CHECK (status IN ('ok', 'failed')),
    code       text   CHECK (runledger_code_ok(code)),
    message    text,
    -- at most a day: a probe is a connectivity test
    latency_ms bigint NOT NULL CHECK (latency_ms BETWEEN 0 AND 86400000),
    tested_at  text   NOT NULL CHECK (runledger_ts_ok(tested_at)),
    CHECK ((status = 'failed') = (code IS NOT NULL))
);
CREATE INDEX ingest_probes_module ON ingest_probes (module, tested_at, id);

CREATE FUNCTION ingest_probes_insert_checked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ingest_modules WHERE module = NEW.module) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: ingest_probes: module names no module';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ingest_probes_insert_checked BEFORE INSERT ON ingest_probes
    FOR EACH ROW EXECUTE FUNCTION ingest_probes_insert_checked();

-- Probe results are history: never changed; deleted only with their module (the foreign
-- key's cascade runs after the module row is gone).
CREATE FUNCTION ingest_probes_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' OR EXISTS (SELECT 1 FROM ingest_modules WHERE module = OLD.module) THEN
        RAISE EXCEPTION 'IMMUTABLE: ingest_probes';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER ingest_probes_no_update BEFORE UPDATE ON ingest_probes
    FOR EACH ROW EXECUTE FUNCTION ingest_probes_immutable();
CREATE TRIGGER ingest_probes_delete_with_module_only BEFORE DELETE ON ingest_probes
    FOR EACH ROW EXECUTE FUNCTION ingest_probes_immutable();
CREATE TRIGGER ingest_probes_no_truncate BEFORE TRUNCATE ON ingest_probes
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

-------------------------------------------------------------------------- raw_payloads
-- Content-addressed: the key is the lower-case hex SHA-256 of the bytes, checked here
-- (SQLite's doctor hashes them in Rust; PostgreSQL refuses a wrong key outright).
CREATE TABLE raw_payloads (
    sha256  text   PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size    bigint NOT NULL CHECK (size >= 0),
    payload bytea  NOT NULL,
    CONSTRAINT raw_payloads_size_is_length CHECK (octet_length(payload) = size),
    CONSTRAINT raw_payloads_key_is_sha256 CHECK (sha256 = encode(sha256(payload), 'hex'))
);

CREATE FUNCTION raw_payloads_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: raw_payloads';
END $$;
CREATE TRIGGER raw_payloads_no_update BEFORE UPDATE ON raw_payloads
    FOR EACH ROW EXECUTE FUNCTION raw_payloads_immutable();
-- Only a payload no record references may go (retention deletes the records first).
-- (A trigger's WHEN cannot hold a subquery: the look-up is in the function.)
CREATE FUNCTION raw_payloads_delete_unreferenced_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM raw_records WHERE sha256 = OLD.sha256) THEN
        RAISE EXCEPTION 'IMMUTABLE: raw_payloads';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER raw_payloads_delete_unreferenced_only BEFORE DELETE ON raw_payloads
    FOR EACH ROW EXECUTE FUNCTION raw_payloads_delete_unreferenced_only();
CREATE TRIGGER raw_payloads_no_truncate BEFORE TRUNCATE ON raw_payloads
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

--------------------------------------------------------------------------- raw_records
-- Which run downloaded which payload, from where; a rejected statement (V8) keeps its
-- rejection code and reason.
CREATE TABLE raw_records (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- deferred: retention deletes the runs, then their records, in one transaction
    run_id          bigint NOT NULL REFERENCES ingest_runs(id) DEFERRABLE INITIALLY DEFERRED,
    source          text   NOT NULL CHECK (runledger_name_ok(source, 64)),
    upstream_ref    text   CHECK (runledger_name_ok(upstream_ref, 512)),
    content_type    text   NOT NULL CHECK (runledger_name_ok(content_type, 128)),
    size            bigint NOT NULL CHECK (size >= 0),
    sha256          text   NOT NULL REFERENCES raw_payloads(sha256),
    created_at      text   NOT NULL CHECK (runledger_ts_ok(created_at)),
    rejected_code   text   CHECK (rejected_code IS NULL OR rejected_code ~ '^[A-Z0-9_]{1,64}$'),
    rejected_reason text   CHECK (rejected_reason IS NULL OR octet_length(rejected_reason) BETWEEN 1 AND 2000),
    CHECK ((rejected_reason IS NULL) = (rejected_code IS NULL))
);
CREATE INDEX raw_records_run ON raw_records (run_id, id);
CREATE INDEX raw_records_sha256 ON raw_records (sha256);
CREATE INDEX raw_records_rejected ON raw_records (id) WHERE rejected_code IS NOT NULL;

CREATE FUNCTION raw_records_insert_checked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.size IS DISTINCT FROM (SELECT size FROM raw_payloads WHERE sha256 = NEW.sha256)
       OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = NEW.run_id AND status = 'started') THEN
        RAISE EXCEPTION 'IMMUTABLE: raw_records: records are added by a started run for a stored payload';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER raw_records_insert_checked BEFORE INSERT ON raw_records
    FOR EACH ROW EXECUTE FUNCTION raw_records_insert_checked();

CREATE FUNCTION raw_records_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: raw_records';
END $$;
CREATE TRIGGER raw_records_no_update BEFORE UPDATE ON raw_records
    FOR EACH ROW EXECUTE FUNCTION raw_records_immutable();

-- A rejection is final (defence in depth beside raw_records_no_update, as in V8).
CREATE FUNCTION raw_records_rejection_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'IMMUTABLE: raw_records: a rejection is final';
END $$;
CREATE TRIGGER raw_records_rejection_is_final BEFORE UPDATE OF rejected_code, rejected_reason ON raw_records
    FOR EACH ROW WHEN (NEW.rejected_code IS DISTINCT FROM OLD.rejected_code
                       OR NEW.rejected_reason IS DISTINCT FROM OLD.rejected_reason)
    EXECUTE FUNCTION raw_records_rejection_is_final();

-- Records go only once their run is gone (retention).
CREATE FUNCTION raw_records_delete_orphans_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ingest_runs WHERE id = OLD.run_id) THEN
        RAISE EXCEPTION 'IMMUTABLE: raw_records';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER raw_records_delete_orphans_only BEFORE DELETE ON raw_records
    FOR EACH ROW EXECUTE FUNCTION raw_records_delete_orphans_only();
CREATE TRIGGER raw_records_no_truncate BEFORE TRUNCATE ON raw_records
    FOR EACH STATEMENT EXECUTE FUNCTION runledger_no_truncate();

-- The run that rejected its statement ends failed, never success (V8).
CREATE FUNCTION raw_records_rejecting_run_never_succeeds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM raw_records WHERE run_id = NEW.id AND rejected_code IS NOT NULL) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: ingest_runs: a run that rejected its statement cannot succeed';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER raw_records_rejecting_run_never_succeeds BEFORE UPDATE OF status ON ingest_runs
    FOR EACH ROW WHEN (NEW.status = 'success')
    EXECUTE FUNCTION raw_records_rejecting_run_never_succeeds();
