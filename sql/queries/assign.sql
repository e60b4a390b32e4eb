-- Claiming codes for orders (trackctl/assign.py: one at a time; trackctl/assign_batch.py: a chunk
-- of input lines at a time).

-- name: assign_one
-- One round trip in the common case: resolve the carrier, return the existing code for
-- (order, carrier, parcel) if there is one, otherwise claim a code of the carrier's pool by
-- ticket (sql/0009_claim_tickets.sql): draw the pool's next ticket and update the free code that
-- has it, one look-up of the unique index tracking_ticket by its exact key. No scan and no SKIP
-- LOCKED, so no claim steps over the entries earlier claims left behind, even while a long
-- snapshot keeps vacuum from removing them. No ticket is drawn when the pool is dry (its last
-- ticket in stock already drawn): then nothing is claimed and the caller makes the code inline,
-- as it also does when the ticket finds no free code (a refill is renumbering it, or the code
-- was deleted). `t.order_id IS NULL` is rechecked on the locked row: never a code twice.
-- A new claim writes its `tracking.assigned` outbox row in the same statement (WEBHOOKS.md).
WITH carrier AS (
    SELECT c.id, c.name, c.pool_id, p.kind, p.name AS pool_name, p.ticket_seq, p.ticket_end
    FROM sequencing.carrier c
    JOIN sequencing.pool p ON p.id = c.pool_id
    WHERE (c.name = %(carrier)s OR c.id = %(carrier_id)s) AND c.removed_at IS NULL
), parcel AS (
    SELECT CASE WHEN %(next_parcel)s THEN
        (SELECT coalesce(max(t.parcel), 0) + 1 FROM sequencing.tracking t
         WHERE t.order_id = %(order_id)s AND t.freightcarrier_id = (SELECT id FROM carrier))
        ELSE %(parcel)s END AS n
), existing AS (
    SELECT t.tracking_id FROM sequencing.tracking t
    WHERE t.order_id = %(order_id)s AND t.freightcarrier_id = (SELECT id FROM carrier)
      AND t.parcel = (SELECT n FROM parcel)
), ticket AS (
    SELECT c.pool_id, nextval(c.ticket_seq) AS ticket FROM carrier c
    WHERE c.ticket_end > coalesce(pg_sequence_last_value(c.ticket_seq), 0)
      AND NOT EXISTS (SELECT 1 FROM existing)
), claimed AS (
    UPDATE sequencing.tracking t
    SET order_id = %(order_id)s, freightcarrier_id = (SELECT id FROM carrier),
        parcel = (SELECT n FROM parcel), status = 'pending', assigned_at = now()
    FROM ticket k
    WHERE t.pool_id = k.pool_id AND t.ticket = k.ticket AND t.order_id IS NULL
    RETURNING t.id, t.tracking_id, t.order_id, t.assigned_at
), event AS (
    INSERT INTO sequencing.outbox (type, shipment_id, payload)
    SELECT 'tracking.assigned', cl.id,
           sequencing.assigned_payload(cl.tracking_id, cl.order_id, c.name, c.pool_name, cl.assigned_at)
    FROM claimed cl CROSS JOIN carrier c
)
SELECT c.id, c.name, c.pool_id, c.kind, (SELECT n FROM parcel),
       (SELECT tracking_id FROM existing), (SELECT tracking_id FROM claimed)
FROM carrier c;

-- name: insert_assigned
-- The pool was dry: the codes are made by trackctl and inserted already assigned, so they can
-- never be seen free by another assigner. Their `tracking.assigned` outbox rows (WEBHOOKS.md)
-- go in the same statement, in input order.
WITH assigned AS (
    INSERT INTO sequencing.tracking
        (tracking_id, pool_id, order_id, freightcarrier_id, parcel, status, assigned_at)
    SELECT u.code, u.pool_id, u.order_id, u.carrier_id, u.parcel, 'pending', now()
    FROM unnest(%s::text[], %s::int[], %s::text[], %s::int[], %s::int[])
         AS u(code, pool_id, order_id, carrier_id, parcel)
    RETURNING id, id AS input_order, tracking_id, pool_id, order_id, freightcarrier_id, assigned_at
)
INSERT INTO sequencing.outbox (type, shipment_id, payload)
SELECT 'tracking.assigned', a.id,
       sequencing.assigned_payload(a.tracking_id, a.order_id, c.name, p.name, a.assigned_at)
FROM assigned a
JOIN sequencing.carrier c ON c.id = a.freightcarrier_id
JOIN sequencing.pool p ON p.id = a.pool_id
ORDER BY a.input_order;

-- name: batch_table
-- Batch: each chunk of input lines goes to the database in one transaction, as COPY into this
-- temporary table followed by a few set-based statements. The table is made once per session
-- (trackctl/assign_batch.py remembers it) and emptied at every commit: creating and dropping it
-- for every chunk cost catalog writes each time.
CREATE TEMPORARY TABLE IF NOT EXISTS batch_in (
    seq integer PRIMARY KEY, order_id text COLLATE "C" NOT NULL, carrier_id integer NOT NULL,
    pool_id integer NOT NULL, parcel integer NOT NULL, code text COLLATE "C"
) ON COMMIT DELETE ROWS;

-- name: batch_copy
COPY batch_in (seq, order_id, carrier_id, pool_id, parcel) FROM STDIN;

-- name: batch_existing
-- The chunk's keys that already have a code: one probe of tracking_one_code_per_parcel per key.
-- The LIMIT keeps the look-up a parameterised index scan: as a plain join, batch_in (a temporary
-- table without statistics) made the planner hash the whole tracking table for every chunk once
-- it held a few hundred thousand rows (350 ms per 5 000-line chunk against 25 ms of probes).
WITH found AS (
    SELECT b.seq, x.tracking_id FROM batch_in b
    CROSS JOIN LATERAL (
        SELECT t.tracking_id FROM sequencing.tracking t
        WHERE t.order_id = b.order_id AND t.freightcarrier_id = b.carrier_id AND t.parcel = b.parcel
        LIMIT 1
    ) x
)
UPDATE batch_in b SET code = f.tracking_id
FROM found f
WHERE b.seq = f.seq
RETURNING b.seq, b.code;

-- name: batch_claim
-- Pair the n-th input row of each pool with the n-th ticket drawn from that pool's sequence, and
-- claim the free code holding that ticket (as assign_one does, one index look-up per code: no
-- scan, no SKIP LOCKED, flat under a held snapshot). A pool gives at most as many tickets as it
-- has in stock (ticket_end less the last ticket drawn); rows left without a code (a dry pool, a
-- ticket whose code was not there) go to the second pass and then to inline generation.
-- Rows are numbered across the whole chunk (pool by pool) and each pool's tickets continue its
-- own range, so the pairing is a join on one integer key: joining on (pool_id, per-pool row
-- number) let the planner, which has no statistics for CTEs, merge on pool_id alone and filter
-- on the number, quadratic in the chunk size (5 s per 5 000 lines). The codes come back to the
-- client directly; batch_in learns them only when a second pass is needed (batch_set_codes).
-- Issue 5: each new claim's `tracking.assigned` outbox row goes in this same statement (keep it).
-- The carrier and pool names of the payloads are looked up once per (carrier, pool) of the chunk
-- (`names`, materialized so that it stays that small): joined per event, the planner (which expects one row from a CTE) probed both primary
-- keys for every event, 6 µs of each assignment's server time.
WITH need AS (
    SELECT seq, order_id, carrier_id, pool_id, parcel,
           row_number() OVER (ORDER BY pool_id, seq) AS rn
    FROM batch_in WHERE code IS NULL
), names AS MATERIALIZED (
    SELECT k.carrier_id, k.pool_id, c.name AS carrier, p.name AS pool
    FROM (SELECT DISTINCT carrier_id, pool_id FROM need) k
    JOIN sequencing.carrier c ON c.id = k.carrier_id
    JOIN sequencing.pool p ON p.id = k.pool_id
), per_pool AS (
    SELECT pool_id, count(*) AS n, min(rn) - 1 AS start FROM need GROUP BY pool_id
), tickets AS (
    SELECT p.pool_id, k.ticket, p.start + row_number() OVER (PARTITION BY p.pool_id ORDER BY k.ticket) AS rn
    FROM per_pool p
    JOIN sequencing.pool q ON q.id = p.pool_id
    CROSS JOIN LATERAL (
        SELECT nextval(q.ticket_seq) AS ticket
        FROM generate_series(1, least(p.n, q.ticket_end - coalesce(pg_sequence_last_value(q.ticket_seq), 0)))
    ) k
), assigned AS (
    UPDATE sequencing.tracking t
    SET order_id = need.order_id, freightcarrier_id = need.carrier_id, parcel = need.parcel,
        status = 'pending', assigned_at = now()
    FROM need JOIN tickets USING (rn)
    WHERE t.pool_id = tickets.pool_id AND t.ticket = tickets.ticket AND t.order_id IS NULL
    RETURNING need.seq, need.seq AS input_order, t.id, t.tracking_id, t.pool_id, t.order_id,
              t.freightcarrier_id, t.assigned_at
), event AS (
    INSERT INTO sequencing.outbox (type, shipment_id, payload)
    SELECT 'tracking.assigned', a.id,
           sequencing.assigned_payload(a.tracking_id, a.order_id, n.carrier, n.pool, a.assigned_at)
    FROM assigned a
    JOIN names n ON n.carrier_id = a.freightcarrier_id AND n.pool_id = a.pool_id
    ORDER BY a.input_order
)
SELECT seq, tracking_id FROM assigned;

-- name: batch_short
SELECT b.seq, b.order_id, b.carrier_id, b.pool_id, b.parcel FROM batch_in b WHERE b.code IS NULL ORDER BY b.seq;

-- name: batch_pools
SELECT id, name, kind, target FROM sequencing.pool WHERE id = ANY(%s);

-- name: batch_set_codes
UPDATE batch_in b SET code = u.code
FROM unnest(%s::int[], %s::text[]) AS u(seq, code) WHERE b.seq = u.seq;

-- name: batch_cancelled
-- Of a chunk's existing codes, the cancelled ones: never handed out again (the line is refused).
SELECT tracking_id FROM sequencing.tracking WHERE tracking_id = ANY (%s) AND status = 'cancelled';

-- name: batch_waits_for_me
-- Batch with two chunks in flight (trackctl/assign_batch.py): a later chunk, its work done, waits
-- in the client for the earlier chunk to commit first. If the earlier chunk's backend is waiting,
-- directly or through other sessions, for a lock this session holds (the same order in both
-- chunks), neither would ever finish and the server cannot see it: the later chunk then rolls back.
WITH RECURSIVE blockers(pid) AS (
    SELECT unnest(pg_blocking_pids(%s))
    UNION
    SELECT b FROM blockers, unnest(pg_blocking_pids(blockers.pid)) b
)
SELECT pg_backend_pid() IN (SELECT pid FROM blockers);
