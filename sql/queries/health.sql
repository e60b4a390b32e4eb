-- Health checks (trackctl/health.py).

-- name: now_and_runs_installed
-- When run records began (migration 4): a job never run is late only counted from then.
SELECT now(), (SELECT applied_at FROM sequencing.schema_migration WHERE version = 4);

-- name: stale_shipments
SELECT c.name, count(*) FROM sequencing.tracking t JOIN sequencing.carrier c ON c.id = t.freightcarrier_id
WHERE t.stale_at IS NOT NULL AND t.status NOT IN ('delivered', 'returned', 'cancelled')
GROUP BY c.name ORDER BY c.name;
