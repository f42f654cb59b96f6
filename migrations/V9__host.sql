-- V9: for hosts (issue 14).
--
-- 1. Zones. The tz database now comes from the system's zoneinfo or jiff's bundled copy
--    (src/schedule/rule.rs), both newer than the 2022a list V5 copied from time-tz. The real
--    zones that list lacks are added (Zone::new reads the names from these INSERT lines, so
--    Rust and SQL accept the same names). Entries of a zoneinfo directory that are not zones
--    (Factory, localtime, posixrules) are not added, and Zone::new refuses them.
-- 2. jobs.cancel_reason: the operator's reason for a cancel, stored on the job (the audit
--    log and the prunable event are no longer the only place). Rule: it is NULL unless the
--    job is cancelled (a cancel without a reason leaves it NULL); set only by the transition
--    into cancelled, fixed while cancelled, cleared by the restart out of cancelled;
--    1..=1000 bytes of text without NUL.

-- 1. zones: filled by migrations only, so the guard steps aside for these rows.
DROP TRIGGER zones_immutable_insert;
INSERT INTO zones (name) VALUES ('America/Ciudad_Juarez'), ('America/Coyhaique');
CREATE TRIGGER zones_immutable_insert BEFORE INSERT ON zones
BEGIN SELECT RAISE(ABORT, 'IMMUTABLE: zones: the zone list comes from the migrations'); END;

-- 2. jobs.cancel_reason.
ALTER TABLE jobs ADD COLUMN cancel_reason TEXT
    CHECK (cancel_reason IS NULL
           OR (state = 'cancelled'
               AND length(CAST(cancel_reason AS BLOB)) BETWEEN 1 AND 1000
               AND instr(CAST(cancel_reason AS BLOB), x'00') = 0));

-- Jobs cancelled before V9 get the reason their last cancel recorded in the audit log.
UPDATE jobs SET cancel_reason = (
        SELECT json_extract(a.detail, '$.reason') FROM audit_log a
         WHERE a.entity = 'job' AND a.entity_id = CAST(jobs.id AS TEXT) AND a.action = 'cancel'
           AND json_valid(a.detail) AND json_type(a.detail, '$.reason') = 'text'
           AND length(CAST(json_extract(a.detail, '$.reason') AS BLOB)) BETWEEN 1 AND 1000
           AND instr(CAST(json_extract(a.detail, '$.reason') AS BLOB), x'00') = 0
         ORDER BY a.id DESC LIMIT 1)
 WHERE state = 'cancelled';

CREATE TRIGGER jobs_cancel_reason_fixed
BEFORE UPDATE ON jobs
BEGIN
    SELECT RAISE(ABORT, 'IMMUTABLE: jobs: cancel_reason is set by the cancel and cleared by the restart only')
     WHERE NEW.cancel_reason IS NOT OLD.cancel_reason
       AND NOT (NEW.state = 'cancelled' AND OLD.state IS NOT 'cancelled')
       AND NOT (OLD.state = 'cancelled' AND NEW.state IS NOT 'cancelled' AND NEW.cancel_reason IS NULL);
END;
