-- The demo (trackctl/demo.py): its own carrier, pool and webhook subscriber, marked `demo`
-- (migration 0006) so that its events go to its subscriber only and nothing else's to it.

-- name: demo_progress
SELECT count(*), count(*) FILTER (WHERE status = 'delivered')
FROM sequencing.tracking WHERE order_id LIKE %s

-- name: pending_for
SELECT count(*) FROM sequencing.webhook_delivery WHERE subscriber_id = %s AND status = 'pending'

-- name: carrier_is_demo
SELECT demo FROM sequencing.carrier WHERE name = %s

-- name: mark_carrier_demo
UPDATE sequencing.carrier SET demo = true WHERE name = %s

-- name: mark_subscriber_demo
UPDATE sequencing.webhook_subscriber SET demo = true WHERE id = %s
