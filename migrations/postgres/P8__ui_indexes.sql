-- runledger on PostgreSQL, schema version 8: the indexes of the Trust UI's bounded reads
-- (src/http/ui, twins in src/pg/storage/), SQLite's V3 indexes of the same name. The
-- overview counts runs per scope and status with a LIMIT and lists the newest failed runs:
-- without these, a status that few runs have (say, `started`) is counted by reading every
-- run. Versions 6 and 7 are other changes'.
CREATE INDEX ingest_runs_scope_status ON ingest_runs (scope, status);
CREATE INDEX ingest_runs_status_started ON ingest_runs (status, started_at);
