-- Polling carriers (trackctl/poll.py, trackctl/poll_worker.py). See docs/POLLING.md.
--
-- Leases (slots, claims) and the bookkeeping of polls that brought no news are committed with
-- synchronous_commit off, set for that transaction only (so it holds through PgBouncer in
-- transaction mode): a database crash can lose the last moments of them, which only means those
-- shipments are polled again. Transactions that store news (events, status, stale flag, and so
-- outbox rows) stay durable.

-- name: round_start
SELECT now()

-- name: acquire
-- The right to make one request about up to %(limit)s shipments (sql/0008_carriers.sql).
SELECT a.*, set_config('synchronous_commit', 'off', true)
FROM sequencing.poll_acquire_batch(%(carrier)s, %(holder)s, %(lease)s, %(round)s, %(all)s, %(limit)s, %(stop)s) AS a

-- name: not_durable
SELECT set_config('synchronous_commit', 'off', true)

-- name: rate_reserve
-- Book the start of one request in a rate bucket (sql/0008_carriers.sql): (seconds to wait, booked
-- start), or (minus the seconds after which to ask again, NULL).
SELECT r.wait_s, r.booked, set_config('synchronous_commit', 'off', true)
FROM sequencing.rate_reserve(%(bucket)s, %(count)s, %(window)s, %(lead)s) AS r

-- name: rate_late
SELECT sequencing.rate_late(%(bucket)s, %(booked)s), set_config('synchronous_commit', 'off', true)

-- name: release_ok
-- The slot goes back as soon as the answer is in (the cap is about requests, not bookkeeping),
-- in the statement that counts the answer for the carrier's breaker, so that a request that
-- trips the breaker stops the next one. A success closes the breaker.
WITH released AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE carrier_id = %(carrier)s AND slot = %(slot)s AND holder = %(holder)s
), closed AS (
    UPDATE sequencing.carrier_state SET consecutive_failures = 0, open_until = NULL, probe_until = NULL
    WHERE carrier_id = %(carrier)s
      AND (consecutive_failures <> 0 OR open_until IS NOT NULL OR probe_until IS NOT NULL)
)
SELECT set_config('synchronous_commit', 'off', true)

-- name: release_failed
-- A failed request adds to the carrier's consecutive failures and opens the breaker at the
-- threshold, or again after a failed probe.
WITH released AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE carrier_id = %(carrier)s AND slot = %(slot)s AND holder = %(holder)s
), tripped AS (
    UPDATE sequencing.carrier_state s SET
        consecutive_failures = s.consecutive_failures + 1,
        open_until = CASE WHEN (%(probe)s OR (s.open_until IS NULL AND s.consecutive_failures + 1 >= c.breaker_threshold))
                          THEN now() + c.breaker_cooldown ELSE s.open_until END,
        opened_at = CASE WHEN (%(probe)s OR (s.open_until IS NULL AND s.consecutive_failures + 1 >= c.breaker_threshold))
                         THEN now() ELSE s.opened_at END,
        probe_until = CASE WHEN %(probe)s THEN NULL ELSE s.probe_until END
    FROM sequencing.carrier c
    WHERE s.carrier_id = %(carrier)s AND c.id = s.carrier_id
)
SELECT set_config('synchronous_commit', 'off', true)

-- name: finish_ok
UPDATE sequencing.tracking SET
    last_polled_at = now(), next_poll_at = now() + %(next)s, claimed_until = NULL,
    poll_count = poll_count + 1, poll_failures = 0, last_poll_error = NULL,
    remote_registered_at = CASE WHEN %(registered)s THEN coalesce(remote_registered_at, now())
                                ELSE remote_registered_at END
WHERE id = %(id)s

-- name: finish_failed
UPDATE sequencing.tracking SET
    last_polled_at = now(), claimed_until = NULL, poll_count = poll_count + 1,
    poll_failures = poll_failures + 1, last_poll_error = %(error)s,
    next_poll_at = now() + make_interval(secs => least(%(cap)s, %(base)s * power(2, least(poll_failures, 30)))
                                                  * (0.5 + 0.5 * random())),
    remote_registered_at = CASE WHEN %(registered)s THEN coalesce(remote_registered_at, now())
                                ELSE remote_registered_at END
WHERE id = %(id)s

-- name: finish_limited
-- A 429 blocks the carrier in the statement that gives the slot back: no request of this
-- process or any other can start in between. Every shipment of the request is due again then.
WITH released AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE carrier_id = %(carrier)s AND slot = %(slot)s AND holder = %(holder)s
), blocked AS (
    UPDATE sequencing.carrier_state SET
        blocked_until = greatest(coalesce(blocked_until, now()), now() + %(retry)s),
        probe_until = CASE WHEN %(probe)s THEN NULL ELSE probe_until END
    WHERE carrier_id = %(carrier)s
    RETURNING blocked_until
)
UPDATE sequencing.tracking SET claimed_until = NULL,
    next_poll_at = CASE WHEN %(stop)s THEN next_poll_at ELSE (SELECT blocked_until FROM blocked) END
WHERE id = ANY(%(ids)s)
RETURNING next_poll_at

-- name: finish_stopped
-- The carrier's service was told to stop tracking these numbers.
UPDATE sequencing.tracking SET remote_stopped_at = now(), claimed_until = NULL
WHERE id = ANY(%(ids)s) AND remote_registered_at IS NOT NULL

-- name: record_call
-- One HTTP request to a carrier, for `trackctl carrier stats` and the metrics.
INSERT INTO sequencing.carrier_call (carrier_id, kind, outcome, numbers, registered, latency_ms)
SELECT %(carrier)s, %(kind)s, %(outcome)s, %(numbers)s, %(registered)s, %(latency_ms)s
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS not_durable

-- name: overdue
-- Open shipments of carriers with an adapter whose poll is late by more than `slack` (never
-- polled ones count from their assignment). Walks the due index, so it costs what is overdue.
SELECT count(*)::int FROM sequencing.carrier c
CROSS JOIN LATERAL (
    SELECT 1 FROM sequencing.tracking t
    WHERE t.freightcarrier_id = c.id
      AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
      AND t.next_poll_at < now() - %(slack)s
      AND (t.next_poll_at > '-infinity' OR t.assigned_at < now() - %(slack)s)
      AND (t.claimed_until IS NULL OR t.claimed_until <= now())  -- a poller holding it is on it
) late
WHERE c.adapter IS NOT NULL

-- name: prune_calls
-- Request records older than %(keep)s go, a bounded slice per poll run (cron runs it every minute).
DELETE FROM sequencing.carrier_call
WHERE id IN (SELECT id FROM sequencing.carrier_call WHERE at < now() - %(keep)s ORDER BY at LIMIT 10000)

-- name: release_abandoned
-- A run stopped by SIGINT/SIGTERM gives back what its abandoned requests held: its concurrency
-- slots, the half-open probes it was making, and its claims, which are due again at once (the
-- claim had moved next_poll_at past its lease) so the next run takes them.
WITH slots AS (
    UPDATE sequencing.carrier_slot SET leased_until = '-infinity', holder = NULL
    WHERE holder = %(holder)s
), probes AS (
    UPDATE sequencing.carrier_state SET probe_until = NULL
    WHERE carrier_id = ANY (%(probing)s::integer[]) AND probe_until IS NOT NULL
)
UPDATE sequencing.tracking SET claimed_until = NULL, next_poll_at = now()
WHERE id = ANY (%(ids)s::bigint[]) AND claimed_until IS NOT NULL
