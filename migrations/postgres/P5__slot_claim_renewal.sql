-- runledger on PostgreSQL, schema version 5 (issue 17): the claim of a slot stays alive
-- while its slot is being fired. The ticker that holds a claim renews it (moves
-- `claimed_at` forward) so that a long fire is never taken for an abandoned claim and
-- finished or given back by another ticker: SQLite's V7 on PostgreSQL. Version 4 is
-- another change's.
--
-- The function below is P1's `due_runs_state_machine` with exactly one change, everything
-- else (terminal slots final, the machine with its give-back, identity, run_ids that exist)
-- kept: the claim's fence also lets the SAME ticker move `claimed_at` forward, never
-- backward, while the slot stays 'claimed'. Another ticker still cannot touch a claim.
CREATE OR REPLACE FUNCTION due_runs_state_machine() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status IN ('fired', 'skipped', 'failed') THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: terminal slots are final';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status
       AND (OLD.status, NEW.status) NOT IN (VALUES
            ('pending', 'claimed'), ('pending', 'skipped'),
            ('claimed', 'fired'), ('claimed', 'skipped'), ('claimed', 'failed'),
            ('claimed', 'pending')) THEN
        RAISE EXCEPTION 'ILLEGAL_TRANSITION: due_runs: not a transition of the slot machine';
    END IF;
    IF (NEW.id, NEW.schedule_id, NEW.due_at, NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.schedule_id, OLD.due_at, OLD.created_at) THEN
        RAISE EXCEPTION 'IMMUTABLE: due_runs: a slot''s id, schedule and instant never change';
    END IF;
    IF OLD.claimed_by IS NOT NULL
       AND (NEW.claimed_by IS DISTINCT FROM OLD.claimed_by OR NEW.claimed_at IS DISTINCT FROM OLD.claimed_at)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'pending'
                AND NEW.claimed_by IS NULL AND NEW.claimed_at IS NULL)
       AND NOT (OLD.status = 'claimed' AND NEW.status = 'claimed'
                AND NEW.claimed_by = OLD.claimed_by AND NEW.claimed_at > OLD.claimed_at) THEN
        RAISE EXCEPTION 'CLAIM_FENCE: due_runs: a claim is never handed to another ticker nor moved back';
    END IF;
    IF NEW.run_ids IS DISTINCT FROM OLD.run_ids AND jsonb_typeof(NEW.run_ids) = 'array'
       AND EXISTS (SELECT 1 FROM jsonb_array_elements(NEW.run_ids) r
                    WHERE jsonb_typeof(r) <> 'number' OR (r #>> '{}') !~ '^[0-9]{1,18}$'
                       OR NOT EXISTS (SELECT 1 FROM ingest_runs WHERE id = (r #>> '{}')::bigint)) THEN
        RAISE EXCEPTION 'MISSING_REFERENCE: due_runs: run_ids name runs that do not exist';
    END IF;
    RETURN NEW;
END $$;
