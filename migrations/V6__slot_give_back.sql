-- Exactly-once slots across a crash (issue 13, item 3).
--
-- A run started for a slot names it in `meta_json.slotId`, in the transaction that
-- creates the run (and that transaction checks the slot is still claimed by the ticker
-- firing it). A claim older than the claim timeout whose slot no run names was never
-- fired: it is given back (claimed -> pending) so another ticker fires it. One whose
-- slot a run names is finished from those runs. src/schedule/state.rs TRANSITIONS gains
-- the same pair.

DROP TRIGGER due_runs_state_machine;

CREATE TRIGGER due_runs_state_machine
BEFORE UPDATE OF status ON due_runs
WHEN NEW.status IS NOT OLD.status
 AND (OLD.status, NEW.status) NOT IN (VALUES
        ('pending', 'claimed'), ('pending', 'skipped'),
        ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'),
        ('claimed', 'pending'))
BEGIN
    SELECT RAISE(ABORT, 'ILLEGAL_TRANSITION: due_runs');
END;

-- The recovery's lookup: the runs that name a slot. `json_valid` first, so that a row whose
-- meta_json was damaged by hand can still be written and read (doctor and reads report it
-- as CORRUPT_ROW) instead of every write to it failing with "malformed JSON".
CREATE INDEX ingest_runs_slot ON ingest_runs (json_extract(meta_json, '$.slotId'))
    WHERE json_valid(meta_json) AND json_extract(meta_json, '$.slotId') IS NOT NULL;
