-- name: schedule_upcoming
-- Use to see what fires next: every enabled schedule's next slot, soonest first.
select name, pipeline, scope, rule, zone, misfire, next_due_at, last_due_at
from schedules
where enabled = 1 and next_due_at is not null
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
