-- The dashboard's reads (trackctl/dashboard.py).

-- name: now
SELECT now();

-- name: status_positions
SELECT key, position FROM sequencing.status;

-- name: shipments
SELECT c.name, t.status, count(*)
FROM sequencing.tracking t JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.freightcarrier_id IS NOT NULL
GROUP BY c.name, t.status;

-- name: outbox_backlog
SELECT count(*),
       extract(epoch FROM now() - min(o.created_at))::float8,
       extract(epoch FROM now() - min(d.next_attempt_at)
               FILTER (WHERE d.lease_token IS NULL AND d.next_attempt_at <= now()))::float8
FROM sequencing.webhook_delivery d JOIN sequencing.outbox o ON o.id = d.outbox_id
WHERE d.status = 'pending';

-- name: dead_deliveries
SELECT count(*) FROM sequencing.webhook_delivery WHERE status = 'dead';
