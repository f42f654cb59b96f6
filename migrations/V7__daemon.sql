-- The daemon runs configured pipelines (issue 14, daemon part).
--
-- A claim stays alive while its run runs: the ticker that holds a slot's claim renews it
-- (moves `claimed_at` forward) so that a five-minute Flex poll is never taken for an
-- abandoned claim and finished or given back by another ticker.
--
-- Applied after V6: the trigger below is V6's `due_runs_state_machine` with exactly one
-- change, everything else (the machine with its give-back, identity, run_ids that exist)
-- kept: the claim's fence also lets the SAME ticker move `claimed_at` forward, never
-- backward, while the slot stays 'claimed'. Another ticker still cannot touch a claim.

DROP TRIGGER due_runs_state_machine;

-- Every update: the machine, identity, the claim's fence (with its renewal), and runs that exist.
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
    SELECT RAISE(ABORT, 'CLAIM_FENCE: due_runs: a claim is never handed to another ticker nor moved back')
     WHERE OLD.claimed_by IS NOT NULL
       AND (NEW.claimed_by IS NOT OLD.claimed_by OR NEW.claimed_at IS NOT OLD.claimed_at)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'pending'
                AND NEW.claimed_by IS NULL AND NEW.claimed_at IS NULL)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'claimed'
                AND NEW.claimed_by IS OLD.claimed_by AND NEW.claimed_at > OLD.claimed_at);
    SELECT RAISE(ABORT, 'MISSING_REFERENCE: due_runs: run_ids name runs that do not exist')
     WHERE NEW.run_ids IS NOT OLD.run_ids AND json_valid(NEW.run_ids)
       AND EXISTS (SELECT 1 FROM json_each(NEW.run_ids) r
                    WHERE r.type <> 'integer' OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = r.value));
END;
