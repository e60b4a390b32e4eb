-- 0005: cheaper outbox rows, and one definition of the `tracking.assigned` payload.
--
-- Event ids. 0003 drew 80 random bits per event: 26 substr() calls per row, and keys landing
-- at random places in the unique index. Measured on a 100 000-row batch assignment, that id
-- was about a third of the cost of writing an outbox row (docs/BENCHMARKS.md). The id is now
-- the transaction time in milliseconds (11 hex digits) followed by a sequence number (15 hex
-- digits): still `evt_` + 26 characters of the Crockford alphabet (hex digits are a subset),
-- unique by construction as well as by the constraint, never reused (a sequence never hands
-- out a number twice), and new ids sort after old ones, so the index grows at its right edge.
-- Ids already issued keep their old form: an id is opaque to consumers (WEBHOOKS.md).

CREATE SEQUENCE sequencing.event_serial AS bigint MAXVALUE 1152921504606846975;  -- 16^15 - 1

CREATE OR REPLACE FUNCTION sequencing.new_event_id() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'evt_' || lpad(upper(to_hex(floor(extract(epoch FROM now()) * 1000)::bigint)), 11, '0')
        || lpad(upper(to_hex(nextval('sequencing.event_serial'))), 15, '0')
$$;

-- The data of a `tracking.assigned` event (WEBHOOKS.md), used by every statement that assigns
-- a code. A single-expression SQL function, so PostgreSQL inlines it into those statements.
CREATE FUNCTION sequencing.assigned_payload(code text, order_id text, carrier text, pool text,
                                            assigned_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('code', code, 'order_id', order_id, 'carrier', carrier, 'pool', pool,
                              'assigned_at', sequencing.rfc3339(assigned_at))
$$;
