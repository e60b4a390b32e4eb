-- 0011: cheaper writes for `assign --batch` and `refill` (issue 14.4). Measured in
-- docs/BENCHMARKS.md ("Assignment", where the time goes); nothing a user sees changes.

-- Codes, order ids and event ids are compared byte by byte. Under the database's default
-- collation (C.UTF-8 with the libc provider on the embedded server, often en_US.UTF-8 elsewhere)
-- every comparison in their unique indexes went through strcoll(). UTF-8 byte order is code point
-- order, which is also what C.UTF-8 sorts by, so no listing changes order here. The indexes on
-- these columns are rebuilt; the rows are kept as they are.
ALTER TABLE sequencing.tracking
    ALTER COLUMN tracking_id TYPE text COLLATE "C",
    ALTER COLUMN order_id TYPE text COLLATE "C";
ALTER TABLE sequencing.outbox ALTER COLUMN event_id TYPE text COLLATE "C";

-- tracking_one_code_per_parcel (order_id, freightcarrier_id, parcel) WHERE order_id IS NOT NULL
-- already serves every look-up by order id (external shipments included: their NULL parcel is in
-- that index too), so this copy of its first column was one more index entry for every assignment.
DROP INDEX sequencing.tracking_order;

-- A code's pool, checked once per statement instead of once per row. The foreign key ran a
-- look-up and a row lock on the pool for every code a refill COPY wrote (a third of the COPY's
-- time in the database). The statement trigger locks each named pool once (FOR KEY SHARE, as the
-- key did), then refuses the statement if any of its codes names a pool that does not exist.
-- A pool is deleted only when no code names it (pool_keep_codes). pool_id itself never changes:
-- tracking_pool_fixed refuses that.
ALTER TABLE sequencing.tracking DROP CONSTRAINT tracking_pool_id_fkey;

CREATE FUNCTION sequencing.tracking_pool_exists() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_missing integer;
BEGIN
    PERFORM 1 FROM sequencing.pool p
    WHERE p.id IN (SELECT DISTINCT n.pool_id FROM inserted n WHERE n.pool_id IS NOT NULL)
    FOR KEY SHARE OF p;
    -- min(), not LIMIT 1: a LIMIT lets the planner bet on finding a row early (see below).
    SELECT min(n.pool_id) INTO v_missing FROM inserted n
    WHERE n.pool_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM sequencing.pool p WHERE p.id = n.pool_id);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert into tracking names pool %, which does not exist', v_missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tracking_pool_exists
    AFTER INSERT ON sequencing.tracking
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_pool_exists();

CREATE FUNCTION sequencing.tracking_pool_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the pool of tracking code % cannot change', OLD.tracking_id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER tracking_pool_fixed
    BEFORE UPDATE OF pool_id ON sequencing.tracking
    FOR EACH ROW WHEN (NEW.pool_id IS DISTINCT FROM OLD.pool_id)
    EXECUTE FUNCTION sequencing.tracking_pool_fixed();

CREATE FUNCTION sequencing.pool_keep_codes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    -- Runs once the pool row is locked, on a snapshot taken now: codes committed by a refill that
    -- held the pool (FOR KEY SHARE) until its commit are seen.
    IF EXISTS (SELECT 1 FROM sequencing.tracking t WHERE t.pool_id = OLD.id) THEN
        RAISE EXCEPTION 'pool % still has codes and cannot be deleted', OLD.name
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER pool_keep_codes
    BEFORE DELETE OR UPDATE OF id ON sequencing.pool
    FOR EACH ROW EXECUTE FUNCTION sequencing.pool_keep_codes();

-- A shipment's status is one of the status model's keys: a CHECK on the column instead of a
-- foreign key, whose look-up and row lock on sequencing.status ran for every assignment (NULL to
-- 'pending') and every status change. The keys are the model (trackctl/statuses.py mirrors
-- them); status_keys_fixed keeps them from changing or going, so the list below stays the
-- table's. A migration that adds a status replaces both.
ALTER TABLE sequencing.tracking
    DROP CONSTRAINT tracking_status_fkey,
    ADD CONSTRAINT tracking_status_known CHECK (status IN (
        'pending', 'in_transit', 'out_for_delivery', 'failed_attempt', 'available_for_pickup',
        'exception', 'delivered', 'returned', 'cancelled'));

CREATE FUNCTION sequencing.status_keys_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.key = OLD.key THEN
        RETURN NEW;  -- labels, order and flags may change; keys may not
    END IF;
    RAISE EXCEPTION 'status % is part of the status model and cannot be removed or renamed', OLD.key
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER status_keys_fixed
    BEFORE DELETE OR UPDATE OF key ON sequencing.status
    FOR EACH ROW EXECUTE FUNCTION sequencing.status_keys_fixed();

-- An event's shipment, checked once per statement in the outbox's own statement trigger instead
-- of a foreign-key look-up and row lock per event (each assignment writes one). An event names
-- an assigned shipment (or none); an assigned shipment can never be deleted or unassigned
-- (tracking_keep_assignment), so once checked the reference holds without a lock. shipment_id
-- of an existing event never changes (outbox_shipment_fixed).
ALTER TABLE sequencing.outbox DROP CONSTRAINT outbox_shipment_id_fkey;

CREATE OR REPLACE FUNCTION sequencing.outbox_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_missing bigint;
BEGIN
    IF NOT EXISTS (SELECT FROM inserted) THEN
        RETURN NULL;  -- an INSERT that matched nothing (an idempotent re-assign) is no event
    END IF;
    -- One probe of the primary key per event, as a scalar subquery the planner cannot turn into a
    -- join: as an anti-join with the carrier in its condition, on a table of free codes only
    -- (statistics: every carrier NULL) it expected one matching row and compared every event with
    -- every assigned row (12 s for 5 000 events); as a left join it hashed the whole table. min(),
    -- not LIMIT 1: a LIMIT lets the planner bet on finding a row early.
    SELECT min(n.shipment_id) INTO v_missing FROM inserted n
    WHERE n.shipment_id IS NOT NULL
      AND (SELECT t.freightcarrier_id FROM sequencing.tracking t WHERE t.id = n.shipment_id) IS NULL;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'outbox event names shipment %, which does not exist or is not assigned', v_missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO sequencing.webhook_delivery (outbox_id, subscriber_id, shipment_id, next_attempt_at)
    SELECT n.id, s.id, n.shipment_id, now() + make_interval(secs => s.retry_schedule[1])
    FROM inserted n
    LEFT JOIN sequencing.carrier c ON c.name = n.payload->>'carrier'
    JOIN sequencing.webhook_subscriber s ON s.enabled AND (s.types IS NULL OR n.type = ANY (s.types))
                                        AND s.demo = coalesce(c.demo, false)
    ORDER BY n.id, s.id;
    -- Sent at commit, never for a rolled-back change; one per transaction whatever its size.
    PERFORM pg_notify('trackctl_outbox', '');
    RETURN NULL;
END
$$;

CREATE FUNCTION sequencing.outbox_shipment_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the shipment of outbox event % cannot change', OLD.event_id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER outbox_shipment_fixed
    BEFORE UPDATE OF shipment_id ON sequencing.outbox
    FOR EACH ROW WHEN (NEW.shipment_id IS DISTINCT FROM OLD.shipment_id)
    EXECUTE FUNCTION sequencing.outbox_shipment_fixed();
