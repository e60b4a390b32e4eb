-- Tracking numbers a carrier issued (`trackctl track`), trackctl/track.py.

-- name: track_one
-- One round trip: resolve the carrier, insert the external shipment unless the code exists
-- (its `tracking.registered` outbox row in the same statement), and report the row the code
-- already had, if any, so the caller can tell "the same again" from a conflict.
WITH carrier AS (
    SELECT c.id, c.name FROM sequencing.carrier c
    WHERE c.name = %(carrier)s OR c.id = %(carrier_id)s
), ins AS (
    INSERT INTO sequencing.tracking (tracking_id, source, order_id, freightcarrier_id, status, assigned_at)
    SELECT %(code)s, 'external', %(order_id)s, c.id, 'pending', now() FROM carrier c
    ON CONFLICT ON CONSTRAINT tracking_code_unique DO NOTHING
    RETURNING id, tracking_id, order_id, assigned_at
), event AS (
    INSERT INTO sequencing.outbox (type, shipment_id, payload)
    SELECT 'tracking.registered', i.id, sequencing.registered_payload(i.tracking_id, i.order_id, c.name, i.assigned_at)
    FROM ins i CROSS JOIN carrier c
), existing AS (
    SELECT t.source, t.order_id, t.freightcarrier_id, oc.name AS carrier, p.name AS pool
    FROM sequencing.tracking t
    LEFT JOIN sequencing.carrier oc ON oc.id = t.freightcarrier_id
    LEFT JOIN sequencing.pool p ON p.id = t.pool_id
    WHERE t.tracking_id = %(code)s
)
SELECT c.id, c.name, EXISTS (SELECT 1 FROM ins),
       e.source, e.order_id, e.freightcarrier_id, e.carrier, e.pool
FROM carrier c LEFT JOIN existing e ON true
