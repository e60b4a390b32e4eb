-- Carrier records, adapter settings and shared state (trackctl/carriers/__init__.py).

-- name: list_carriers
SELECT c.id, c.name, p.name, p.id
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
ORDER BY c.id

-- name: get_carrier
SELECT c.id, c.name, p.name, p.id
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE c.name = %s OR c.id = %s

-- name: insert_carrier
INSERT INTO sequencing.carrier (id, name, pool_id)
SELECT coalesce(%(id)s, (SELECT coalesce(max(id), 0) + 1 FROM sequencing.carrier)), %(name)s, p.id
FROM sequencing.pool p WHERE p.name = %(pool)s
RETURNING id

-- name: list_settings
SELECT c.id, c.name, p.name, c.adapter, c.url, c.token_env, c.max_concurrency, c.timeout, c.options,
       c.poll_intervals, c.stale_after, c.breaker_threshold, c.breaker_cooldown, c.credentials, c.rate_limit
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
ORDER BY c.id

-- name: get_settings
SELECT c.id, c.name, p.name, c.adapter, c.url, c.token_env, c.max_concurrency, c.timeout, c.options,
       c.poll_intervals, c.stale_after, c.breaker_threshold, c.breaker_cooldown, c.credentials, c.rate_limit
FROM sequencing.carrier c JOIN sequencing.pool p ON p.id = c.pool_id
WHERE c.name = %s OR c.id = %s

-- name: list_states
SELECT c.name,
       CASE WHEN s.open_until IS NULL THEN 'closed' WHEN s.open_until > now() THEN 'open' ELSE 'half-open' END,
       s.consecutive_failures, CASE WHEN s.blocked_until > now() THEN s.blocked_until END, s.open_until, s.opened_at,
       (SELECT count(*) FROM sequencing.carrier_slot l
        WHERE l.carrier_id = c.id AND l.slot <= c.max_concurrency AND l.leased_until > now())::int
FROM sequencing.carrier c JOIN sequencing.carrier_state s ON s.carrier_id = c.id
ORDER BY c.id

-- name: update_settings
UPDATE sequencing.carrier SET
    adapter = %(adapter)s, url = %(url)s, token_env = %(token_env)s, max_concurrency = %(max_concurrency)s,
    timeout = %(timeout)s, options = %(options)s, poll_intervals = %(poll_intervals)s,
    stale_after = %(stale_after)s, breaker_threshold = %(breaker_threshold)s,
    breaker_cooldown = %(breaker_cooldown)s, pool_id = coalesce(%(pool_id)s, pool_id),
    credentials = %(credentials)s, rate_limit = %(rate_limit)s
WHERE id = %(id)s

-- name: reset_state
UPDATE sequencing.carrier_state
SET blocked_until = NULL, consecutive_failures = 0, open_until = NULL, probe_until = NULL
WHERE carrier_id = %s

-- name: pool_id
SELECT id FROM sequencing.pool WHERE name = %s
