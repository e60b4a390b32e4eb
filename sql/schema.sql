-- The trackctl schema as it stands after every migration in sql/ (tables, indexes, functions,
-- triggers). Generated: do not edit. Change the schema with a new numbered migration, then run
--     trackctl db migrate && trackctl db schema --output sql/schema.sql
-- tests/test_schema.py fails when this file and a freshly migrated database differ.

--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: sequencing; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA sequencing;

--
-- Name: add_free_codes(integer, text[]); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.add_free_codes(p_pool integer, p_codes text[]) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: assigned_payload(text, text, text, text, timestamp with time zone); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.assigned_payload(code text, order_id text, carrier text, pool text, assigned_at timestamp with time zone) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT jsonb_object(ARRAY['code', 'order_id', 'carrier', 'pool', 'assigned_at'],
                        ARRAY[code, order_id, carrier, pool, sequencing.rfc3339(assigned_at)])
$$;

--
-- Name: carrier_keep_shipments(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.carrier_keep_shipments() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: carrier_sync_slots(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.carrier_sync_slots() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO sequencing.carrier_state (carrier_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    INSERT INTO sequencing.carrier_slot (carrier_id, slot)
    SELECT NEW.id, n FROM generate_series(1, NEW.max_concurrency) AS n
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: outbox; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.outbox (
    id bigint NOT NULL,
    legacy_event_id text COLLATE pg_catalog."C",
    type text NOT NULL,
    shipment_id bigint,
    payload jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT outbox_event_id_format CHECK (((length(legacy_event_id) = 30) AND (legacy_event_id ~ '^evt_[0-9A-HJKMNP-TV-Z]+$'::text))),
    CONSTRAINT outbox_legacy_event_id CHECK (((legacy_event_id IS NULL) OR ((id <= 0) AND (legacy_event_id !~~ 'evt\_0000000000%'::text)))),
    CONSTRAINT outbox_payload_object CHECK ((jsonb_typeof(payload) = 'object'::text)),
    CONSTRAINT outbox_type_format CHECK ((type ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)+$'::text))
);

--
-- Name: event_body(sequencing.outbox); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.event_body(o sequencing.outbox) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT '{"id":' || to_json(sequencing.event_id(o))::text || ',"type":' || to_json(o.type)::text
        || ',"timestamp":"' || sequencing.rfc3339(o.created_at) || '","data":' || o.payload::text || '}'
$$;

--
-- Name: event_id(sequencing.outbox); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.event_id(o sequencing.outbox) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT coalesce(o.legacy_event_id, 'evt_' || lpad(upper(to_hex(o.id)), 26, '0'))
$$;

--
-- Name: event_line(sequencing.outbox); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.event_line(o sequencing.outbox) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT left(sequencing.event_body(o), -1) || ',"cursor":"' || o.id::text || '"}'
$$;

--
-- Name: new_event_id(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.new_event_id() RETURNS text
    LANGUAGE sql PARALLEL SAFE
    AS $$
    SELECT 'evt_' || lpad(upper(to_hex(nextval(pg_get_serial_sequence('sequencing.outbox', 'id')))), 26, '0')
$$;

--
-- Name: outbox_after_insert(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.outbox_after_insert() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: outbox_fixed(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.outbox_fixed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'the id and shipment of outbox event % cannot change', sequencing.event_id(OLD)
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

--
-- Name: poll_acquire(integer, text, interval, timestamp with time zone, boolean); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.poll_acquire(p_carrier integer, p_holder text, p_lease interval, p_round_start timestamp with time zone, p_all boolean) RETURNS TABLE(outcome text, wait_s double precision, slot integer, probe boolean, shipment_id bigint, code text, order_id text, status text, assigned_at timestamp with time zone, poll_count integer)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_state sequencing.carrier_state%ROWTYPE;
    v_max integer;
    v_slot integer;
    v_ship bigint;
BEGIN
    probe := false;
    SELECT * INTO v_state FROM sequencing.carrier_state WHERE carrier_id = p_carrier;
    IF v_state.blocked_until > now() THEN
        outcome := 'blocked';
        wait_s := extract(epoch FROM v_state.blocked_until - now());
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_state.open_until > now() THEN
        outcome := 'open';
        wait_s := extract(epoch FROM v_state.open_until - now());
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_state.open_until IS NOT NULL THEN
        -- Half-open: one probe at a time, across all processes.
        UPDATE sequencing.carrier_state SET probe_until = now() + p_lease
        WHERE carrier_id = p_carrier AND open_until IS NOT NULL AND open_until <= now()
          AND (probe_until IS NULL OR probe_until <= now());
        IF NOT FOUND THEN
            outcome := 'half_open';
            wait_s := 0.2;
            RETURN NEXT;
            RETURN;
        END IF;
        probe := true;
    END IF;

    SELECT c.max_concurrency INTO v_max FROM sequencing.carrier c WHERE c.id = p_carrier;
    UPDATE sequencing.carrier_slot s SET leased_until = now() + p_lease, holder = p_holder
    WHERE s.carrier_id = p_carrier AND s.slot = (
        SELECT s2.slot FROM sequencing.carrier_slot s2
        WHERE s2.carrier_id = p_carrier AND s2.slot <= v_max AND s2.leased_until <= now()
        ORDER BY s2.slot LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING s.slot INTO v_slot;
    IF v_slot IS NULL THEN
        IF probe THEN
            UPDATE sequencing.carrier_state SET probe_until = NULL WHERE carrier_id = p_carrier;
        END IF;
        outcome := 'busy';
        probe := false;
        wait_s := 0.02;
        RETURN NEXT;
        RETURN;
    END IF;

    IF p_all THEN
        SELECT t.id INTO v_ship FROM sequencing.tracking t
        WHERE t.freightcarrier_id = p_carrier
          AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
          AND (t.claimed_until IS NULL OR t.claimed_until <= now())
          AND (t.last_polled_at IS NULL OR t.last_polled_at < p_round_start)
        ORDER BY t.next_poll_at, t.id LIMIT 1
        FOR UPDATE SKIP LOCKED;
    ELSE
        SELECT t.id INTO v_ship FROM sequencing.tracking t
        WHERE t.freightcarrier_id = p_carrier
          AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
          AND t.next_poll_at <= now()
          AND (t.claimed_until IS NULL OR t.claimed_until <= now())
          AND (t.last_polled_at IS NULL OR t.last_polled_at < p_round_start)
        ORDER BY t.next_poll_at, t.id LIMIT 1
        FOR UPDATE SKIP LOCKED;
    END IF;
    IF v_ship IS NULL THEN
        UPDATE sequencing.carrier_slot s SET leased_until = '-infinity', holder = NULL
        WHERE s.carrier_id = p_carrier AND s.slot = v_slot;
        IF probe THEN
            UPDATE sequencing.carrier_state SET probe_until = NULL WHERE carrier_id = p_carrier;
        END IF;
        outcome := 'done';
        probe := false;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Moving next_poll_at past the lease takes the row out of the due range of the index, so
    -- the next claim does not walk over it.
    UPDATE sequencing.tracking t
    SET claimed_until = now() + p_lease, next_poll_at = greatest(t.next_poll_at, now() + p_lease)
    WHERE t.id = v_ship
    RETURNING t.id, t.tracking_id, t.order_id, t.status, t.assigned_at, t.poll_count
    INTO shipment_id, code, order_id, status, assigned_at, poll_count;
    outcome := 'ok';
    slot := v_slot;
    RETURN NEXT;
END
$$;

--
-- Name: poll_acquire_batch(integer, text, interval, timestamp with time zone, boolean, integer, boolean); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.poll_acquire_batch(p_carrier integer, p_holder text, p_lease interval, p_round_start timestamp with time zone, p_all boolean, p_limit integer, p_stop boolean DEFAULT false) RETURNS TABLE(outcome text, wait_s double precision, slot integer, probe boolean, shipment_id bigint, code text, order_id text, status text, assigned_at timestamp with time zone, poll_count integer, registered boolean)
    LANGUAGE plpgsql
    AS $$
#variable_conflict use_column
DECLARE
    v_state sequencing.carrier_state%ROWTYPE;
    v_max integer;
    v_slot integer;
    v_probe boolean := false;
    v_found boolean := false;
BEGIN
    IF p_limit > 1 THEN
        -- Batch claims of one carrier take turns, so that each takes a whole batch: claims
        -- racing through the due index with SKIP LOCKED would split it into small requests,
        -- and a rate-limited carrier pays per request, not per number.
        SELECT * INTO v_state FROM sequencing.carrier_state WHERE carrier_id = p_carrier FOR UPDATE;
    ELSE
        SELECT * INTO v_state FROM sequencing.carrier_state WHERE carrier_id = p_carrier;
    END IF;
    IF v_state.blocked_until > now() THEN
        RETURN QUERY SELECT 'blocked'::text, extract(epoch FROM v_state.blocked_until - now())::float8,
            NULL::int, false, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::int, NULL::boolean;
        RETURN;
    END IF;
    IF v_state.open_until > now() THEN
        RETURN QUERY SELECT 'open'::text, extract(epoch FROM v_state.open_until - now())::float8,
            NULL::int, false, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::int, NULL::boolean;
        RETURN;
    END IF;
    IF v_state.open_until IS NOT NULL THEN
        UPDATE sequencing.carrier_state SET probe_until = now() + p_lease
        WHERE carrier_id = p_carrier AND open_until IS NOT NULL AND open_until <= now()
          AND (probe_until IS NULL OR probe_until <= now());
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'half_open'::text, 0.2::float8,
                NULL::int, false, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::int, NULL::boolean;
            RETURN;
        END IF;
        v_probe := true;
    END IF;

    SELECT c.max_concurrency INTO v_max FROM sequencing.carrier c WHERE c.id = p_carrier;
    UPDATE sequencing.carrier_slot s SET leased_until = now() + p_lease, holder = p_holder
    WHERE s.carrier_id = p_carrier AND s.slot = (
        SELECT s2.slot FROM sequencing.carrier_slot s2
        WHERE s2.carrier_id = p_carrier AND s2.slot <= v_max AND s2.leased_until <= now()
        ORDER BY s2.slot LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING s.slot INTO v_slot;
    IF v_slot IS NULL THEN
        IF v_probe THEN
            UPDATE sequencing.carrier_state SET probe_until = NULL WHERE carrier_id = p_carrier;
        END IF;
        RETURN QUERY SELECT 'busy'::text, 0.02::float8,
            NULL::int, false, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::int, NULL::boolean;
        RETURN;
    END IF;

    -- A probe asks about one shipment only.
    IF p_stop THEN
        FOR shipment_id, code, order_id, status, assigned_at, poll_count, registered IN
            WITH pick AS (
                SELECT t.id FROM sequencing.tracking t
                WHERE t.freightcarrier_id = p_carrier
                  AND t.remote_registered_at IS NOT NULL AND t.remote_stopped_at IS NULL
                  AND (t.status IN ('delivered', 'returned', 'cancelled') OR t.stale_at IS NOT NULL)
                  AND (t.claimed_until IS NULL OR t.claimed_until <= now())
                ORDER BY t.id
                LIMIT CASE WHEN v_probe THEN 1 ELSE greatest(p_limit, 1) END
                FOR UPDATE SKIP LOCKED
            )
            UPDATE sequencing.tracking t SET claimed_until = now() + p_lease
            FROM pick WHERE t.id = pick.id
            RETURNING t.id, t.tracking_id, t.order_id, t.status, t.assigned_at, t.poll_count, true
        LOOP
            v_found := true;
            outcome := 'ok';
            wait_s := 0;
            slot := v_slot;
            probe := v_probe;
            RETURN NEXT;
        END LOOP;
    ELSE
    FOR shipment_id, code, order_id, status, assigned_at, poll_count, registered IN
        WITH pick AS (
            SELECT t.id FROM sequencing.tracking t
            WHERE t.freightcarrier_id = p_carrier
              AND t.status NOT IN ('delivered', 'returned', 'cancelled') AND t.stale_at IS NULL
              AND (p_all OR t.next_poll_at <= now())
              AND (t.claimed_until IS NULL OR t.claimed_until <= now())
              AND (t.last_polled_at IS NULL OR t.last_polled_at < p_round_start)
            ORDER BY t.next_poll_at, t.id
            LIMIT CASE WHEN v_probe THEN 1 ELSE greatest(p_limit, 1) END
            FOR UPDATE SKIP LOCKED
        )
        UPDATE sequencing.tracking t
        SET claimed_until = now() + p_lease, next_poll_at = greatest(t.next_poll_at, now() + p_lease)
        FROM pick WHERE t.id = pick.id
        RETURNING t.id, t.tracking_id, t.order_id, t.status, t.assigned_at, t.poll_count,
                  t.remote_registered_at IS NOT NULL
    LOOP
        v_found := true;
        outcome := 'ok';
        wait_s := 0;
        slot := v_slot;
        probe := v_probe;
        RETURN NEXT;
    END LOOP;
    END IF;
    IF NOT v_found THEN
        UPDATE sequencing.carrier_slot s SET leased_until = '-infinity', holder = NULL
        WHERE s.carrier_id = p_carrier AND s.slot = v_slot;
        IF v_probe THEN
            UPDATE sequencing.carrier_state SET probe_until = NULL WHERE carrier_id = p_carrier;
        END IF;
        RETURN QUERY SELECT 'done'::text, 0::float8,
            NULL::int, false, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::int, NULL::boolean;
    END IF;
END
$$;

--
-- Name: pool_keep_codes(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_keep_codes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: pool_next_ticket(integer); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_next_ticket(p_pool integer) RETURNS bigint
    LANGUAGE sql
    AS $$
    SELECT greatest(p.ticket_end, coalesce(pg_sequence_last_value(p.ticket_seq), 0)) + 1
    FROM sequencing.pool p WHERE p.id = p_pool FOR UPDATE
$$;

--
-- Name: pool_s10_guard(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_s10_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    other text;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.kind = 's10' THEN
        IF NEW.kind IS DISTINCT FROM OLD.kind OR NEW.s10_prefix IS DISTINCT FROM OLD.s10_prefix
           OR NEW.s10_country IS DISTINCT FROM OLD.s10_country OR NEW.s10_first IS DISTINCT FROM OLD.s10_first
           OR NEW.s10_last IS DISTINCT FROM OLD.s10_last THEN
            RAISE EXCEPTION 'the S10 range of pool % cannot be changed', OLD.name
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.s10_next < OLD.s10_next THEN
            RAISE EXCEPTION 'the next S10 serial of pool % cannot go back (serials are never reused)', OLD.name
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.kind = 's10' THEN
        RAISE EXCEPTION 'pool % cannot become an S10 pool; create a new one', OLD.name
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_OP = 'INSERT' AND NEW.kind = 's10' THEN
        -- Serialise creations of ranges with the same prefix and country, then look for overlap.
        PERFORM pg_advisory_xact_lock(7262003, hashtext(NEW.s10_prefix || NEW.s10_country));
        SELECT p.name INTO other FROM sequencing.pool p
        WHERE p.kind = 's10' AND p.s10_prefix = NEW.s10_prefix AND p.s10_country = NEW.s10_country
          AND p.s10_first <= NEW.s10_last AND NEW.s10_first <= p.s10_last
        LIMIT 1;
        IF other IS NOT NULL THEN
            RAISE EXCEPTION 'S10 range % %-% % overlaps pool %', NEW.s10_prefix, NEW.s10_first,
                NEW.s10_last, NEW.s10_country, other
                USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'pool_s10_no_overlap';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

--
-- Name: pool_ticket_sequence(integer); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_ticket_sequence(p_pool integer) RETURNS regclass
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('CREATE SEQUENCE sequencing.%I AS bigint MINVALUE 1 START 1 CACHE 1 NO CYCLE',
                   'pool_tickets_' || p_pool);
    RETURN format('sequencing.%I', 'pool_tickets_' || p_pool)::regclass;
END $$;

--
-- Name: pool_tickets_create(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_tickets_create() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.ticket_seq := sequencing.pool_ticket_sequence(NEW.id);
    NEW.ticket_end := 0;
    RETURN NEW;
END $$;

--
-- Name: pool_tickets_drop(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_tickets_drop() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('DROP SEQUENCE IF EXISTS %s', OLD.ticket_seq);
    RETURN OLD;
END $$;

--
-- Name: pool_tickets_keep(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.pool_tickets_keep() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.ticket_seq IS DISTINCT FROM OLD.ticket_seq THEN
        RAISE EXCEPTION 'the ticket sequence of pool % cannot be changed', OLD.name
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

--
-- Name: rate_late(text, timestamp with time zone); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.rate_late(p_bucket text, p_booked timestamp with time zone) RETURNS void
    LANGUAGE sql
    AS $$
    UPDATE sequencing.rate_bucket SET starts = ARRAY(
        SELECT x FROM unnest(array_replace(starts, p_booked, clock_timestamp())) AS x ORDER BY 1)
    WHERE name = p_bucket AND p_booked = ANY(starts)
$$;

--
-- Name: rate_reserve(text, integer, interval, interval); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.rate_reserve(p_bucket text, p_count integer, p_window interval, p_lead interval, OUT wait_s double precision, OUT booked timestamp with time zone) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_starts timestamptz[];
    v_now timestamptz;
    v_at timestamptz;
    v_n integer;
BEGIN
    INSERT INTO sequencing.rate_bucket (name) VALUES (p_bucket) ON CONFLICT DO NOTHING;
    SELECT starts INTO v_starts FROM sequencing.rate_bucket WHERE name = p_bucket FOR UPDATE;
    v_now := clock_timestamp();
    v_n := coalesce(cardinality(v_starts), 0);
    v_at := v_now;
    IF v_n >= p_count THEN
        v_at := greatest(v_now, v_starts[v_n - p_count + 1] + p_window);  -- the p_count-th latest start
    END IF;
    IF v_at > v_now + p_lead THEN
        wait_s := -greatest(extract(epoch FROM v_at - v_now - p_lead), 0.001);
        RETURN;
    END IF;
    UPDATE sequencing.rate_bucket SET starts = ARRAY(
        SELECT x FROM (SELECT unnest(v_starts || v_at) AS x ORDER BY 1 DESC LIMIT p_count) latest ORDER BY 1)
    WHERE name = p_bucket;
    wait_s := greatest(extract(epoch FROM v_at - v_now), 0);
    booked := v_at;
END
$$;

--
-- Name: registered_payload(text, text, text, timestamp with time zone); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.registered_payload(code text, order_id text, carrier text, registered_at timestamp with time zone) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT jsonb_build_object('code', code, 'order_id', order_id, 'carrier', carrier, 'source', 'external',
                              'registered_at', sequencing.rfc3339(registered_at))
$$;

--
-- Name: renumber_skipped(integer); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.renumber_skipped(p_pool integer) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: rfc3339(timestamp with time zone); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.rfc3339(ts timestamp with time zone) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

--
-- Name: run; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.run (
    id uuid NOT NULL,
    job text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    backend_pid integer NOT NULL,
    backend_start timestamp with time zone,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    outcome text DEFAULT 'running'::text NOT NULL,
    counts jsonb DEFAULT '{}'::jsonb NOT NULL,
    error text,
    CONSTRAINT run_finished_when_done CHECK (((outcome = ANY (ARRAY['running'::text, 'died'::text])) = (finished_at IS NULL))),
    CONSTRAINT run_job_format CHECK ((job ~ '^[a-z][a-z0-9-]{0,39}$'::text)),
    CONSTRAINT run_outcome_known CHECK ((outcome = ANY (ARRAY['running'::text, 'ok'::text, 'partial'::text, 'failed'::text, 'skipped'::text, 'died'::text])))
);

--
-- Name: run_outcome(sequencing.run); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.run_outcome(r sequencing.run) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN r.outcome = 'running'
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                 WHERE a.pid = r.backend_pid
                                   AND (a.backend_start IS NULL OR r.backend_start IS NULL
                                        OR a.backend_start = r.backend_start))
                THEN 'died' ELSE r.outcome END
$$;

--
-- Name: status_keys_fixed(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.status_keys_fixed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.key = OLD.key THEN
        RETURN NEW;  -- labels, order and flags may change; keys may not
    END IF;
    RAISE EXCEPTION 'status % is part of the status model and cannot be removed or renamed', OLD.key
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

--
-- Name: tracking_carrier_exists(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.tracking_carrier_exists() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: tracking_event_immutable(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.tracking_event_immutable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'tracking events are history and cannot be changed (event %)', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

--
-- Name: tracking_keep_assignment(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.tracking_keep_assignment() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'tracking code % is in use (order %) and cannot be deleted',
            OLD.tracking_id, coalesce(OLD.order_id, '-') USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.order_id IS DISTINCT FROM OLD.order_id
       OR NEW.freightcarrier_id IS DISTINCT FROM OLD.freightcarrier_id
       OR NEW.parcel IS DISTINCT FROM OLD.parcel
       OR NEW.source IS DISTINCT FROM OLD.source
       OR NEW.tracking_id IS DISTINCT FROM OLD.tracking_id THEN
        RAISE EXCEPTION 'tracking code % is already in use (order %)',
            OLD.tracking_id, coalesce(OLD.order_id, '-') USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

--
-- Name: tracking_pool_exists(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.tracking_pool_exists() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

--
-- Name: tracking_pool_fixed(); Type: FUNCTION; Schema: sequencing; Owner: -
--

CREATE FUNCTION sequencing.tracking_pool_fixed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'the pool of tracking code % cannot change', OLD.tracking_id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

--
-- Name: carrier; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.carrier (
    id integer NOT NULL,
    name text NOT NULL,
    pool_id integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    adapter text,
    url text,
    token_env text,
    max_concurrency integer DEFAULT 6 NOT NULL,
    timeout double precision DEFAULT 10 NOT NULL,
    options jsonb DEFAULT '{}'::jsonb NOT NULL,
    poll_intervals jsonb DEFAULT '{}'::jsonb NOT NULL,
    stale_after interval DEFAULT '30 days'::interval NOT NULL,
    breaker_threshold integer DEFAULT 10 NOT NULL,
    breaker_cooldown interval DEFAULT '00:05:00'::interval NOT NULL,
    demo boolean DEFAULT false NOT NULL,
    removed_at timestamp with time zone,
    credentials jsonb DEFAULT '{}'::jsonb NOT NULL,
    rate_limit double precision,
    CONSTRAINT carrier_adapter_format CHECK ((adapter ~ '^[a-z0-9][a-z0-9_-]{0,31}(:[a-z0-9][a-z0-9_]{0,63})?$'::text)),
    CONSTRAINT carrier_breaker_cooldown_positive CHECK ((breaker_cooldown > '00:00:00'::interval)),
    CONSTRAINT carrier_breaker_threshold_range CHECK (((breaker_threshold >= 1) AND (breaker_threshold <= 100000))),
    CONSTRAINT carrier_credentials_object CHECK ((jsonb_typeof(credentials) = 'object'::text)),
    CONSTRAINT carrier_id_positive CHECK ((id > 0)),
    CONSTRAINT carrier_max_concurrency_range CHECK (((max_concurrency >= 1) AND (max_concurrency <= 256))),
    CONSTRAINT carrier_name_format CHECK ((name ~ '^[a-z][a-z0-9_-]{0,31}$'::text)),
    CONSTRAINT carrier_options_object CHECK ((jsonb_typeof(options) = 'object'::text)),
    CONSTRAINT carrier_poll_intervals_object CHECK ((jsonb_typeof(poll_intervals) = 'object'::text)),
    CONSTRAINT carrier_rate_limit_range CHECK (((rate_limit > (0)::double precision) AND (rate_limit <= (10000)::double precision))),
    CONSTRAINT carrier_stale_after_positive CHECK ((stale_after > '00:00:00'::interval)),
    CONSTRAINT carrier_timeout_range CHECK (((timeout > (0)::double precision) AND (timeout <= (300)::double precision))),
    CONSTRAINT carrier_token_env_format CHECK ((token_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'::text)),
    CONSTRAINT carrier_url_format CHECK (((length(url) <= 2000) AND (url ~ '^https?://[^[:space:][:cntrl:]@]+$'::text)))
);

--
-- Name: carrier_call; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.carrier_call (
    id bigint NOT NULL,
    carrier_id integer NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    kind text NOT NULL,
    outcome text NOT NULL,
    numbers integer NOT NULL,
    registered integer DEFAULT 0 NOT NULL,
    latency_ms double precision NOT NULL,
    CONSTRAINT carrier_call_kind_format CHECK ((kind ~ '^[a-z][a-z_]{0,31}$'::text)),
    CONSTRAINT carrier_call_latency_range CHECK ((latency_ms >= (0)::double precision)),
    CONSTRAINT carrier_call_numbers_range CHECK ((numbers >= 0)),
    CONSTRAINT carrier_call_outcome_known CHECK ((outcome = ANY (ARRAY['ok'::text, 'failed'::text, 'rate_limited'::text]))),
    CONSTRAINT carrier_call_registered_range CHECK ((registered >= 0))
);

--
-- Name: carrier_call_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.carrier_call ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.carrier_call_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: carrier_slot; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.carrier_slot (
    carrier_id integer NOT NULL,
    slot integer NOT NULL,
    leased_until timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    holder text,
    CONSTRAINT carrier_slot_positive CHECK ((slot >= 1))
);

--
-- Name: carrier_state; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.carrier_state (
    carrier_id integer NOT NULL,
    blocked_until timestamp with time zone,
    consecutive_failures integer DEFAULT 0 NOT NULL,
    open_until timestamp with time zone,
    probe_until timestamp with time zone,
    opened_at timestamp with time zone,
    CONSTRAINT carrier_state_failures CHECK ((consecutive_failures >= 0))
);

--
-- Name: event_group; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.event_group (
    id integer NOT NULL,
    name text NOT NULL,
    types text[],
    "position" bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT event_group_name_format CHECK ((name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'::text)),
    CONSTRAINT event_group_position_range CHECK (("position" >= 0)),
    CONSTRAINT event_group_types_nonempty CHECK (((types IS NULL) OR ((cardinality(types) > 0) AND (array_position(types, NULL::text) IS NULL))))
);

--
-- Name: event_group_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.event_group ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.event_group_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: event_group_lease; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.event_group_lease (
    id bigint NOT NULL,
    group_id integer NOT NULL,
    after_id bigint NOT NULL,
    last_id bigint NOT NULL,
    slot smallint NOT NULL,
    token uuid NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    handed_out integer DEFAULT 1 NOT NULL,
    CONSTRAINT event_group_lease_range CHECK (((last_id > after_id) AND (after_id >= 0)))
);

--
-- Name: event_group_lease_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.event_group_lease ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.event_group_lease_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: event_group_member; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.event_group_member (
    group_id integer NOT NULL,
    slot smallint NOT NULL,
    token uuid NOT NULL,
    backend_pid integer NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    joined_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT event_group_member_slot_range CHECK (((slot >= 1) AND (slot <= 6)))
);

--
-- Name: outbox_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: pool; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.pool (
    id integer NOT NULL,
    name text NOT NULL,
    kind text DEFAULT 'uuid'::text NOT NULL,
    target integer DEFAULT 200 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    s10_prefix text,
    s10_country text,
    s10_first integer,
    s10_last integer,
    s10_next integer,
    ticket_seq regclass NOT NULL,
    ticket_end bigint DEFAULT 0 NOT NULL,
    CONSTRAINT pool_kind_known CHECK ((kind = ANY (ARRAY['uuid'::text, 's10'::text]))),
    CONSTRAINT pool_name_format CHECK ((name ~ '^[a-z0-9][a-z0-9_-]{0,31}$'::text)),
    CONSTRAINT pool_s10_country_format CHECK ((s10_country ~ '^[A-Z]{2}$'::text)),
    CONSTRAINT pool_s10_prefix_format CHECK ((s10_prefix ~ '^[A-Z]{2}$'::text)),
    CONSTRAINT pool_s10_range CHECK ((((kind <> 's10'::text) AND (s10_prefix IS NULL) AND (s10_country IS NULL) AND (s10_first IS NULL) AND (s10_last IS NULL) AND (s10_next IS NULL)) OR ((kind = 's10'::text) AND (s10_prefix IS NOT NULL) AND (s10_country IS NOT NULL) AND (s10_first IS NOT NULL) AND (s10_last IS NOT NULL) AND (s10_next IS NOT NULL) AND (0 <= s10_first) AND (s10_first <= s10_last) AND (s10_last <= 99999999) AND ((s10_next >= s10_first) AND (s10_next <= (s10_last + 1)))))),
    CONSTRAINT pool_s10_target_fits CHECK (((kind <> 's10'::text) OR (target <= ((s10_last - s10_first) + 1)))),
    CONSTRAINT pool_target_range CHECK (((target >= 0) AND (target <= 10000000))),
    CONSTRAINT pool_ticket_end_range CHECK ((ticket_end >= 0))
);

--
-- Name: pool_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.pool ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.pool_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: pool_tickets_1; Type: SEQUENCE; Schema: sequencing; Owner: -
--

CREATE SEQUENCE sequencing.pool_tickets_1
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

--
-- Name: rate_bucket; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.rate_bucket (
    name text NOT NULL,
    starts timestamp with time zone[] DEFAULT '{}'::timestamp with time zone[] NOT NULL,
    CONSTRAINT rate_bucket_name_length CHECK (((length(name) >= 1) AND (length(name) <= 300)))
);

--
-- Name: schema_migration; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.schema_migration (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: status; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.status (
    key text NOT NULL,
    label text NOT NULL,
    terminal boolean NOT NULL,
    "position" smallint NOT NULL,
    CONSTRAINT status_terminal_set CHECK ((terminal = (key = ANY (ARRAY['delivered'::text, 'returned'::text, 'cancelled'::text]))))
);

--
-- Name: tracking; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.tracking (
    id bigint NOT NULL,
    tracking_id text NOT NULL COLLATE pg_catalog."C",
    pool_id integer,
    order_id text COLLATE pg_catalog."C",
    freightcarrier_id integer,
    parcel integer,
    status text,
    assigned_at timestamp with time zone,
    shipping_date timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    next_poll_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    claimed_until timestamp with time zone,
    last_polled_at timestamp with time zone,
    poll_count integer DEFAULT 0 NOT NULL,
    poll_failures integer DEFAULT 0 NOT NULL,
    last_poll_error text,
    last_event_at timestamp with time zone,
    stale_at timestamp with time zone,
    source text DEFAULT 'pool'::text NOT NULL,
    remote_registered_at timestamp with time zone,
    remote_stopped_at timestamp with time zone,
    ticket bigint,
    CONSTRAINT tracking_assignment_complete CHECK ((((source = 'pool'::text) AND (pool_id IS NOT NULL) AND (((order_id IS NULL) AND (freightcarrier_id IS NULL) AND (parcel IS NULL) AND (status IS NULL) AND (assigned_at IS NULL)) OR ((order_id IS NOT NULL) AND (freightcarrier_id IS NOT NULL) AND (parcel IS NOT NULL) AND (status IS NOT NULL) AND (assigned_at IS NOT NULL)))) OR ((source = 'external'::text) AND (pool_id IS NULL) AND (parcel IS NULL) AND (freightcarrier_id IS NOT NULL) AND (status IS NOT NULL) AND (assigned_at IS NOT NULL)))),
    CONSTRAINT tracking_external_code_format CHECK (((source = 'pool'::text) OR (tracking_id ~ '^[A-Za-z0-9-]{5,50}$'::text))),
    CONSTRAINT tracking_free_code_has_ticket CHECK (((source <> 'pool'::text) OR (order_id IS NOT NULL) OR (ticket IS NOT NULL))),
    CONSTRAINT tracking_order_id_format CHECK (((order_id IS NULL) OR ((length(order_id) >= 1) AND (length(order_id) <= 64) AND (order_id !~ '[[:cntrl:]]'::text)))),
    CONSTRAINT tracking_parcel_range CHECK (((parcel IS NULL) OR ((parcel >= 1) AND (parcel <= 999)))),
    CONSTRAINT tracking_poll_counts CHECK (((poll_count >= 0) AND (poll_failures >= 0))),
    CONSTRAINT tracking_poll_error_length CHECK ((length(last_poll_error) <= 500)),
    CONSTRAINT tracking_poll_state_assigned CHECK (((freightcarrier_id IS NOT NULL) OR ((claimed_until IS NULL) AND (last_polled_at IS NULL) AND (last_event_at IS NULL) AND (stale_at IS NULL) AND (remote_registered_at IS NULL)))),
    CONSTRAINT tracking_remote_stop_after_register CHECK (((remote_stopped_at IS NULL) OR (remote_registered_at IS NOT NULL))),
    CONSTRAINT tracking_source_known CHECK ((source = ANY (ARRAY['pool'::text, 'external'::text]))),
    CONSTRAINT tracking_status_known CHECK ((status = ANY (ARRAY['pending'::text, 'in_transit'::text, 'out_for_delivery'::text, 'failed_attempt'::text, 'available_for_pickup'::text, 'exception'::text, 'delivered'::text, 'returned'::text, 'cancelled'::text]))),
    CONSTRAINT tracking_ticket_pool_only CHECK (((ticket IS NULL) OR ((source = 'pool'::text) AND (ticket > 0))))
);

--
-- Name: tracking_event; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.tracking_event (
    id bigint NOT NULL,
    shipment_id bigint NOT NULL,
    dedupe_key text NOT NULL,
    source text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    status text,
    raw_status text NOT NULL,
    description text,
    location text,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT tracking_event_description_length CHECK ((length(description) <= 2000)),
    CONSTRAINT tracking_event_key_length CHECK (((length(dedupe_key) >= 1) AND (length(dedupe_key) <= 300))),
    CONSTRAINT tracking_event_location_length CHECK ((length(location) <= 500)),
    CONSTRAINT tracking_event_raw_length CHECK (((length(raw_status) >= 1) AND (length(raw_status) <= 200))),
    CONSTRAINT tracking_event_source CHECK ((source = ANY (ARRAY['carrier'::text, 'manual'::text])))
);

--
-- Name: tracking_event_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.tracking_event ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.tracking_event_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: tracking_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.tracking ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.tracking_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: webhook_delivery; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.webhook_delivery (
    id bigint NOT NULL,
    outbox_id bigint NOT NULL,
    subscriber_id integer NOT NULL,
    shipment_id bigint,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone,
    lease_token uuid,
    last_attempt_at timestamp with time zone,
    last_status integer,
    last_error text,
    delivered_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT webhook_delivery_attempts_range CHECK ((attempts >= 0)),
    CONSTRAINT webhook_delivery_done_time CHECK (((status = 'done'::text) = (delivered_at IS NOT NULL))),
    CONSTRAINT webhook_delivery_lease_pending CHECK (((lease_token IS NULL) OR (status = 'pending'::text))),
    CONSTRAINT webhook_delivery_pending_due CHECK (((status = 'pending'::text) = (next_attempt_at IS NOT NULL))),
    CONSTRAINT webhook_delivery_status_known CHECK ((status = ANY (ARRAY['pending'::text, 'done'::text, 'dead'::text])))
);

--
-- Name: webhook_delivery_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.webhook_delivery ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.webhook_delivery_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: webhook_subscriber; Type: TABLE; Schema: sequencing; Owner: -
--

CREATE TABLE sequencing.webhook_subscriber (
    id integer NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_until timestamp with time zone,
    types text[],
    retry_schedule integer[] DEFAULT '{0,5,300,1800,7200,18000,36000,36000}'::integer[] NOT NULL,
    max_in_flight integer DEFAULT 16 NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    disabled_reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    demo boolean DEFAULT false NOT NULL,
    CONSTRAINT webhook_subscriber_disabled_reason CHECK ((enabled = (disabled_reason IS NULL))),
    CONSTRAINT webhook_subscriber_in_flight_range CHECK (((max_in_flight >= 1) AND (max_in_flight <= 256))),
    CONSTRAINT webhook_subscriber_previous_format CHECK ((previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'::text)),
    CONSTRAINT webhook_subscriber_rotation CHECK (((previous_secret IS NULL) = (previous_until IS NULL))),
    CONSTRAINT webhook_subscriber_schedule_valid CHECK ((((cardinality(retry_schedule) >= 1) AND (cardinality(retry_schedule) <= 50)) AND (array_position(retry_schedule, NULL::integer) IS NULL) AND (0 <= ALL (retry_schedule)) AND (31536000 >= ALL (retry_schedule)))),
    CONSTRAINT webhook_subscriber_secret_format CHECK ((secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'::text)),
    CONSTRAINT webhook_subscriber_types_nonempty CHECK (((types IS NULL) OR ((cardinality(types) > 0) AND (array_position(types, NULL::text) IS NULL)))),
    CONSTRAINT webhook_subscriber_url_format CHECK (((url ~ '^https?://[^[:space:][:cntrl:]]+$'::text) AND (length(url) <= 2000)))
);

--
-- Name: webhook_subscriber_id_seq; Type: SEQUENCE; Schema: sequencing; Owner: -
--

ALTER TABLE sequencing.webhook_subscriber ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sequencing.webhook_subscriber_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

--
-- Name: carrier_call carrier_call_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_call
    ADD CONSTRAINT carrier_call_pkey PRIMARY KEY (id);

--
-- Name: carrier carrier_name_key; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier
    ADD CONSTRAINT carrier_name_key UNIQUE (name);

--
-- Name: carrier carrier_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier
    ADD CONSTRAINT carrier_pkey PRIMARY KEY (id);

--
-- Name: carrier_slot carrier_slot_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_slot
    ADD CONSTRAINT carrier_slot_pkey PRIMARY KEY (carrier_id, slot);

--
-- Name: carrier_state carrier_state_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_state
    ADD CONSTRAINT carrier_state_pkey PRIMARY KEY (carrier_id);

--
-- Name: event_group_lease event_group_lease_end_unique; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_lease
    ADD CONSTRAINT event_group_lease_end_unique UNIQUE (group_id, last_id);

--
-- Name: event_group_lease event_group_lease_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_lease
    ADD CONSTRAINT event_group_lease_pkey PRIMARY KEY (id);

--
-- Name: event_group_lease event_group_lease_start_unique; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_lease
    ADD CONSTRAINT event_group_lease_start_unique UNIQUE (group_id, after_id);

--
-- Name: event_group_member event_group_member_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_member
    ADD CONSTRAINT event_group_member_pkey PRIMARY KEY (group_id, slot);

--
-- Name: event_group event_group_name_unique; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group
    ADD CONSTRAINT event_group_name_unique UNIQUE (name);

--
-- Name: event_group event_group_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group
    ADD CONSTRAINT event_group_pkey PRIMARY KEY (id);

--
-- Name: outbox outbox_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);

--
-- Name: pool pool_name_key; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.pool
    ADD CONSTRAINT pool_name_key UNIQUE (name);

--
-- Name: pool pool_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.pool
    ADD CONSTRAINT pool_pkey PRIMARY KEY (id);

--
-- Name: rate_bucket rate_bucket_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.rate_bucket
    ADD CONSTRAINT rate_bucket_pkey PRIMARY KEY (name);

--
-- Name: run run_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.run
    ADD CONSTRAINT run_pkey PRIMARY KEY (id);

--
-- Name: schema_migration schema_migration_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.schema_migration
    ADD CONSTRAINT schema_migration_pkey PRIMARY KEY (version);

--
-- Name: status status_label_key; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.status
    ADD CONSTRAINT status_label_key UNIQUE (label);

--
-- Name: status status_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.status
    ADD CONSTRAINT status_pkey PRIMARY KEY (key);

--
-- Name: status status_position_key; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.status
    ADD CONSTRAINT status_position_key UNIQUE ("position");

--
-- Name: tracking tracking_code_unique; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking
    ADD CONSTRAINT tracking_code_unique UNIQUE (tracking_id);

--
-- Name: tracking_event tracking_event_once; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking_event
    ADD CONSTRAINT tracking_event_once UNIQUE (shipment_id, dedupe_key);

--
-- Name: tracking_event tracking_event_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking_event
    ADD CONSTRAINT tracking_event_pkey PRIMARY KEY (id);

--
-- Name: tracking tracking_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking
    ADD CONSTRAINT tracking_pkey PRIMARY KEY (id);

--
-- Name: webhook_delivery webhook_delivery_once; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_delivery
    ADD CONSTRAINT webhook_delivery_once UNIQUE (outbox_id, subscriber_id);

--
-- Name: webhook_delivery webhook_delivery_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_delivery
    ADD CONSTRAINT webhook_delivery_pkey PRIMARY KEY (id);

--
-- Name: webhook_subscriber webhook_subscriber_pkey; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_subscriber
    ADD CONSTRAINT webhook_subscriber_pkey PRIMARY KEY (id);

--
-- Name: webhook_subscriber webhook_subscriber_url_unique; Type: CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_subscriber
    ADD CONSTRAINT webhook_subscriber_url_unique UNIQUE (url);

--
-- Name: carrier_call_at; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX carrier_call_at ON sequencing.carrier_call USING btree (at, carrier_id);

--
-- Name: run_job_last_ok; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX run_job_last_ok ON sequencing.run USING btree (job, finished_at DESC) WHERE (outcome = 'ok'::text);

--
-- Name: run_job_last_worked; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX run_job_last_worked ON sequencing.run USING btree (job, finished_at DESC) WHERE (outcome = ANY (ARRAY['ok'::text, 'partial'::text]));

--
-- Name: run_job_started; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX run_job_started ON sequencing.run USING btree (job, started_at DESC);

--
-- Name: run_running; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX run_running ON sequencing.run USING btree (started_at) WHERE (outcome = 'running'::text);

--
-- Name: run_started; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX run_started ON sequencing.run USING btree (started_at);

--
-- Name: tracking_event_timeline; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX tracking_event_timeline ON sequencing.tracking_event USING btree (shipment_id, occurred_at);

--
-- Name: tracking_one_code_per_parcel; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE UNIQUE INDEX tracking_one_code_per_parcel ON sequencing.tracking USING btree (order_id, freightcarrier_id, parcel) WHERE (order_id IS NOT NULL);

--
-- Name: tracking_poll_due; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX tracking_poll_due ON sequencing.tracking USING btree (freightcarrier_id, next_poll_at, id) WHERE ((status <> ALL (ARRAY['delivered'::text, 'returned'::text, 'cancelled'::text])) AND (stale_at IS NULL));

--
-- Name: tracking_quiet; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX tracking_quiet ON sequencing.tracking USING btree (freightcarrier_id, COALESCE(last_event_at, assigned_at)) WHERE ((status <> ALL (ARRAY['delivered'::text, 'returned'::text, 'cancelled'::text])) AND (stale_at IS NULL));

--
-- Name: tracking_remote_to_stop; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX tracking_remote_to_stop ON sequencing.tracking USING btree (freightcarrier_id, id) WHERE ((remote_registered_at IS NOT NULL) AND (remote_stopped_at IS NULL) AND ((status = ANY (ARRAY['delivered'::text, 'returned'::text, 'cancelled'::text])) OR (stale_at IS NOT NULL)));

--
-- Name: tracking_stale; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX tracking_stale ON sequencing.tracking USING btree (freightcarrier_id) WHERE ((stale_at IS NOT NULL) AND (status <> ALL (ARRAY['delivered'::text, 'returned'::text, 'cancelled'::text])));

--
-- Name: tracking_ticket; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE UNIQUE INDEX tracking_ticket ON sequencing.tracking USING btree (pool_id, ticket) WHERE (order_id IS NULL);

--
-- Name: webhook_delivery_dead; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX webhook_delivery_dead ON sequencing.webhook_delivery USING btree (subscriber_id) WHERE (status = 'dead'::text);

--
-- Name: webhook_delivery_due; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX webhook_delivery_due ON sequencing.webhook_delivery USING btree (subscriber_id, next_attempt_at, outbox_id) WHERE (status = 'pending'::text);

--
-- Name: webhook_delivery_shipment_order; Type: INDEX; Schema: sequencing; Owner: -
--

CREATE INDEX webhook_delivery_shipment_order ON sequencing.webhook_delivery USING btree (subscriber_id, shipment_id, outbox_id) WHERE (status = 'pending'::text);

--
-- Name: carrier carrier_keep_shipments; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER carrier_keep_shipments BEFORE DELETE OR UPDATE OF id ON sequencing.carrier FOR EACH ROW EXECUTE FUNCTION sequencing.carrier_keep_shipments();

--
-- Name: carrier carrier_sync_slots; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER carrier_sync_slots AFTER INSERT OR UPDATE OF max_concurrency ON sequencing.carrier FOR EACH ROW EXECUTE FUNCTION sequencing.carrier_sync_slots();

--
-- Name: outbox outbox_after_insert; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER outbox_after_insert AFTER INSERT ON sequencing.outbox REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION sequencing.outbox_after_insert();

--
-- Name: outbox outbox_fixed; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER outbox_fixed BEFORE UPDATE OF id, legacy_event_id, shipment_id ON sequencing.outbox FOR EACH ROW WHEN (((new.id <> old.id) OR (new.legacy_event_id IS DISTINCT FROM old.legacy_event_id) OR (new.shipment_id IS DISTINCT FROM old.shipment_id))) EXECUTE FUNCTION sequencing.outbox_fixed();

--
-- Name: pool pool_keep_codes; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER pool_keep_codes BEFORE DELETE OR UPDATE OF id ON sequencing.pool FOR EACH ROW EXECUTE FUNCTION sequencing.pool_keep_codes();

--
-- Name: pool pool_s10_guard; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER pool_s10_guard BEFORE INSERT OR UPDATE ON sequencing.pool FOR EACH ROW EXECUTE FUNCTION sequencing.pool_s10_guard();

--
-- Name: pool pool_tickets_create; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER pool_tickets_create BEFORE INSERT ON sequencing.pool FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_create();

--
-- Name: pool pool_tickets_drop; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER pool_tickets_drop AFTER DELETE ON sequencing.pool FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_drop();

--
-- Name: pool pool_tickets_keep; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER pool_tickets_keep BEFORE UPDATE OF ticket_seq ON sequencing.pool FOR EACH ROW EXECUTE FUNCTION sequencing.pool_tickets_keep();

--
-- Name: status status_keys_fixed; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER status_keys_fixed BEFORE DELETE OR UPDATE OF key ON sequencing.status FOR EACH ROW EXECUTE FUNCTION sequencing.status_keys_fixed();

--
-- Name: tracking tracking_carrier_exists_insert; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_carrier_exists_insert AFTER INSERT ON sequencing.tracking REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_carrier_exists();

--
-- Name: tracking tracking_carrier_exists_update; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_carrier_exists_update AFTER UPDATE ON sequencing.tracking REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_carrier_exists();

--
-- Name: tracking_event tracking_event_immutable; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_event_immutable BEFORE UPDATE ON sequencing.tracking_event FOR EACH ROW EXECUTE FUNCTION sequencing.tracking_event_immutable();

--
-- Name: tracking tracking_keep_assignment_delete; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_keep_assignment_delete BEFORE DELETE ON sequencing.tracking FOR EACH ROW WHEN ((old.freightcarrier_id IS NOT NULL)) EXECUTE FUNCTION sequencing.tracking_keep_assignment();

--
-- Name: tracking tracking_keep_assignment_update; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_keep_assignment_update BEFORE UPDATE ON sequencing.tracking FOR EACH ROW WHEN ((old.freightcarrier_id IS NOT NULL)) EXECUTE FUNCTION sequencing.tracking_keep_assignment();

--
-- Name: tracking tracking_pool_exists; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_pool_exists AFTER INSERT ON sequencing.tracking REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION sequencing.tracking_pool_exists();

--
-- Name: tracking tracking_pool_fixed; Type: TRIGGER; Schema: sequencing; Owner: -
--

CREATE TRIGGER tracking_pool_fixed BEFORE UPDATE OF pool_id ON sequencing.tracking FOR EACH ROW WHEN ((new.pool_id IS DISTINCT FROM old.pool_id)) EXECUTE FUNCTION sequencing.tracking_pool_fixed();

--
-- Name: carrier_call carrier_call_carrier_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_call
    ADD CONSTRAINT carrier_call_carrier_id_fkey FOREIGN KEY (carrier_id) REFERENCES sequencing.carrier(id) ON DELETE CASCADE;

--
-- Name: carrier carrier_pool_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier
    ADD CONSTRAINT carrier_pool_id_fkey FOREIGN KEY (pool_id) REFERENCES sequencing.pool(id);

--
-- Name: carrier_slot carrier_slot_carrier_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_slot
    ADD CONSTRAINT carrier_slot_carrier_id_fkey FOREIGN KEY (carrier_id) REFERENCES sequencing.carrier(id) ON DELETE CASCADE;

--
-- Name: carrier_state carrier_state_carrier_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.carrier_state
    ADD CONSTRAINT carrier_state_carrier_id_fkey FOREIGN KEY (carrier_id) REFERENCES sequencing.carrier(id) ON DELETE CASCADE;

--
-- Name: event_group_lease event_group_lease_group_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_lease
    ADD CONSTRAINT event_group_lease_group_id_fkey FOREIGN KEY (group_id) REFERENCES sequencing.event_group(id) ON DELETE CASCADE;

--
-- Name: event_group_member event_group_member_group_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.event_group_member
    ADD CONSTRAINT event_group_member_group_id_fkey FOREIGN KEY (group_id) REFERENCES sequencing.event_group(id) ON DELETE CASCADE;

--
-- Name: tracking_event tracking_event_shipment_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking_event
    ADD CONSTRAINT tracking_event_shipment_id_fkey FOREIGN KEY (shipment_id) REFERENCES sequencing.tracking(id);

--
-- Name: tracking_event tracking_event_status_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.tracking_event
    ADD CONSTRAINT tracking_event_status_fkey FOREIGN KEY (status) REFERENCES sequencing.status(key);

--
-- Name: webhook_delivery webhook_delivery_outbox_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_delivery
    ADD CONSTRAINT webhook_delivery_outbox_id_fkey FOREIGN KEY (outbox_id) REFERENCES sequencing.outbox(id) ON DELETE CASCADE;

--
-- Name: webhook_delivery webhook_delivery_subscriber_id_fkey; Type: FK CONSTRAINT; Schema: sequencing; Owner: -
--

ALTER TABLE ONLY sequencing.webhook_delivery
    ADD CONSTRAINT webhook_delivery_subscriber_id_fkey FOREIGN KEY (subscriber_id) REFERENCES sequencing.webhook_subscriber(id) ON DELETE CASCADE;

--
-- PostgreSQL database dump complete
--
