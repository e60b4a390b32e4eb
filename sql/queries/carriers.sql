-- Carriers: records, adapter settings, polling state, removal (trackctl/carriers/__init__.py).
-- A removed carrier (removed_at set) keeps its row for its shipments' history and is left out of
-- every look-up here, so it cannot be listed, assigned, polled or changed.

-- name: list_carriers
SELECT c.id, c.name, p.name, p.id
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE c.removed_at IS NULL
ORDER BY c.id

-- name: carrier_by_ref
-- A carrier by name or numeric id; removed ones only with %(removed_too)s.
SELECT c.id, c.name, p.name, p.id
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE (c.name = %(name)s OR c.id = %(id)s) AND (c.removed_at IS NULL OR %(removed_too)s)
ORDER BY c.removed_at NULLS FIRST
LIMIT 1

-- name: insert_carrier
INSERT INTO sequencing.carrier (id, name, pool_id)
SELECT coalesce(%(id)s, (SELECT coalesce(max(id), 0) + 1 FROM sequencing.carrier)), %(name)s, p.id
FROM sequencing.pool p WHERE p.name = %(pool)s
RETURNING id

-- name: removed_named
-- Is a name or id taken by a removed carrier? (to explain why `carrier add` is refused)
SELECT c.name FROM sequencing.carrier c
WHERE (c.name = %(name)s OR c.id = %(id)s) AND c.removed_at IS NOT NULL
LIMIT 1

-- name: list_settings
SELECT c.id, c.name, p.name, c.adapter, c.url, c.token_env, c.max_concurrency, c.timeout, c.options,
       c.poll_intervals, c.stale_after, c.breaker_threshold, c.breaker_cooldown
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE c.removed_at IS NULL
ORDER BY c.id

-- name: settings_by_ref
SELECT c.id, c.name, p.name, c.adapter, c.url, c.token_env, c.max_concurrency, c.timeout, c.options,
       c.poll_intervals, c.stale_after, c.breaker_threshold, c.breaker_cooldown
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE (c.name = %(name)s OR c.id = %(id)s) AND c.removed_at IS NULL

-- name: states
SELECT c.name,
       CASE WHEN s.open_until IS NULL THEN 'closed' WHEN s.open_until > now() THEN 'open' ELSE 'half-open' END,
       s.consecutive_failures, CASE WHEN s.blocked_until > now() THEN s.blocked_until END, s.open_until, s.opened_at,
       (SELECT count(*) FROM sequencing.carrier_slot l
        WHERE l.carrier_id = c.id AND l.slot <= c.max_concurrency AND l.leased_until > now())::int
FROM sequencing.carrier c JOIN sequencing.carrier_state s ON s.carrier_id = c.id
WHERE c.removed_at IS NULL
ORDER BY c.id

-- name: update_settings
UPDATE sequencing.carrier SET
    adapter = %(adapter)s, url = %(url)s, token_env = %(token_env)s, max_concurrency = %(max_concurrency)s,
    timeout = %(timeout)s, options = %(options)s, poll_intervals = %(poll_intervals)s,
    stale_after = %(stale_after)s, breaker_threshold = %(breaker_threshold)s,
    breaker_cooldown = %(breaker_cooldown)s, pool_id = coalesce(%(pool_id)s, pool_id)
WHERE id = %(id)s

-- name: reset_state
UPDATE sequencing.carrier_state
SET blocked_until = NULL, consecutive_failures = 0, open_until = NULL, probe_until = NULL
WHERE carrier_id = %s

-- name: pool_id
SELECT id FROM sequencing.pool WHERE name = %s

-- name: lock_for_removal
-- The carrier row, locked against a concurrent assign (whose claim takes a key share lock on it
-- through the foreign key), with its shipments counted: all, and those still open.
SELECT c.id, c.name,
       (SELECT count(*) FROM sequencing.tracking t WHERE t.freightcarrier_id = c.id),
       (SELECT count(*) FROM sequencing.tracking t
        WHERE t.freightcarrier_id = c.id AND t.status NOT IN ('delivered', 'returned', 'cancelled'))
FROM sequencing.carrier c WHERE c.id = %s AND c.removed_at IS NULL
FOR UPDATE

-- name: delete_carrier
DELETE FROM sequencing.carrier WHERE id = %s

-- name: retire_carrier
-- Removed with shipments: the row stays for their history; the adapter and token name are cleared
-- so that nothing polls it.
UPDATE sequencing.carrier SET removed_at = now(), adapter = NULL, token_env = NULL WHERE id = %s
