-- Statements of trackctl/notify.py: claiming, recording and releasing webhook deliveries.
--
-- Claims and outcomes need not wait for the WAL flush: after a server crash a lost claim is a
-- row due again, and a lost `done` a second delivery, which at-least-once allows anyway. Each
-- statement turns synchronous_commit off for its own transaction only (set_config(..., true)),
-- so nothing leaks to other clients of a pooled server connection.

-- name: claim
-- Lease up to %(limit)s due deliveries of one subscriber: oldest due first, and only those with
-- no earlier event of the same shipment still pending for that subscriber (per-shipment order).
WITH picked AS (
    SELECT d.id FROM sequencing.webhook_delivery d
    WHERE d.subscriber_id = %(subscriber)s AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery e
                      WHERE e.subscriber_id = d.subscriber_id AND e.shipment_id = d.shipment_id
                        AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
    ORDER BY d.next_attempt_at, d.outbox_id
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE sequencing.webhook_delivery d
SET next_attempt_at = now() + %(lease)s, lease_token = %(token)s
FROM picked, sequencing.outbox o,
     (SELECT set_config('synchronous_commit', 'off', true)) AS not_durable
WHERE d.id = picked.id AND o.id = d.outbox_id
RETURNING d.id, d.subscriber_id, sequencing.event_id(o), sequencing.event_body(o), d.attempts + 1, o.type;

-- name: record
-- Outcomes of one round. A 2xx is done; 410 keeps the row pending (its subscriber is disabled
-- by `disable`, and the row resumes if the subscriber is enabled again); anything else is a
-- failed attempt, retried after the schedule's next step, or dead after its last. Rows whose
-- lease this process lost (it ran out and another process took them) are left alone.
UPDATE sequencing.webhook_delivery d SET
    attempts = d.attempts + 1,
    last_attempt_at = r.attempted_at,
    last_status = r.http_status,
    last_error = r.error,
    status = CASE WHEN r.ok THEN 'done' WHEN r.gone THEN 'pending'
                  WHEN d.attempts + 1 >= cardinality(s.retry_schedule) THEN 'dead' ELSE 'pending' END,
    delivered_at = CASE WHEN r.ok THEN now() END,
    next_attempt_at = CASE WHEN r.ok THEN NULL WHEN r.gone THEN now()
                           WHEN d.attempts + 1 >= cardinality(s.retry_schedule) THEN NULL
                           ELSE now() + make_interval(secs => s.retry_schedule[d.attempts + 2]) END,
    lease_token = NULL
FROM unnest(%(ids)s::bigint[], %(ok)s::boolean[], %(gone)s::boolean[], %(status)s::integer[],
            %(error)s::text[], %(at)s::timestamptz[]) AS r(id, ok, gone, http_status, error, attempted_at),
     sequencing.webhook_subscriber s,
     (SELECT set_config('synchronous_commit', 'off', true)) AS not_durable
WHERE d.id = r.id AND d.lease_token = %(token)s AND s.id = d.subscriber_id
RETURNING d.id, d.status;

-- name: release
-- Rows this run claimed and never attempted, or abandoned mid-request when it was stopped, or
-- held back by a subscriber's open breaker: due again at once, their attempts unchanged.
UPDATE sequencing.webhook_delivery SET lease_token = NULL, next_attempt_at = now()
WHERE id = ANY (%(ids)s) AND lease_token = %(token)s;

-- name: disable
UPDATE sequencing.webhook_subscriber SET enabled = false, disabled_reason = %(reason)s
WHERE id = ANY (%(ids)s) AND enabled
RETURNING id;

-- name: next_due
-- Seconds until the next delivery this process could claim (negative: due already), or null.
-- Subscribers whose breaker is open in this process (%(resting)s) are left out.
SELECT extract(epoch FROM min(x.at) - now())::float8
FROM sequencing.webhook_subscriber s CROSS JOIN LATERAL (
    SELECT d.next_attempt_at AS at FROM sequencing.webhook_delivery d
    WHERE d.subscriber_id = s.id AND d.status = 'pending'
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery e
                      WHERE e.subscriber_id = d.subscriber_id AND e.shipment_id = d.shipment_id
                        AND e.status = 'pending' AND e.outbox_id < d.outbox_id)
    ORDER BY d.next_attempt_at, d.outbox_id
    LIMIT 1
) x
WHERE s.enabled AND NOT s.id = ANY (%(resting)s::int[]);

-- name: new_event_id
-- An event id for a `webhook test` ping: the same form as every event's.
SELECT sequencing.new_event_id(), sequencing.rfc3339(now());
