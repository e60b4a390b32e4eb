-- 0013: an event's id is derived from its outbox row id instead of being generated and stored
-- (issue 14.4, `assign --batch`: every assignment writes one outbox row).
--
-- Measured (docs/BENCHMARKS.md, "Event ids from row ids"): making, checking and indexing the
-- stored id was the largest single cost of an outbox row. 100 000 inserts into a table like the
-- outbox took 11.2 µs a row with it and 4.2 µs without (a second sequence, numeric time
-- arithmetic and text padding per row, a regular-expression CHECK, an entry in a unique index).
--
-- New events store no id: sequencing.event_id(o) gives 'evt_' and the row id in 26 hex digits
-- (upper case; hex digits are a subset of the Crockford alphabet of the contract, WEBHOOKS.md).
-- Unique because the row id is (primary key), never reused because an identity sequence never
-- hands out a number twice, stable because the row id never changes (outbox_fixed, below).
-- Pings (`webhook test`) draw their number from the same sequence, so no event ever gets it.
--
-- Ids already issued stay exactly as they are, in legacy_event_id, for the rows that have one.
-- They cannot meet a derived id: a derived id starts 'evt_0000000000' (a bigint has at most 16
-- hex digits), while every issued id starts with the time of its event in milliseconds (0003:
-- 10 base-32 digits, '01...' today; 0005: 11 hex digits, '1...'), which a CHECK below keeps
-- true; and no later row can be given a stored id (the CHECK admits one only up to the highest
-- row id of this migration).

ALTER TABLE sequencing.outbox RENAME COLUMN event_id TO legacy_event_id;
ALTER TABLE sequencing.outbox ALTER COLUMN legacy_event_id DROP DEFAULT,
                              ALTER COLUMN legacy_event_id DROP NOT NULL;
-- The issued ids were unique under the constraint; they are now a fixed set, unique as they are.
ALTER TABLE sequencing.outbox DROP CONSTRAINT outbox_event_id_unique;

DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE sequencing.outbox ADD CONSTRAINT outbox_legacy_event_id CHECK ('
        'legacy_event_id IS NULL OR (id <= %s AND legacy_event_id NOT LIKE ''evt\_0000000000%%''))',
        (SELECT coalesce(max(id), 0) FROM sequencing.outbox));
END
$$;

CREATE FUNCTION sequencing.event_id(o sequencing.outbox) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(o.legacy_event_id, 'evt_' || lpad(upper(to_hex(o.id)), 26, '0'))
$$;

-- A ping's id: the same form, with a number taken from the outbox's own sequence.
CREATE OR REPLACE FUNCTION sequencing.new_event_id() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'evt_' || lpad(upper(to_hex(nextval(pg_get_serial_sequence('sequencing.outbox', 'id')))), 26, '0')
$$;
DROP SEQUENCE sequencing.event_serial;

CREATE OR REPLACE FUNCTION sequencing.event_body(o sequencing.outbox) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":' || to_json(sequencing.event_id(o))::text || ',"type":' || to_json(o.type)::text
        || ',"timestamp":"' || sequencing.rfc3339(o.created_at) || '","data":' || o.payload::text || '}'
$$;

-- A `trackctl events` line: the body, one key more (written once, in event_body).
CREATE OR REPLACE FUNCTION sequencing.event_line(o sequencing.outbox) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT left(sequencing.event_body(o), -1) || ',"cursor":"' || o.id::text || '"}'
$$;

-- What an event id is made of never changes: its row id and issued id, as its shipment did not.
DROP TRIGGER outbox_shipment_fixed ON sequencing.outbox;
DROP FUNCTION sequencing.outbox_shipment_fixed();
CREATE FUNCTION sequencing.outbox_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the id and shipment of outbox event % cannot change', sequencing.event_id(OLD)
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER outbox_fixed BEFORE UPDATE OF id, legacy_event_id, shipment_id ON sequencing.outbox
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.legacy_event_id IS DISTINCT FROM OLD.legacy_event_id
                       OR NEW.shipment_id IS DISTINCT FROM OLD.shipment_id)
    EXECUTE FUNCTION sequencing.outbox_fixed();
