-- Exactly-once slots across a crash (issue 13, item 3).
--
-- A run started for a slot names it in `meta_json.slotId`, in the transaction that
-- creates the run (and that transaction checks the slot is still claimed by the ticker
-- firing it). A claim older than the claim timeout whose slot no run names was never
-- fired: it is given back (claimed -> pending) so another ticker fires it. One whose
-- slot a run names is finished from those runs. src/schedule/state.rs TRANSITIONS gains
-- the same pair.
--
-- Applied after V5: the trigger below is V5's `due_runs_state_machine` with exactly two
-- changes, everything else (identity, the claim's fence, run_ids that exist) kept:
--   * the machine gains ('claimed', 'pending');
--   * the claim's fence lets that give-back, and only it, clear the claim
--     (claimed_at and claimed_by both back to NULL, as the table's CHECKs require of a
--     pending slot). A claim is still never handed to another ticker.

DROP TRIGGER due_runs_state_machine;

-- Every update: the machine, identity, the claim's fence, and runs that exist.
CREATE TRIGGER due_runs_state_machine
BEFORE UPDATE ON due_runs
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs: not a transition of the slot machine')
     WHERE NEW.status IS NOT OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES
            ('pending', 'claimed'), ('pending', 'skipped'),
            ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'),
            ('claimed', 'pending'));
    SELECT RAISE(ABORT, 'IMMUTABLE: due_runs: a slot''s id, schedule and instant never change')
     WHERE NEW.id IS NOT OLD.id OR NEW.schedule_id IS NOT OLD.schedule_id
        OR NEW.due_at IS NOT OLD.due_at OR NEW.created_at IS NOT OLD.created_at;
    SELECT RAISE(ABORT, 'CLAIM_FENCE: due_runs: a claim is never handed to another ticker')
     WHERE OLD.claimed_by IS NOT NULL
       AND (NEW.claimed_by IS NOT OLD.claimed_by OR NEW.claimed_at IS NOT OLD.claimed_at)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'pending'
                AND NEW.claimed_by IS NULL AND NEW.claimed_at IS NULL);
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: due_runs: run_ids name runs that do not exist')
     WHERE NEW.run_ids IS NOT OLD.run_ids AND json_valid(NEW.run_ids)
       AND EXISTS (SELECT 1 FROM json_each(NEW.run_ids) r
                    WHERE r.type <> 'integer' OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = r.value));
END;

-- The recovery's lookup: the runs that name a slot. `json_valid` first, so that a row whose
-- meta_json was damaged by hand can still be written and read (doctor and reads report it
-- as CORRUPT_ROW) instead of every write to it failing with "malformed JSON".
CREATE INDEX ingest_runs_slot ON ingest_runs (json_extract(meta_json, '$.slotId'))
    WHERE json_valid(meta_json) AND json_extract(meta_json, '$.slotId') IS NOT NULL;
