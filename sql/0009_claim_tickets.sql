-- 0009: claims by ticket (issue 14.3), so that a claim's cost does not depend on dead tuples.
--
-- Before: a claim took the pool's first free code with FOR UPDATE SKIP LOCKED through the partial
-- index of free codes. Every claim leaves that index an entry of a row version that is no longer
-- free; while any snapshot older than those claims is open (a report, pg_dump, a long analytics
-- transaction) vacuum may not remove them, and every later claim stepped over all of them.
--
-- Now every free code of a pool has a ticket number (tracking.ticket), and every pool a sequence
-- that hands the tickets out (pool.ticket_seq), like a ticket dispenser. A claim draws the next
-- ticket (nextval: no row version, nothing for vacuum, never waits) and takes the code with that
-- ticket through one look-up of the unique index (pool_id, ticket) of free codes: an exact key,
-- whose entries are those of that one code, whatever the dead entries around it. No scan, no
-- SKIP LOCKED. The pool's last ticket in stock is pool.ticket_end: when the sequence has reached
-- it, the pool is dry and the code is made inline as before.
--
-- A ticket drawn by a claim that then rolled back (an error, a lost race on the same order,
-- kill -9) is never drawn again: its code stays free but out of reach. Refill gives such codes
-- new tickets after the last one (sequencing.renumber_skipped). nextval never rolls back, so
-- tickets are unique; the claim's `order_id IS NULL` condition, rechecked on the locked row, and
-- tracking_keep_assignment still make sure no code is ever assigned twice, whatever happens to
-- the tickets.

ALTER TABLE sequencing.pool
    ADD COLUMN ticket_seq regclass,
    ADD COLUMN ticket_end bigint NOT NULL DEFAULT 0 CONSTRAINT pool_ticket_end_range CHECK (ticket_end >= 0);

ALTER TABLE sequencing.tracking
    ADD COLUMN ticket bigint,
    ADD CONSTRAINT tracking_ticket_pool_only CHECK (ticket IS NULL OR (source = 'pool' AND ticket > 0));

-- The sequence of one pool: CACHE 1, so that no session holds tickets back (a cached ticket
-- that is never used would leave its code out of reach until the next refill).
CREATE FUNCTION sequencing.pool_ticket_sequence(p_pool integer) RETURNS regclass
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SEQUENCE sequencing.%I AS bigint MINVALUE 1 START 1 CACHE 1 NO CYCLE',
                   'pool_tickets_' || p_pool);
    RETURN format('sequencing.%I', 'pool_tickets_' || p_pool)::regclass;
END $$;

CREATE FUNCTION sequencing.pool_tickets_create() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.ticket_seq := sequencing.pool_ticket_sequence(NEW.id);
    NEW.ticket_end := 0;
    RETURN NEW;
END $$;

CREATE TRIGGER pool_tickets_create BEFORE INSERT ON sequencing.pool
    FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_create();

CREATE FUNCTION sequencing.pool_tickets_drop() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP SEQUENCE IF EXISTS %s', OLD.ticket_seq);
    RETURN OLD;
END $$;

CREATE TRIGGER pool_tickets_drop AFTER DELETE ON sequencing.pool
    FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_drop();

-- Existing data: every pool gets its sequence, every free code a ticket in the order the old
-- claim took them (oldest first), every pool its last ticket.
UPDATE sequencing.pool SET ticket_seq = sequencing.pool_ticket_sequence(id);
ALTER TABLE sequencing.pool ALTER COLUMN ticket_seq SET NOT NULL;

-- The sequence of a pool is its own for the pool's life.
CREATE FUNCTION sequencing.pool_tickets_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ticket_seq IS DISTINCT FROM OLD.ticket_seq THEN
        RAISE EXCEPTION 'the ticket sequence of pool % cannot be changed', OLD.name
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER pool_tickets_keep BEFORE UPDATE OF ticket_seq ON sequencing.pool
    FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_keep();

UPDATE sequencing.tracking t SET ticket = n.ticket
FROM (SELECT id, row_number() OVER (PARTITION BY pool_id ORDER BY id) AS ticket
      FROM sequencing.tracking WHERE order_id IS NULL AND source = 'pool') n
WHERE t.id = n.id;

-- A free code of a pool always has its ticket.
ALTER TABLE sequencing.tracking
    ADD CONSTRAINT tracking_free_code_has_ticket CHECK (source <> 'pool' OR order_id IS NOT NULL OR ticket IS NOT NULL);

UPDATE sequencing.pool p
SET ticket_end = coalesce((SELECT max(t.ticket) FROM sequencing.tracking t
                           WHERE t.pool_id = p.id AND t.order_id IS NULL), 0);

-- The claim's look-up, and a free code's ticket is unique in its pool. It replaces tracking_free:
-- every query of free codes starts with pool_id, and a claimed row leaves both indexes alike.
CREATE UNIQUE INDEX tracking_ticket ON sequencing.tracking (pool_id, ticket) WHERE order_id IS NULL;
DROP INDEX sequencing.tracking_free;

-- The first ticket a pool can give new codes: after its last ticket in stock and after every
-- ticket drawn so far (a claim may draw one past the end when the pool runs dry). The caller
-- holds the pool's row lock (this takes it) until it sets ticket_end, so positions never overlap.
CREATE FUNCTION sequencing.pool_next_ticket(p_pool integer) RETURNS bigint
LANGUAGE sql AS $$
    SELECT greatest(p.ticket_end, coalesce(pg_sequence_last_value(p.ticket_seq), 0)) + 1
    FROM sequencing.pool p WHERE p.id = p_pool FOR UPDATE
$$;

-- Give the free codes whose ticket was drawn by a claim that did not take them (it rolled back,
-- or lost a race) new tickets after the last one, in their old order; return how many. Codes
-- being claimed right now are locked and left alone. Refill runs this first.
CREATE FUNCTION sequencing.renumber_skipped(p_pool integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;  -- the last ticket drawn
    v_next bigint;
    v_n bigint;
BEGIN
    SELECT coalesce(pg_sequence_last_value(p.ticket_seq), 0), greatest(p.ticket_end, coalesce(pg_sequence_last_value(p.ticket_seq), 0)) + 1
    INTO v_last, v_next
    FROM sequencing.pool p WHERE p.id = p_pool FOR UPDATE;
    WITH skipped AS (
        SELECT s.id, row_number() OVER (ORDER BY s.ticket) - 1 AS n FROM (
            SELECT t.id, t.ticket FROM sequencing.tracking t
            WHERE t.pool_id = p_pool AND t.order_id IS NULL AND t.ticket <= v_last
            FOR UPDATE SKIP LOCKED
        ) s
    )
    UPDATE sequencing.tracking t SET ticket = v_next + s.n FROM skipped s WHERE t.id = s.id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        UPDATE sequencing.pool SET ticket_end = v_next + v_n - 1 WHERE id = p_pool;
    END IF;
    RETURN v_n;
END $$;

-- Add free codes to a pool with their tickets (what refill's COPY does in bulk); return how many.
-- For imports, tests and benchmarks: a free code inserted without a ticket is refused.
CREATE FUNCTION sequencing.add_free_codes(p_pool integer, p_codes text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_next bigint := sequencing.pool_next_ticket(p_pool);
    v_n bigint;
BEGIN
    INSERT INTO sequencing.tracking (tracking_id, pool_id, ticket)
    SELECT u.code, p_pool, v_next + u.n - 1 FROM unnest(p_codes) WITH ORDINALITY AS u(code, n);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n > 0 THEN
        UPDATE sequencing.pool SET ticket_end = v_next + v_n - 1 WHERE id = p_pool;
    END IF;
    RETURN v_n;
END $$;
