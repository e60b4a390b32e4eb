-- Writing events, the LISTEN channel, retention and the backlog (trackctl/outbox.py).

-- name: insert_event
INSERT INTO sequencing.outbox (type, shipment_id, payload) VALUES (%s, %s, %s)
RETURNING sequencing.event_id(outbox);

-- name: insert_status_changed
-- The payload of `shipment.status_changed`, read from the shipment as it is after the change (so
-- run it after updating the row, in the same transaction). `label` is the Portuguese label.
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'shipment.status_changed', t.id, jsonb_build_object(
    'code', t.tracking_id, 'order_id', t.order_id, 'carrier', c.name, 'status', t.status,
    'previous_status', %(previous_status)s::text, 'label', s.label,
    'occurred_at', sequencing.rfc3339(%(occurred_at)s::timestamptz),
    'description', %(description)s::text, 'location', %(location)s::text)
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
WHERE t.id = %(shipment_id)s
RETURNING sequencing.event_id(outbox);

-- name: insert_stale
-- `last_event_at` is given by the caller (the time of the newest carrier event, or null).
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'shipment.stale', t.id, jsonb_build_object(
    'code', t.tracking_id, 'order_id', t.order_id, 'carrier', c.name, 'status', t.status,
    'last_event_at', sequencing.rfc3339(%(last_event_at)s::timestamptz))
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.id = %(shipment_id)s
RETURNING sequencing.event_id(outbox);

-- name: listen
-- The channel the outbox trigger notifies, once per writing transaction, at commit.
LISTEN trackctl_outbox;

-- name: unlisten
UNLISTEN trackctl_outbox;

-- name: cutoff
SELECT now() - %s;

-- name: prune_bounds
SELECT min(id), max(id) FROM sequencing.outbox WHERE created_at < %s;

-- name: prune_range
-- One id range at a time (the primary key; ids grow with time, so the scan stops at the first
-- range with nothing old enough). An event stays while any delivery of it is pending (or dead,
-- unless asked: a dead delivery can still be replayed), while a consumer group has not been
-- handed it (or holds it in an unacknowledged lease).
WITH doomed AS (
    SELECT o.id FROM sequencing.outbox o
    WHERE o.id > %(after)s AND o.id <= %(upto)s AND o.created_at < %(cutoff)s
      AND NOT EXISTS (SELECT 1 FROM sequencing.webhook_delivery d
                      WHERE d.outbox_id = o.id
                        AND (d.status = 'pending' OR (d.status = 'dead' AND NOT %(include_dead)s)))
      AND NOT EXISTS (SELECT 1 FROM sequencing.event_group g
                      WHERE g.position < o.id AND (g.types IS NULL OR o.type = ANY (g.types)))
      AND NOT EXISTS (SELECT 1 FROM sequencing.event_group_lease l
                      WHERE l.after_id < o.id AND o.id <= l.last_id)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM sequencing.outbox o USING doomed WHERE o.id = doomed.id;

-- name: backlog
SELECT (SELECT count(*) FROM sequencing.outbox),
       count(*) FILTER (WHERE d.status = 'pending'),
       count(*) FILTER (WHERE d.status = 'dead'),
       min(o.created_at) FILTER (WHERE d.status = 'pending')
FROM sequencing.webhook_delivery d JOIN sequencing.outbox o ON o.id = d.outbox_id
WHERE d.status IN ('pending', 'dead');
