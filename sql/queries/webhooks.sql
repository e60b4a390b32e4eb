-- Statements of trackctl/webhooks.py: subscribers, their secrets, deliveries and replays.

-- name: select_subscribers
-- Every subscriber (or the one %(id)s, or only the enabled ones), by id. The previous secret
-- and its end are given only while the rotation's overlap lasts.
SELECT s.id, s.url, s.types, s.retry_schedule, s.max_in_flight, s.enabled, s.disabled_reason, s.created_at,
       s.secret, CASE WHEN s.previous_until > now() THEN s.previous_secret END,
       CASE WHEN s.previous_until > now() THEN s.previous_until END
FROM sequencing.webhook_subscriber s
WHERE (%(id)s::int IS NULL OR s.id = %(id)s) AND (NOT %(enabled_only)s OR s.enabled)
ORDER BY s.id;

-- name: insert_subscriber
INSERT INTO sequencing.webhook_subscriber (url, secret, types, retry_schedule, max_in_flight)
VALUES (%(url)s, %(secret)s, %(types)s, %(schedule)s, %(max_in_flight)s)
RETURNING id;

-- name: update_subscriber
-- `webhook set`: each setting given (not null) replaces the stored one; %(set_types)s says
-- whether types changes (to %(types)s, where null means every type).
UPDATE sequencing.webhook_subscriber
SET url = coalesce(%(url)s, url),
    types = CASE WHEN %(set_types)s THEN %(types)s::text[] ELSE types END,
    max_in_flight = coalesce(%(max_in_flight)s, max_in_flight)
WHERE id = %(id)s
RETURNING id;

-- name: delete_subscriber
DELETE FROM sequencing.webhook_subscriber WHERE id = %(id)s RETURNING url;

-- name: rotate_secret
UPDATE sequencing.webhook_subscriber
SET previous_secret = secret, previous_until = now() + %(overlap)s, secret = %(secret)s
WHERE id = %(id)s
RETURNING id;

-- name: enable_subscriber
UPDATE sequencing.webhook_subscriber SET enabled = true, disabled_reason = NULL WHERE id = %(id)s RETURNING id;

-- name: list_deliveries
SELECT d.id, d.subscriber_id, sequencing.event_id(o), o.type, o.id::text, d.status, d.attempts, d.next_attempt_at,
       d.last_attempt_at, d.last_status, d.last_error, d.delivered_at
FROM sequencing.webhook_delivery d JOIN sequencing.outbox o ON o.id = d.outbox_id
WHERE (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(subscriber)s::int IS NULL OR d.subscriber_id = %(subscriber)s)
ORDER BY d.id DESC
LIMIT %(limit)s;

-- name: replay_one
-- A replay makes the delivery pending and due now with a fresh schedule; the event keeps its id.
UPDATE sequencing.webhook_delivery
SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL, lease_token = NULL
WHERE id = %(id)s AND status <> 'pending'
RETURNING id;

-- name: delivery_status
SELECT status FROM sequencing.webhook_delivery WHERE id = %(id)s;

-- name: replay_dead
UPDATE sequencing.webhook_delivery
SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL
WHERE status = 'dead' AND (%(subscriber)s::int IS NULL OR subscriber_id = %(subscriber)s);
