-- 0008: real carriers (issue 13): shipments whose code the carrier issued (`trackctl track`),
-- batch-capable polling with a request-rate limit shared by every process and host, carriers
-- reached through karrio or 17TRACK (adapter names with a digit first or a provider after ':'),
-- remote registration of a number (17TRACK register/stoptrack) and per-request accounting.

-- Adapter names: `17track`, `karrio:dhl_universal`, as well as the older forms.
ALTER TABLE sequencing.carrier DROP CONSTRAINT carrier_adapter_format;
ALTER TABLE sequencing.carrier
    ADD CONSTRAINT carrier_adapter_format
        CHECK (adapter ~ '^[a-z0-9][a-z0-9_-]{0,31}(:[a-z0-9][a-z0-9_]{0,63})?$'),
    -- karrio settings that are secret: {"consumer_key": "DHL_KEY"} maps a setting to the NAME of
    -- the environment variable holding it; values are read when polling, never stored.
    ADD COLUMN credentials jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT carrier_credentials_object CHECK (jsonb_typeof(credentials) = 'object'),
    -- Requests per second to this carrier over all processes and hosts (NULL: no limit of its own).
    ADD COLUMN rate_limit double precision
        CONSTRAINT carrier_rate_limit_range CHECK (rate_limit > 0 AND rate_limit <= 10000);

-- Request pacing, a sliding window per bucket: at most p_count request starts within any
-- p_window. `starts` keeps the last p_count starts (booked, or as sent when the sender was late).
-- Carriers sharing one API key (17TRACK) share one bucket.
CREATE TABLE sequencing.rate_bucket (
    name   text PRIMARY KEY CONSTRAINT rate_bucket_name_length CHECK (length(name) BETWEEN 1 AND 300),
    starts timestamptz[] NOT NULL DEFAULT '{}'
);

-- Book the start of one request: returns (seconds to wait before sending >= 0, the booked start),
-- or (minus the seconds after which to ask again, NULL) when the earliest allowed start is more
-- than p_lead away.
CREATE FUNCTION sequencing.rate_reserve(p_bucket text, p_count integer, p_window interval, p_lead interval,
                                        OUT wait_s double precision, OUT booked timestamptz)
LANGUAGE plpgsql AS $$
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

-- A request that woke later than its booked start is recorded as starting now, so that the
-- window of the next bookings counts from when it really went out.
CREATE FUNCTION sequencing.rate_late(p_bucket text, p_booked timestamptz) RETURNS void
LANGUAGE sql AS $$
    UPDATE sequencing.rate_bucket SET starts = ARRAY(
        SELECT x FROM unnest(array_replace(starts, p_booked, clock_timestamp())) AS x ORDER BY 1)
    WHERE name = p_bucket AND p_booked = ANY(starts)
$$;

-- Shipments: `pool` ones were claimed from a code pool (`trackctl assign`); `external` ones are
-- numbers a carrier issued, tracked with `trackctl track` (no pool, no parcel number, the order
-- optional). Existing rows are all pool rows.
ALTER TABLE sequencing.tracking
    ADD COLUMN source text NOT NULL DEFAULT 'pool'
        CONSTRAINT tracking_source_known CHECK (source IN ('pool', 'external')),
    -- When the carrier's tracking service was told about the number (17TRACK register), and
    -- when it was told to stop (stoptrack): a number is registered once.
    ADD COLUMN remote_registered_at timestamptz,
    ADD COLUMN remote_stopped_at timestamptz,
    ADD CONSTRAINT tracking_remote_stop_after_register
        CHECK (remote_stopped_at IS NULL OR remote_registered_at IS NOT NULL);
ALTER TABLE sequencing.tracking ALTER COLUMN pool_id DROP NOT NULL;
ALTER TABLE sequencing.tracking
    DROP CONSTRAINT tracking_assignment_complete,
    ADD CONSTRAINT tracking_assignment_complete CHECK (
        (source = 'pool' AND pool_id IS NOT NULL AND (
            (order_id IS NULL AND freightcarrier_id IS NULL AND parcel IS NULL
                AND status IS NULL AND assigned_at IS NULL)
            OR (order_id IS NOT NULL AND freightcarrier_id IS NOT NULL AND parcel IS NOT NULL
                AND status IS NOT NULL AND assigned_at IS NOT NULL)))
        OR (source = 'external' AND pool_id IS NULL AND parcel IS NULL
            AND freightcarrier_id IS NOT NULL AND status IS NOT NULL AND assigned_at IS NOT NULL)),
    -- What `trackctl track` accepts: 5-50 letters, digits and '-'.
    ADD CONSTRAINT tracking_external_code_format CHECK (
        source = 'pool' OR tracking_id ~ '^[A-Za-z0-9-]{5,50}$'),
    DROP CONSTRAINT tracking_poll_state_assigned,
    ADD CONSTRAINT tracking_poll_state_assigned CHECK (
        freightcarrier_id IS NOT NULL OR (claimed_until IS NULL AND last_polled_at IS NULL
                                          AND last_event_at IS NULL AND stale_at IS NULL
                                          AND remote_registered_at IS NULL));

-- A shipment in use (pool-assigned or external) keeps its code, carrier and order for good.
DROP TRIGGER tracking_keep_assignment_update ON sequencing.tracking;
DROP TRIGGER tracking_keep_assignment_delete ON sequencing.tracking;
CREATE OR REPLACE FUNCTION sequencing.tracking_keep_assignment() RETURNS trigger
LANGUAGE plpgsql AS $$
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
CREATE TRIGGER tracking_keep_assignment_update
    BEFORE UPDATE ON sequencing.tracking
    FOR EACH ROW WHEN (OLD.freightcarrier_id IS NOT NULL)
    EXECUTE FUNCTION sequencing.tracking_keep_assignment();
CREATE TRIGGER tracking_keep_assignment_delete
    BEFORE DELETE ON sequencing.tracking
    FOR EACH ROW WHEN (OLD.freightcarrier_id IS NOT NULL)
    EXECUTE FUNCTION sequencing.tracking_keep_assignment();

-- Registered numbers the carrier's service should stop tracking (terminal or stale here).
CREATE INDEX tracking_remote_to_stop ON sequencing.tracking (freightcarrier_id, id)
    WHERE remote_registered_at IS NOT NULL AND remote_stopped_at IS NULL
      AND (status IN ('delivered', 'returned', 'cancelled') OR stale_at IS NOT NULL);
-- `trackctl shipments --order`, and external shipments by order.
CREATE INDEX tracking_order ON sequencing.tracking (order_id) WHERE order_id IS NOT NULL;

-- One row per HTTP request made to a carrier: what `trackctl carrier stats` and the metrics
-- count. kind is the request's purpose (track, register, stop); numbers = shipments asked about.
CREATE TABLE sequencing.carrier_call (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier_id integer NOT NULL REFERENCES sequencing.carrier (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL CONSTRAINT carrier_call_kind_format CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    outcome    text NOT NULL CONSTRAINT carrier_call_outcome_known CHECK (outcome IN ('ok', 'failed', 'rate_limited')),
    numbers    integer NOT NULL CONSTRAINT carrier_call_numbers_range CHECK (numbers >= 0),
    registered integer NOT NULL DEFAULT 0 CONSTRAINT carrier_call_registered_range CHECK (registered >= 0),
    latency_ms double precision NOT NULL CONSTRAINT carrier_call_latency_range CHECK (latency_ms >= 0)
);
CREATE INDEX carrier_call_at ON sequencing.carrier_call (at, carrier_id);

-- One call hands a poller the right to make one request about up to p_limit shipments: the
-- 429 block and breaker are checked, a concurrency slot is taken (caps count requests) and up
-- to p_limit due shipments are claimed with a lease, in one round trip. Outcomes as in
-- poll_acquire; an 'ok' answer has one row per claimed shipment, all with the same slot.
-- With p_stop the shipments claimed are instead registered numbers the carrier's service should
-- stop tracking (terminal or stale here, remote_stopped_at not set): 17TRACK stoptrack.
CREATE FUNCTION sequencing.poll_acquire_batch(
    p_carrier integer, p_holder text, p_lease interval, p_round_start timestamptz, p_all boolean,
    p_limit integer, p_stop boolean DEFAULT false)
RETURNS TABLE (outcome text, wait_s double precision, slot integer, probe boolean,
               shipment_id bigint, code text, order_id text, status text,
               assigned_at timestamptz, poll_count integer, registered boolean)
LANGUAGE plpgsql AS $$
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

-- The data of a `tracking.registered` event (docs/WEBHOOKS-OPERATIONS.md): a number the carrier
-- issued, now tracked by trackctl (`trackctl track`).
CREATE FUNCTION sequencing.registered_payload(code text, order_id text, carrier text,
                                              registered_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('code', code, 'order_id', order_id, 'carrier', carrier, 'source', 'external',
                              'registered_at', sequencing.rfc3339(registered_at))
$$;
