-- runledger operator runbook, PostgreSQL twin of runbook.sql: the same named queries for a
-- PostgreSQL ledger (feature `postgres`, docs/postgres.md).
--
-- Runs as is with psql: `psql "$URL" -f runbook.pg.sql` runs every query, or paste one.
-- Set the ledger's schema first if it is not on the search_path (`set search_path = ...;`).
-- Each query is preceded by `-- name: <name>` and a comment line saying when to use it, and
-- answers what the query of the same name in runbook.sql answers on the same rows (tests/pg
-- runbook.rs checks this), with two differences of spelling: `enabled` is a boolean (t/f,
-- SQLite says 1/0) and JSON arrays print with a space after each comma.
-- Times are fixed-width UTC text (2026-11-22T11:30:00.000Z); 'now' is the server's clock.
-- Values meant to be edited (a pipeline name, a threshold) are literals.

-- name: latest_runs
-- First look ("did ingestion run?"): the 20 newest runs of every pipeline and scope.
select scope, status, started_at, finished_at, error_message
from ingest_runs order by started_at desc limit 20;

-- name: blocked_failures
-- "Why did it not run?": the 50 newest failed runs with the gate (or lock) that blocked them; blocked_stage null means a runner stage failed.
select scope, status,
  meta_json->>'blockedStage' as blocked_stage,
  meta_json->>'errorCode' as error_code,
  error_message, started_at
from ingest_runs where status = 'failed' order by started_at desc limit 50;

-- name: health_summary
-- Overall health at a glance: how many runs each scope has in each status.
select scope, status, count(*) as cnt
from ingest_runs group by scope, status order by scope, status;

-- name: health_summary_recent
-- Health over the 7 days before the newest run (edit the window): uses the started_at index, where health_summary counts every row.
select scope, status, count(*) as cnt
from ingest_runs
where started_at >= (select to_char((max(started_at)::timestamptz - interval '7 days') at time zone 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') from ingest_runs)
group by scope, status order by scope, status;

-- name: active_runs
-- Which runs hold their lock right now, for how long, in which stage; a negative lease_left_s means the holder died and the next sweep or start finalizes it as ABANDONED.
select id, pipeline, scope, lock_key, trigger, started_at, lease_expires_at,
  round(extract(epoch from now() - started_at::timestamptz), 1) as running_s,
  round(extract(epoch from lease_expires_at::timestamptz - now()), 1) as lease_left_s,
  timeline->-1->>'stage' as current_stage
from ingest_runs where status = 'started' order by started_at;

-- name: abandoned_runs
-- After a crash or hang: the 50 newest runs finalized as ABANDONED because their lease expired, with the stage they were in.
select id, pipeline, scope, started_at, finished_at, lease_expires_at,
  meta_json->>'openStage' as open_stage, error_message
from ingest_runs where error_code = 'ABANDONED' order by started_at desc limit 50;

-- name: pipeline_stage_durations
-- Where the time goes in one pipeline (edit 'flex'): its 20 newest runs, one row per stage attempt with status and duration.
select r.id as run_id, r.scope, r.status as run_status, r.started_at as run_started_at,
  e.value->>'stage' as stage,
  (e.value->>'attempt')::bigint as attempt,
  e.value->>'status' as stage_status,
  (e.value->>'duration_ms')::bigint as duration_ms,
  e.value->>'error_code' as error_code
from (select id, scope, status, started_at, timeline from ingest_runs
      where pipeline = 'flex' order by started_at desc limit 20) r
  cross join lateral jsonb_array_elements(r.timeline) with ordinality e(value, key)
order by r.started_at desc, r.id desc, e.key;

-- name: stage_failure_counts
-- Which stage breaks most: failed stage attempts (retries included) per pipeline, stage and code over the 1000 newest failed runs.
select r.pipeline, e.value->>'stage' as stage,
  e.value->>'error_code' as error_code,
  count(*) as failures, max(r.started_at) as last_seen
from (select pipeline, timeline, started_at from ingest_runs where status = 'failed'
      order by started_at desc limit 1000) r
  cross join lateral jsonb_array_elements(r.timeline) e(value)
where e.value->>'status' = 'failed'
group by r.pipeline, e.value->>'stage', e.value->>'error_code'
order by failures desc, r.pipeline, stage, error_code;

-- name: last_success
-- Is any pool silently stale? The newest successful run of each pipeline and scope that has runs (run_id null: never succeeded).
with keys as (select distinct pipeline, scope from ingest_runs)
select k.pipeline, k.scope, s.id as run_id, s.trigger, s.started_at, s.finished_at, s.duration_ms
from keys k
left join lateral (
  select r.id, r.trigger, r.started_at, r.finished_at, r.duration_ms from ingest_runs r
  where r.pipeline = k.pipeline and r.scope = k.scope and r.status = 'success'
  order by r.started_at desc limit 1) s on true
order by k.pipeline, k.scope;

-- name: stale_probes
-- What preflight will probe or block on: enabled modules per scope whose newest probe is missing, failed, or older than 15 minutes (edit the threshold).
select s.value as scope, m.module, m.domain, p.status as last_status, p.code, p.tested_at,
  case when p.id is null then 'untested'
       when p.status = 'failed' then 'failed'
       else 'stale' end as problem
from ingest_modules m
cross join lateral jsonb_array_elements_text(m.scopes) s(value)
left join ingest_probes p on p.id = (
  select q.id from ingest_probes q where q.module = m.module
  order by q.tested_at desc, q.id desc limit 1)
where m.enabled
  and (p.id is null or p.status = 'failed'
       or p.tested_at < to_char((now() - interval '15 minutes') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
order by scope, m.module;

-- name: stuck_jobs
-- Is the supervisor alive? Running jobs whose last heartbeat is older than 5 minutes (edit the threshold); it should have rescued them.
select id, user_id, kind, progress, step, attempt, worker_id, heartbeat_at,
  round(extract(epoch from now() - heartbeat_at::timestamptz), 1) as silent_s
from jobs
where state = 'running'
  and heartbeat_at < to_char((now() - interval '5 minutes') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
order by heartbeat_at;

-- name: schedule_upcoming
-- Use to see what fires next: every enabled schedule's next slot, soonest first.
select name, pipeline, scope, rule, zone, misfire, next_due_at, last_due_at
from schedules
where enabled and next_due_at is not null
order by next_due_at, name;

-- name: schedule_missed_slots
-- Use after downtime or when a scheduled run did not happen: skipped and failed slots, newest first, with the reason (MISFIRE_*, RUN_ALREADY_ACTIVE, ABANDONED...).
select s.name, d.due_at, d.status, d.outcome_code, d.outcome_message, d.run_ids, d.finished_at
from due_runs d join schedules s on s.id = d.schedule_id
where d.status in ('skipped', 'failed')
order by d.due_at desc, s.name
limit 50;

-- name: schedule_in_flight_slots
-- Use when a slot seems stuck: pending or claimed slots, oldest first; a claim older than the claim timeout (6 h by default) is failed as ABANDONED by the next tick.
select s.name, d.due_at, d.status, d.claimed_by, d.claimed_at
from due_runs d join schedules s on s.id = d.schedule_id
where d.status in ('pending', 'claimed')
order by d.due_at, s.name;

-- name: schedule_last_fire
-- Use to check that each schedule is running: its latest fired slot and the runs it started (null columns: it never fired).
select s.name, s.enabled, s.rule, s.zone, d.due_at as last_fired_due_at, d.finished_at, d.run_ids
from schedules s
left join due_runs d on d.id = (
    select id from due_runs
    where schedule_id = s.id and status = 'fired'
    order by due_at desc
    limit 1)
order by s.name;

-- name: schedule_slot_counts
-- Use for a quick health overview: how many slots each schedule has in each status.
select s.name, d.status, count(*) as cnt
from due_runs d join schedules s on s.id = d.schedule_id
group by s.name, d.status
order by s.name, d.status;
