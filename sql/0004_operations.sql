-- 0004: run records of the cron-able commands (refill, poll, notify, stale sweep, prunes).
-- A run is inserted as 'running' when the command starts and updated once when it ends.
-- A process that dies leaves its row 'running'; readers tell it apart from a live run by the
-- database session it was recorded from (backend_pid + backend_start): PostgreSQL ends that
-- session when the process goes away, so a 'running' row without its session died.
-- The next run of any job stores that conclusion as outcome 'died' (see trackctl/runs.py).

CREATE TABLE sequencing.run (
    id            uuid PRIMARY KEY,                -- the run id, also in every log line of the run
    job           text NOT NULL CONSTRAINT run_job_format CHECK (job ~ '^[a-z][a-z0-9-]{0,39}$'),
    host          text NOT NULL,
    pid           integer NOT NULL,
    backend_pid   integer NOT NULL,                -- pg_backend_pid() of the recording session
    backend_start timestamptz,                     -- its pg_stat_activity.backend_start
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text NOT NULL DEFAULT 'running'
                  CONSTRAINT run_outcome_known CHECK (outcome IN ('running', 'ok', 'failed', 'skipped', 'died')),
    counts        jsonb NOT NULL DEFAULT '{}'::jsonb,
    error         text,
    CONSTRAINT run_finished_when_done CHECK ((outcome IN ('running', 'died')) = (finished_at IS NULL))
);

-- `trackctl runs --job NAME` and the last run of every job.
CREATE INDEX run_job_started ON sequencing.run (job, started_at DESC);
-- The last successful run per job (health, metrics, dashboard).
CREATE INDEX run_job_last_ok ON sequencing.run (job, finished_at DESC) WHERE outcome = 'ok';
-- Runs still marked running: few rows, read at the start of every run to find the dead ones.
CREATE INDEX run_running ON sequencing.run (started_at) WHERE outcome = 'running';
-- Pruning by age.
CREATE INDEX run_started ON sequencing.run (started_at);
