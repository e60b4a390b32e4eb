-- Shipment look-ups by code or by order (trackctl/status.py).

-- name: shipment_by_code
SELECT t.tracking_id, t.order_id, c.name, t.parcel, t.status, s.label, p.name, t.assigned_at, t.shipping_date
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
JOIN sequencing.pool p ON p.id = t.pool_id
WHERE t.tracking_id = %s;

-- name: shipments_by_order
SELECT t.tracking_id, t.order_id, c.name, t.parcel, t.status, s.label, p.name, t.assigned_at, t.shipping_date
FROM sequencing.tracking t
JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
JOIN sequencing.status s ON s.key = t.status
JOIN sequencing.pool p ON p.id = t.pool_id
WHERE t.order_id = %s
ORDER BY c.name, t.parcel;

-- name: code_exists
SELECT 1 FROM sequencing.tracking WHERE tracking_id = %s;

-- name: poll_state
SELECT t.id, t.stale_at, t.last_polled_at,
       CASE WHEN t.next_poll_at = '-infinity' THEN NULL ELSE t.next_poll_at END,
       t.poll_failures, t.last_poll_error
FROM sequencing.tracking t WHERE t.tracking_id = %s;

-- name: events
SELECT e.occurred_at, e.status, s.label, e.description, e.location, e.raw_status, e.source
FROM sequencing.tracking_event e LEFT JOIN sequencing.status s ON s.key = e.status
WHERE e.shipment_id = %s
ORDER BY e.occurred_at, e.id;
