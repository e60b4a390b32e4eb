-- Run records (trackctl/runs.py): one row per run of a cron-able job, see sql/0004 and 0006.
--
-- sequencing.run_outcome(r) (0006) shows a `running` row whose session is gone as `died`;
-- mark_died stores that conclusion.

-- name: start_run
INSERT INTO sequencing.run (id, job, host, pid, backend_pid, backend_start)
SELECT %s, %s, %s, %s, pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
RETURNING started_at

-- name: finish_run
UPDATE sequencing.run SET outcome = %s, finished_at = now(), counts = %s, error = %s
WHERE id = %s AND outcome = 'running'
RETURNING finished_at

-- name: mark_died
UPDATE sequencing.run r SET outcome = 'died', error = 'the process ended without recording the end of its run'
WHERE r.outcome = 'running' AND sequencing.run_outcome(r) = 'died'

-- name: list_runs
SELECT r.id, r.job, r.host, r.pid, r.started_at, r.finished_at,
       sequencing.run_outcome(r),
       r.counts, r.error, extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8
FROM sequencing.run r
WHERE (%(job)s::text IS NULL OR r.job = %(job)s)
ORDER BY r.started_at DESC, r.id
LIMIT %(limit)s

-- name: last_runs
-- The newest run of every job, its newest `ok` run and its newest run that did (some of) its work
-- (`ok` or `partial`). The job names come from a skip scan of the run_job_started index (one probe
-- per job), so the cost does not grow with the history.
WITH RECURSIVE jobs(job) AS (
    (SELECT job FROM sequencing.run ORDER BY job LIMIT 1)
    UNION ALL
    SELECT (SELECT r.job FROM sequencing.run r WHERE r.job > jobs.job ORDER BY r.job LIMIT 1)
    FROM jobs WHERE jobs.job IS NOT NULL
)
SELECT j.job, last.*, ok.finished_at, ok.seconds, worked.finished_at
FROM jobs j
CROSS JOIN LATERAL (
    SELECT r.id, r.job, r.host, r.pid, r.started_at, r.finished_at,
           sequencing.run_outcome(r),
           r.counts, r.error, extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)::float8
    FROM sequencing.run r WHERE r.job = j.job ORDER BY r.started_at DESC LIMIT 1
) last
LEFT JOIN LATERAL (
    SELECT r.finished_at, extract(epoch FROM r.finished_at - r.started_at)::float8 AS seconds
    FROM sequencing.run r WHERE r.job = j.job AND r.outcome = 'ok' ORDER BY r.finished_at DESC LIMIT 1
) ok ON true
LEFT JOIN LATERAL (
    SELECT r.finished_at FROM sequencing.run r
    WHERE r.job = j.job AND r.outcome IN ('ok', 'partial') ORDER BY r.finished_at DESC LIMIT 1
) worked ON true
WHERE j.job IS NOT NULL
ORDER BY j.job

-- name: prune_runs
DELETE FROM sequencing.run WHERE started_at < now() - %s AND outcome <> 'running'
