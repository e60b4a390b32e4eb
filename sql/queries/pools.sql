-- Pools: creation, levels, refill (trackctl/pools.py).

-- name: pool_by_name
SELECT id, name, kind, target FROM sequencing.pool WHERE name = %s

-- name: all_pools
SELECT id, name, kind, target FROM sequencing.pool ORDER BY name

-- name: insert_pool
INSERT INTO sequencing.pool (name, kind, target) VALUES (%s, %s, %s)

-- name: insert_s10_pool
INSERT INTO sequencing.pool (name, kind, target, s10_prefix, s10_country, s10_first, s10_last, s10_next)
VALUES (%(name)s, 's10', %(target)s, %(prefix)s, %(country)s, %(first)s, %(last)s, %(first)s)

-- name: set_target
UPDATE sequencing.pool SET target = %(target)s WHERE id = %(id)s

-- name: s10_size
SELECT s10_last - s10_first + 1 FROM sequencing.pool WHERE id = %s

-- name: pool_levels
-- Free and assigned codes of every pool, or of the one named by %(name)s.
SELECT p.name, p.kind, p.target,
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NULL),
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NOT NULL)
FROM sequencing.pool p
WHERE %(name)s::text IS NULL OR p.name = %(name)s
ORDER BY p.name

-- name: count_free
SELECT count(*) FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NULL

-- name: try_refill_lock
-- Two-key advisory lock (class, pool id) held by the refill of one pool for its transaction.
SELECT pg_try_advisory_xact_lock(%s, %s)

-- name: copy_codes
COPY sequencing.tracking (tracking_id, pool_id, ticket) FROM STDIN

-- name: renumber_skipped
-- Free codes whose ticket was drawn by a claim that did not take them (it rolled back) get new
-- tickets after the last one, so that claims reach them again; returns how many.
SELECT sequencing.renumber_skipped(%s)

-- name: next_ticket
-- The first ticket for new codes of the pool (copy_codes writes them with their tickets from
-- this one on, sql/0009_claim_tickets.sql); locks the pool row until the end of the transaction.
SELECT sequencing.pool_next_ticket(%s)

-- name: set_ticket_end
-- The pool's last ticket in stock, after new codes were copied in with their tickets.
UPDATE sequencing.pool SET ticket_end = %(end)s WHERE id = %(id)s

-- name: available
-- Free codes in the order claims take them (by ticket).
SELECT t.tracking_id FROM sequencing.tracking t JOIN sequencing.pool p ON p.id = t.pool_id
WHERE t.order_id IS NULL AND (%(pool)s::text IS NULL OR p.name = %(pool)s)
ORDER BY t.pool_id, t.ticket LIMIT %(limit)s

-- name: reserve_serials
-- Reserve up to n serials of an S10 pool in order: the row lock serialises reservations, and the
-- pool_s10_guard trigger refuses any move of s10_next backwards.
WITH cur AS (
    SELECT id, s10_next AS first, least(%(n)s, s10_last + 1 - s10_next) AS n
    FROM sequencing.pool WHERE id = %(id)s AND kind = 's10'
    FOR UPDATE
)
UPDATE sequencing.pool p SET s10_next = cur.first + cur.n FROM cur WHERE p.id = cur.id
RETURNING p.name, p.s10_prefix, p.s10_country, cur.first, cur.n, p.s10_first, p.s10_last

-- name: s10_usage
SELECT p.name, p.s10_prefix, p.s10_country, p.s10_first, p.s10_last, p.s10_next,
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NULL),
       coalesce((SELECT string_agg(c.name, ', ' ORDER BY c.name) FROM sequencing.carrier c WHERE c.pool_id = p.id), '')
FROM sequencing.pool p WHERE p.kind = 's10' ORDER BY p.name

-- name: pool_use
-- What keeps a pool in use: the carriers drawing from it and its assigned codes.
SELECT p.id,
       coalesce((SELECT array_agg(c.name ORDER BY c.name) FROM sequencing.carrier c WHERE c.pool_id = p.id), '{}'),
       (SELECT count(*) FROM sequencing.tracking t WHERE t.pool_id = p.id AND t.order_id IS NOT NULL)
FROM sequencing.pool p WHERE p.name = %s
FOR UPDATE OF p

-- name: delete_free_codes
DELETE FROM sequencing.tracking WHERE pool_id = %s AND order_id IS NULL

-- name: delete_pool
DELETE FROM sequencing.pool WHERE id = %s
