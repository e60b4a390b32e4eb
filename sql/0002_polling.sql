-- 0002: carrier adapters, per-shipment polling state, event history, per-carrier limits
-- (cross-process concurrency slots, HTTP 429 block, circuit breaker) and S10 code ranges.

-- The partial indexes below name the terminal statuses; this keeps the status table and them equal.
ALTER TABLE sequencing.status ADD CONSTRAINT status_terminal_set
    CHECK (terminal = (key IN ('delivered', 'returned', 'cancelled')));

-- Carrier configuration. token_env is the NAME of an environment variable read at run time:
-- tokens themselves are never stored. adapter NULL = no API (shipments are only marked by hand).
ALTER TABLE sequencing.carrier
    ADD COLUMN adapter text
        CONSTRAINT carrier_adapter_format CHECK (adapter ~ '^[a-z][a-z0-9_-]{0,31}$'),
    ADD COLUMN url text
        CONSTRAINT carrier_url_format CHECK (length(url) <= 2000 AND url ~ '^https?://[^[:space:][:cntrl:]@]+$'),
    ADD COLUMN token_env text
        CONSTRAINT carrier_token_env_format CHECK (token_env ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    ADD COLUMN max_concurrency integer NOT NULL DEFAULT 6
        CONSTRAINT carrier_max_concurrency_range CHECK (max_concurrency BETWEEN 1 AND 256),
    ADD COLUMN timeout double precision NOT NULL DEFAULT 10
        CONSTRAINT carrier_timeout_range CHECK (timeout > 0 AND timeout <= 300),
    ADD COLUMN options jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT carrier_options_object CHECK (jsonb_typeof(options) = 'object'),
    -- Overrides of the status-dependent poll intervals: {"out_for_delivery": 300, ...} (seconds).
    ADD COLUMN poll_intervals jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT carrier_poll_intervals_object CHECK (jsonb_typeof(poll_intervals) = 'object'),
    ADD COLUMN stale_after interval NOT NULL DEFAULT '30 days'
        CONSTRAINT carrier_stale_after_positive CHECK (stale_after > interval '0'),
    ADD COLUMN breaker_threshold integer NOT NULL DEFAULT 10
        CONSTRAINT carrier_breaker_threshold_range CHECK (breaker_threshold BETWEEN 1 AND 100000),
    ADD COLUMN breaker_cooldown interval NOT NULL DEFAULT '5 minutes'
        CONSTRAINT carrier_breaker_cooldown_positive CHECK (breaker_cooldown > interval '0');

-- Run-time state of a carrier shared by every poller on every host.
CREATE TABLE sequencing.carrier_state (
    carrier_id           integer PRIMARY KEY REFERENCES sequencing.carrier (id) ON DELETE CASCADE,
    blocked_until        timestamptz,   -- HTTP 429: no process calls the carrier before this
    consecutive_failures integer NOT NULL DEFAULT 0 CONSTRAINT carrier_state_failures CHECK (consecutive_failures >= 0),
    open_until           timestamptz,   -- breaker: NULL closed, > now() open, <= now() half-open
    probe_until          timestamptz,   -- half-open: lease of the one probe request allowed through
    opened_at            timestamptz    -- when the breaker last opened
);

-- Concurrency slots: a request to a carrier holds one leased slot, and only slots numbered up to
-- the carrier's max_concurrency are handed out, so all processes together never exceed it. A
-- slot is taken with FOR UPDATE SKIP LOCKED in one short transaction and its lease expires by
-- itself (a killed poller frees its slots after the lease), so it works through PgBouncer in
-- transaction mode, unlike session advisory locks.
CREATE TABLE sequencing.carrier_slot (
    carrier_id   integer NOT NULL REFERENCES sequencing.carrier (id) ON DELETE CASCADE,
    slot         integer NOT NULL CONSTRAINT carrier_slot_positive CHECK (slot >= 1),
    leased_until timestamptz NOT NULL DEFAULT '-infinity',
    holder       text,
    PRIMARY KEY (carrier_id, slot)
);

CREATE FUNCTION sequencing.carrier_sync_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sequencing.carrier_state (carrier_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    INSERT INTO sequencing.carrier_slot (carrier_id, slot)
    SELECT NEW.id, n FROM generate_series(1, NEW.max_concurrency) AS n
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER carrier_sync_slots
    AFTER INSERT OR UPDATE OF max_concurrency ON sequencing.carrier
    FOR EACH ROW EXECUTE FUNCTION sequencing.carrier_sync_slots();

INSERT INTO sequencing.carrier_state (carrier_id) SELECT id FROM sequencing.carrier;
INSERT INTO sequencing.carrier_slot (carrier_id, slot)
SELECT c.id, n FROM sequencing.carrier c CROSS JOIN LATERAL generate_series(1, c.max_concurrency) AS n;

-- Per-shipment polling state, on the shipment row itself so that assignment needs no second
-- insert. '-infinity' = never polled, due at once.
ALTER TABLE sequencing.tracking
    ADD COLUMN next_poll_at    timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN claimed_until   timestamptz,       -- lease of the poller fetching it now
    ADD COLUMN last_polled_at  timestamptz,
    ADD COLUMN poll_count      integer NOT NULL DEFAULT 0,
    ADD COLUMN poll_failures   integer NOT NULL DEFAULT 0,  -- consecutive failed polls (backoff)
    ADD COLUMN last_poll_error text,
    ADD COLUMN last_event_at   timestamptz,       -- when trackctl last recorded a new event
    ADD COLUMN stale_at        timestamptz,       -- set: no news for too long, no longer polled
    ADD CONSTRAINT tracking_poll_state_assigned CHECK (
        order_id IS NOT NULL OR (claimed_until IS NULL AND last_polled_at IS NULL
                                 AND last_event_at IS NULL AND stale_at IS NULL)),
    ADD CONSTRAINT tracking_poll_counts CHECK (poll_count >= 0 AND poll_failures >= 0),
    ADD CONSTRAINT tracking_poll_error_length CHECK (length(last_poll_error) <= 500);

-- Claims of due shipments walk this index from the left: it holds only shipments that are
-- still polled, so its size follows the open shipments, not the history.
CREATE INDEX tracking_poll_due ON sequencing.tracking (freightcarrier_id, next_poll_at, id)
    WHERE status NOT IN ('delivered', 'returned', 'cancelled') AND stale_at IS NULL;

-- Stale, still open shipments (health, status), and the quiet ones the stale sweep looks at.
CREATE INDEX tracking_stale ON sequencing.tracking (freightcarrier_id)
    WHERE stale_at IS NOT NULL AND status NOT IN ('delivered', 'returned', 'cancelled');
CREATE INDEX tracking_quiet ON sequencing.tracking (freightcarrier_id, (coalesce(last_event_at, assigned_at)))
    WHERE status NOT IN ('delivered', 'returned', 'cancelled') AND stale_at IS NULL;

-- Event history: each carrier event once per shipment (dedupe key = the carrier's identity of
-- the event), manual changes as events of their own. status NULL = a carrier status trackctl
-- does not know; raw_status keeps what the carrier said.
CREATE TABLE sequencing.tracking_event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shipment_id bigint NOT NULL REFERENCES sequencing.tracking (id),
    dedupe_key  text NOT NULL CONSTRAINT tracking_event_key_length CHECK (length(dedupe_key) BETWEEN 1 AND 300),
    source      text NOT NULL CONSTRAINT tracking_event_source CHECK (source IN ('carrier', 'manual')),
    occurred_at timestamptz NOT NULL,
    status      text REFERENCES sequencing.status (key),
    raw_status  text NOT NULL CONSTRAINT tracking_event_raw_length CHECK (length(raw_status) BETWEEN 1 AND 200),
    description text CONSTRAINT tracking_event_description_length CHECK (length(description) <= 2000),
    location    text CONSTRAINT tracking_event_location_length CHECK (length(location) <= 500),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tracking_event_once UNIQUE (shipment_id, dedupe_key)
);

CREATE INDEX tracking_event_timeline ON sequencing.tracking_event (shipment_id, occurred_at);

-- History is appended to, never rewritten.
CREATE FUNCTION sequencing.tracking_event_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tracking events are history and cannot be changed (event %)', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

CREATE TRIGGER tracking_event_immutable
    BEFORE UPDATE ON sequencing.tracking_event
    FOR EACH ROW EXECUTE FUNCTION sequencing.tracking_event_immutable();

-- One call hands a poller the right to make one request: it checks the carrier's 429 block and
-- breaker, takes a concurrency slot and claims one shipment (SKIP LOCKED, with a lease), all in
-- one round trip and one short transaction. Outcomes: ok (slot and shipment held), done (nothing
-- due), busy (every slot leased), blocked (429), open (breaker), half_open (another process is
-- probing). wait_s says how long the caller may wait before asking again.
CREATE FUNCTION sequencing.poll_acquire(
    p_carrier integer, p_holder text, p_lease interval, p_round_start timestamptz, p_all boolean)
RETURNS TABLE (outcome text, wait_s double precision, slot integer, probe boolean,
               shipment_id bigint, code text, order_id text, status text,
               assigned_at timestamptz, poll_count integer)
LANGUAGE plpgsql AS $$
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

-- S10 pools: codes from a serial range a carrier allotted (prefix, 8-digit serial, check digit,
-- country). s10_next is the next serial to generate; it only moves forward.
ALTER TABLE sequencing.pool
    ADD COLUMN s10_prefix  text CONSTRAINT pool_s10_prefix_format CHECK (s10_prefix ~ '^[A-Z]{2}$'),
    ADD COLUMN s10_country text CONSTRAINT pool_s10_country_format CHECK (s10_country ~ '^[A-Z]{2}$'),
    ADD COLUMN s10_first   integer,
    ADD COLUMN s10_last    integer,
    ADD COLUMN s10_next    integer,
    ADD CONSTRAINT pool_s10_range CHECK (
        (kind <> 's10' AND s10_prefix IS NULL AND s10_country IS NULL AND s10_first IS NULL
            AND s10_last IS NULL AND s10_next IS NULL)
        OR (kind = 's10' AND s10_prefix IS NOT NULL AND s10_country IS NOT NULL
            AND s10_first IS NOT NULL AND s10_last IS NOT NULL AND s10_next IS NOT NULL
            AND 0 <= s10_first AND s10_first <= s10_last AND s10_last <= 99999999
            AND s10_next BETWEEN s10_first AND s10_last + 1));

-- A serial is never handed out twice: the range of a pool is fixed, its next serial only moves
-- forward, and two pools never share serials of the same prefix and country.
CREATE FUNCTION sequencing.pool_s10_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER pool_s10_guard
    BEFORE INSERT OR UPDATE ON sequencing.pool
    FOR EACH ROW EXECUTE FUNCTION sequencing.pool_s10_guard();
