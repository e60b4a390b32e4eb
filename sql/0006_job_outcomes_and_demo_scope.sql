-- 0006: honest run outcomes, and a demo that keeps to itself.
--
-- Runs: 'partial' joins the outcomes (some of the work was done, some failed or was cut short by
-- SIGINT/SIGTERM). trackctl/jobs.py decides every outcome by one rule; see docs/OPERATIONS.md.
ALTER TABLE sequencing.run DROP CONSTRAINT run_outcome_known;
ALTER TABLE sequencing.run ADD CONSTRAINT run_outcome_known
    CHECK (outcome IN ('running', 'ok', 'partial', 'failed', 'skipped', 'died'));
-- The newest run that did (some of) its work, per job: health's lateness clock.
CREATE INDEX run_job_last_worked ON sequencing.run (job, finished_at DESC) WHERE outcome IN ('ok', 'partial');

-- The demo's own carrier and webhook subscriber are marked `demo`. An event of a demo carrier's
-- shipment is queued only for demo subscribers, and a demo subscriber gets only such events: the
-- demo never sends anything to a subscriber it did not create, and its notify never has the
-- user's deliveries to work through.
ALTER TABLE sequencing.carrier ADD COLUMN demo boolean NOT NULL DEFAULT false;
ALTER TABLE sequencing.webhook_subscriber ADD COLUMN demo boolean NOT NULL DEFAULT false;

-- As in 0003, plus the demo rule. Every event type's payload names its carrier; the carrier
-- table is small, so matching by that name costs one hash of it per statement.
CREATE OR REPLACE FUNCTION sequencing.outbox_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM inserted) THEN
        RETURN NULL;  -- an INSERT that matched nothing (an idempotent re-assign) is no event
    END IF;
    INSERT INTO sequencing.webhook_delivery (outbox_id, subscriber_id, shipment_id, next_attempt_at)
    SELECT n.id, s.id, n.shipment_id, now() + make_interval(secs => s.retry_schedule[1])
    FROM inserted n
    LEFT JOIN sequencing.carrier c ON c.name = n.payload->>'carrier'
    JOIN sequencing.webhook_subscriber s ON s.enabled AND (s.types IS NULL OR n.type = ANY (s.types))
                                        AND s.demo = coalesce(c.demo, false)
    ORDER BY n.id, s.id;
    -- Sent at commit, never for a rolled-back change; one per transaction whatever its size.
    PERFORM pg_notify('trackctl_outbox', '');
    RETURN NULL;
END
$$;

-- How a run reads: a `running` row whose recording session is gone belongs to a process that
-- died (see trackctl/runs.py). If pg_stat_activity hides another role's backend_start (no
-- pg_read_all_stats), the backend pid alone decides. One definition for every reader.
CREATE FUNCTION sequencing.run_outcome(r sequencing.run) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN r.outcome = 'running'
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                 WHERE a.pid = r.backend_pid
                                   AND (a.backend_start IS NULL OR r.backend_start IS NULL
                                        OR a.backend_start = r.backend_start))
                THEN 'died' ELSE r.outcome END
$$;
