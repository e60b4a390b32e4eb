-- 0012: cheaper checks on every assignment (issue 14.4, `assign --batch`). Measured in
-- docs/BENCHMARKS.md ("Assignment", 2026-12-01 second session); nothing a user sees changes.

-- A shipment's carrier, checked once per statement instead of once per row. The foreign key ran
-- a look-up and a row lock on the carrier (an SPI query) for every code assigned: 9-14 µs of each
-- assignment's server time, more than any other single check. The statement triggers below do
-- what the key did, for the rows whose carrier is new in the statement: every inserted row's,
-- and an updated row's only when it had none before (an assigned row's carrier never changes:
-- tracking_keep_assignment). They lock each such carrier once (FOR KEY SHARE, as the key did)
-- and refuse the statement if any of them does not exist. A carrier is deleted, or its id
-- changed, only while no shipment names it (carrier_keep_shipments, as the key's NO ACTION did).
-- Statements that give no row a new carrier (polling, status changes) only pay for the trigger
-- call and a join of their own rows.
ALTER TABLE sequencing.tracking DROP CONSTRAINT tracking_freightcarrier_id_fkey;

CREATE FUNCTION sequencing.tracking_carrier_exists() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_carriers integer[];
    v_missing integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT n.freightcarrier_id) INTO v_carriers
        FROM new_rows n WHERE n.freightcarrier_id IS NOT NULL;
    ELSE
        SELECT array_agg(DISTINCT n.freightcarrier_id) INTO v_carriers
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.freightcarrier_id IS NOT NULL AND o.freightcarrier_id IS NULL;
    END IF;
    IF v_carriers IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM sequencing.carrier c WHERE c.id = ANY (v_carriers) FOR KEY SHARE OF c;
    SELECT min(x.id) INTO v_missing FROM unnest(v_carriers) AS x(id)
    WHERE NOT EXISTS (SELECT 1 FROM sequencing.carrier c WHERE c.id = x.id);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'a shipment names carrier %, which does not exist', v_missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tracking_carrier_exists_insert
    AFTER INSERT ON sequencing.tracking
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_carrier_exists();

CREATE TRIGGER tracking_carrier_exists_update
    AFTER UPDATE ON sequencing.tracking
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_carrier_exists();

CREATE FUNCTION sequencing.carrier_keep_shipments() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id THEN
        RETURN NEW;
    END IF;
    -- Runs once the carrier row is locked, on a snapshot taken now: shipments committed by an
    -- assignment that held the carrier (FOR KEY SHARE) until its commit are seen.
    IF EXISTS (SELECT 1 FROM sequencing.tracking t WHERE t.freightcarrier_id = OLD.id) THEN
        RAISE EXCEPTION 'carrier % still has shipments and cannot be deleted or renumbered', OLD.name
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RETURN NEW;
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER carrier_keep_shipments
    BEFORE DELETE OR UPDATE OF id ON sequencing.carrier
    FOR EACH ROW EXECUTE FUNCTION sequencing.carrier_keep_shipments();

-- The event id's format, checked without a counted regular expression: `{26}` made the check
-- 3-5 µs of every event row (measured on the outbox's own definition); the length and an
-- uncounted class accept exactly the same ids.
ALTER TABLE sequencing.outbox
    DROP CONSTRAINT outbox_event_id_format,
    ADD CONSTRAINT outbox_event_id_format
        CHECK (length(event_id) = 30 AND event_id ~ '^evt_[0-9A-HJKMNP-TV-Z]+$');

-- The tracking.assigned payload (WEBHOOKS.md) from two text arrays: every value in it is a string
-- (or null), and jsonb_object makes the very same jsonb as jsonb_build_object did (same keys, same
-- values), without the per-argument type look-ups: about 1 µs less for every event.
CREATE OR REPLACE FUNCTION sequencing.assigned_payload(code text, order_id text, carrier text, pool text,
                                                       assigned_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_object(ARRAY['code', 'order_id', 'carrier', 'pool', 'assigned_at'],
                        ARRAY[code, order_id, carrier, pool, sequencing.rfc3339(assigned_at)])
$$;
