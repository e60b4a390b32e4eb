-- Shipments: look-ups of cancel, mark and assign (trackctl/shipments.py, trackctl/assign.py).

-- name: code_status
SELECT status FROM sequencing.tracking WHERE tracking_id = %s

-- name: find_by_code
SELECT t.id, t.order_id, c.name
FROM sequencing.tracking t LEFT JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.tracking_id = %s

-- name: find_by_order
-- The shipments of an order (of one carrier when %(carrier_id)s is given), by carrier and parcel.
SELECT t.id, t.tracking_id, t.status FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.order_id = %(order_id)s AND (%(carrier_id)s::int IS NULL OR t.freightcarrier_id = %(carrier_id)s)
ORDER BY c.name, t.parcel

-- name: open_of_carrier
-- The open shipments of a carrier, for `carrier remove --force` (which cancels them).
SELECT t.id FROM sequencing.tracking t
WHERE t.freightcarrier_id = %s AND t.status NOT IN ('delivered', 'returned', 'cancelled')
ORDER BY t.id

-- name: lock_shipment
SELECT t.tracking_id, t.order_id, c.name, t.status, t.stale_at IS NOT NULL,
       coalesce(t.last_event_at, t.assigned_at),
       %(stale_after)s::interval IS NOT NULL AND coalesce(t.last_event_at, t.assigned_at) < now() - %(stale_after)s::interval
FROM sequencing.tracking t JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.id = %(id)s AND t.freightcarrier_id IS NOT NULL
FOR UPDATE OF t;

-- name: manual_time
-- Manual events happen "now", but never before the newest event already known, so that a
-- manual change is always the newest one even when a carrier's clock runs ahead.
SELECT greatest(now(), max(occurred_at) + interval '1 millisecond')
FROM sequencing.tracking_event WHERE shipment_id = %s;

-- name: apply_events
-- One statement under the row lock: insert the events once each (the per-shipment dedupe key),
-- find the newest known-status event by the carrier's time among the stored and the new ones
-- (ties go to the status further along, delivered over out_for_delivery), and move the
-- shipment to it; any new event is news (last_event_at, stale flag cleared).
WITH ins AS (
    INSERT INTO sequencing.tracking_event
        (shipment_id, dedupe_key, source, occurred_at, status, raw_status, description, location)
    SELECT %(id)s, u.key, %(source)s, u.occurred_at, u.status, u.raw_status, u.description, u.location
    FROM unnest(%(keys)s::text[], %(times)s::timestamptz[], %(statuses)s::text[], %(raws)s::text[],
                %(descriptions)s::text[], %(locations)s::text[])
         WITH ORDINALITY AS u(key, occurred_at, status, raw_status, description, location, n)
    ORDER BY u.occurred_at, u.n
    ON CONFLICT (shipment_id, dedupe_key) DO NOTHING
    RETURNING id, occurred_at, status, description, location
), newest AS (
    SELECT x.status, x.occurred_at, x.description, x.location
    FROM (SELECT e.id, e.occurred_at, e.status, e.description, e.location
          FROM sequencing.tracking_event e WHERE e.shipment_id = %(id)s AND e.status IS NOT NULL
          UNION ALL
          SELECT i.id, i.occurred_at, i.status, i.description, i.location FROM ins i WHERE i.status IS NOT NULL) x
    JOIN sequencing.status s ON s.key = x.status
    ORDER BY x.occurred_at DESC, s.position DESC, x.id DESC
    LIMIT 1
), moved AS (
    UPDATE sequencing.tracking t
    SET status = coalesce((SELECT status FROM newest), t.status), last_event_at = now(), stale_at = NULL
    WHERE t.id = %(id)s AND EXISTS (SELECT 1 FROM ins)
    RETURNING t.last_event_at
)
SELECT (SELECT count(*) FROM ins)::int, n.status, n.occurred_at, n.description, n.location,
       (SELECT last_event_at FROM moved)
FROM (SELECT 1) AS one LEFT JOIN newest n ON true;

-- name: update_shipment
UPDATE sequencing.tracking SET
    status = %(status)s,
    last_event_at = CASE WHEN %(news)s THEN now() ELSE last_event_at END,
    stale_at = CASE WHEN %(news)s THEN NULL WHEN %(stale)s THEN coalesce(stale_at, now()) ELSE stale_at END
WHERE id = %(id)s
RETURNING coalesce(last_event_at, assigned_at);

-- name: quiet_shipments
-- Open shipments quiet for longer than their carrier's stale_after (walks tracking_quiet).
SELECT q.id, c.stale_after FROM sequencing.carrier c
CROSS JOIN LATERAL (
    SELECT t.id FROM sequencing.tracking t
    WHERE t.freightcarrier_id = c.id
      AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
      AND coalesce(t.last_event_at, t.assigned_at) < now() - c.stale_after
    ORDER BY coalesce(t.last_event_at, t.assigned_at)
    LIMIT %(limit)s
) q;
