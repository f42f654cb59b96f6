-- runledger on PostgreSQL, schema version 2 (issue 17): wake-ups by LISTEN/NOTIFY.
--
-- Workers wait on a notification instead of polling: a job that becomes claimable
-- (inserted as `created`, or put back to `created` by a supervisor or an operator) notifies
-- channel `runledger_work`; every appended job event notifies `runledger_events`.
-- NOTIFY is transactional: the notification is delivered when the writing transaction
-- commits, never for one that rolls back, and identical payloads of one transaction are
-- folded into one.
--
-- Channels are database-wide, and a database may hold several ledgers (one per schema), so
-- each payload starts with the ledger's schema; a listener keeps its own schema's:
--   runledger_work:   '<schema>/<kind>'
--   runledger_events: '<schema>/<job_id>/<seq>'
-- Payloads stay small (a schema and a kind are at most a few hundred bytes; the limit is
-- 8000). src/pg/listener.rs is the Rust side.

CREATE FUNCTION runledger_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('runledger_work', TG_TABLE_SCHEMA || '/' || NEW.kind);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_created AFTER INSERT ON jobs
    FOR EACH ROW WHEN (NEW.state = 'created')
    EXECUTE FUNCTION runledger_notify_work();
CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'created' AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION runledger_notify_work();

CREATE FUNCTION runledger_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('runledger_events', TG_TABLE_SCHEMA || '/' || NEW.job_id || '/' || NEW.seq);
    RETURN NULL;
END $$;

CREATE TRIGGER job_events_notify AFTER INSERT ON job_events
    FOR EACH ROW EXECUTE FUNCTION runledger_notify_event();
