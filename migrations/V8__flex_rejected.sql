-- A downloaded statement is never lost (issue 14): one that fails validation or its
-- section check is kept as a raw record marked rejected, linked to its failed run.
--
-- Applies on top of V6 alone. raw_records stays STRICT: ADD COLUMN keeps the table's
-- STRICT flag, and each new column is typed TEXT with its CHECK.
--   * rejected_code: NULL for an accepted statement, else the stable code of the failure
--     (FLEX_MALFORMED_XML, MISSING_REQUIRED_SECTION...), upper-case letters, digits, `_`.
--   * rejected_reason: the failure's message, present exactly when rejected_code is.
-- The marker is written with the record (only a started run adds records) and never
-- changes: raw_records_no_update (V5) refuses every UPDATE, and the trigger below names
-- the rule for the marker itself. A run that rejected its statement cannot end success.

ALTER TABLE raw_records ADD COLUMN rejected_code TEXT
    CHECK (rejected_code IS NULL
           OR (length(CAST(rejected_code AS BLOB)) BETWEEN 1 AND 64
               AND rejected_code NOT GLOB '*[^A-Z0-9_]*'));

ALTER TABLE raw_records ADD COLUMN rejected_reason TEXT
    CHECK ((rejected_reason IS NULL) = (rejected_code IS NULL)
           AND (rejected_reason IS NULL
                OR (length(CAST(rejected_reason AS BLOB)) BETWEEN 1 AND 2000
                    AND instr(CAST(rejected_reason AS BLOB), x'00') = 0)));

-- A rejection is final: never cleared, never changed (defence in depth beside
-- raw_records_no_update, so relaxing that trigger one day cannot un-reject a statement).
CREATE TRIGGER raw_records_rejection_is_final
BEFORE UPDATE OF rejected_code, rejected_reason ON raw_records
WHEN NEW.rejected_code IS NOT OLD.rejected_code OR NEW.rejected_reason IS NOT OLD.rejected_reason
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: raw_records: a rejection is final');
END;

-- The run that rejected its statement ends failed, never success.
CREATE TRIGGER raw_records_rejecting_run_never_succeeds
BEFORE UPDATE OF status ON ingest_runs
WHEN NEW.status = 'success'
 AND EXISTS (SELECT 1 FROM raw_records WHERE run_id = NEW.id AND rejected_code IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: ingest_runs: a run that rejected its statement cannot succeed');
END;

CREATE INDEX raw_records_rejected ON raw_records (id) WHERE rejected_code IS NOT NULL;
