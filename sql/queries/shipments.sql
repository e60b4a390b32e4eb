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
