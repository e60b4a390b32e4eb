-- 0003: the outbox, webhook subscribers and their deliveries, and consumer groups of the events
-- stream. The contract of an event (id, type, timestamp, data) is ../shared/WEBHOOKS.md; the
-- operations side (ordering, retries, leases, retention) is docs/WEBHOOKS-OPERATIONS.md.
--
-- Writers only INSERT into sequencing.outbox, in the transaction of the change itself. One
-- statement trigger then fans the new rows out to the matching webhook subscribers (one
-- delivery row each) and wakes `trackctl events --follow` and `trackctl notify` through
-- NOTIFY, all inside the same transaction: a rolled-back change leaves no event, no delivery
-- and no notification.

-- RFC 3339 in UTC with milliseconds and `Z`, the form of every timestamp in an event body.
CREATE FUNCTION sequencing.rfc3339(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- `evt_` + a ULID-style string in Crockford base32: 10 characters of milliseconds since the epoch
-- (of the transaction, like created_at), then 16 random characters (80 bits). Written as one
-- expression so that PostgreSQL inlines it: a column default evaluated per row of a batch.
-- random() is enough: uniqueness is the job of the unique constraint, not of the generator.
CREATE FUNCTION sequencing.new_event_id() RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT 'evt_'
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 45) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 40) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 35) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 30) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 25) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 20) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 15) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 10) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 5) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((floor(extract(epoch FROM now()) * 1000)::bigint >> 0) & 31)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
        || substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', floor(random() * 32)::integer + 1, 1)
$$;

CREATE TABLE sequencing.outbox (
    -- The cursor order of `trackctl events` and the order of delivery per shipment.
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text NOT NULL DEFAULT sequencing.new_event_id()
                CONSTRAINT outbox_event_id_unique UNIQUE
                CONSTRAINT outbox_event_id_format CHECK (event_id ~ '^evt_[0-9A-HJKMNP-TV-Z]{26}$'),
    type        text NOT NULL CONSTRAINT outbox_type_format CHECK (type ~ '^[a-z][a-z_]*(\.[a-z][a-z_]*)+$'),
    -- The shipment the event is about (null for an event about no shipment).
    shipment_id bigint REFERENCES sequencing.tracking (id),
    payload     jsonb NOT NULL CONSTRAINT outbox_payload_object CHECK (jsonb_typeof(payload) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The event body of WEBHOOKS.md, as sent to subscribers and (with `cursor`) printed by
-- `trackctl events`. Built here so that both, and anything reading the table, agree byte for byte.
CREATE FUNCTION sequencing.event_body(o sequencing.outbox) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":' || to_json(o.event_id)::text || ',"type":' || to_json(o.type)::text
        || ',"timestamp":"' || sequencing.rfc3339(o.created_at) || '","data":' || o.payload::text || '}'
$$;

CREATE FUNCTION sequencing.event_line(o sequencing.outbox) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '{"id":' || to_json(o.event_id)::text || ',"type":' || to_json(o.type)::text
        || ',"timestamp":"' || sequencing.rfc3339(o.created_at) || '","data":' || o.payload::text
        || ',"cursor":"' || o.id::text || '"}'
$$;

CREATE TABLE sequencing.webhook_subscriber (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL CONSTRAINT webhook_subscriber_url_unique UNIQUE
                    CONSTRAINT webhook_subscriber_url_format CHECK (url ~ '^https?://[^[:space:][:cntrl:]]+$'
                                                                    AND length(url) <= 2000),
    -- Kept because every delivery is signed with it; trackctl shows it once, when it is made.
    secret          text NOT NULL CONSTRAINT webhook_subscriber_secret_format
                    CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    -- During a rotation the old secret signs too (a second signature) until previous_until.
    previous_secret text CONSTRAINT webhook_subscriber_previous_format
                    CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    previous_until  timestamptz,
    types           text[] CONSTRAINT webhook_subscriber_types_nonempty
                    CHECK (types IS NULL OR (cardinality(types) > 0 AND array_position(types, NULL) IS NULL)),
    -- Seconds before each attempt: [1] after the event, [k+1] after the k-th failed attempt.
    -- Default: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (Standard Webhooks).
    retry_schedule  integer[] NOT NULL DEFAULT '{0,5,300,1800,7200,18000,36000,36000}'
                    CONSTRAINT webhook_subscriber_schedule_valid
                    CHECK (cardinality(retry_schedule) BETWEEN 1 AND 50
                           AND array_position(retry_schedule, NULL) IS NULL
                           AND 0 <= ALL (retry_schedule) AND 31536000 >= ALL (retry_schedule)),
    -- Concurrent requests to this endpoint from one notify process.
    max_in_flight   integer NOT NULL DEFAULT 16 CONSTRAINT webhook_subscriber_in_flight_range
                    CHECK (max_in_flight BETWEEN 1 AND 256),
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_subscriber_disabled_reason CHECK (enabled = (disabled_reason IS NULL)),
    CONSTRAINT webhook_subscriber_rotation CHECK ((previous_secret IS NULL) = (previous_until IS NULL))
);

CREATE TABLE sequencing.webhook_delivery (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id       bigint NOT NULL REFERENCES sequencing.outbox (id) ON DELETE CASCADE,
    subscriber_id   integer NOT NULL REFERENCES sequencing.webhook_subscriber (id) ON DELETE CASCADE,
    shipment_id     bigint,  -- the event's, copied so per-shipment order is checked on this table
    status          text NOT NULL DEFAULT 'pending'
                    CONSTRAINT webhook_delivery_status_known CHECK (status IN ('pending', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CONSTRAINT webhook_delivery_attempts_range CHECK (attempts >= 0),
    -- When pending: when it is due; while a notify process holds it, when that lease ends.
    next_attempt_at timestamptz,
    lease_token     uuid,  -- the notify process holding it, while it does
    last_attempt_at timestamptz,
    last_status     integer,  -- HTTP status of the last attempt (null: timeout, refused, ...)
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- One delivery per (event, subscriber): replays reuse the row.
    CONSTRAINT webhook_delivery_once UNIQUE (outbox_id, subscriber_id),
    CONSTRAINT webhook_delivery_pending_due CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_delivery_done_time CHECK ((status = 'done') = (delivered_at IS NOT NULL)),
    CONSTRAINT webhook_delivery_lease_pending CHECK (lease_token IS NULL OR status = 'pending')
);

-- Claims: the due rows of one subscriber, oldest first.
CREATE INDEX webhook_delivery_due ON sequencing.webhook_delivery (subscriber_id, next_attempt_at, outbox_id)
    WHERE status = 'pending';
-- Per-shipment order: is an earlier event of this shipment still pending for this subscriber?
CREATE INDEX webhook_delivery_shipment_order ON sequencing.webhook_delivery (subscriber_id, shipment_id, outbox_id)
    WHERE status = 'pending';
-- `webhook replay --dead` and the dead count of the dashboard.
CREATE INDEX webhook_delivery_dead ON sequencing.webhook_delivery (subscriber_id) WHERE status = 'dead';

CREATE FUNCTION sequencing.outbox_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM inserted) THEN
        RETURN NULL;  -- an INSERT that matched nothing (an idempotent re-assign) is no event
    END IF;
    INSERT INTO sequencing.webhook_delivery (outbox_id, subscriber_id, shipment_id, next_attempt_at)
    SELECT n.id, s.id, n.shipment_id, now() + make_interval(secs => s.retry_schedule[1])
    FROM inserted n
    JOIN sequencing.webhook_subscriber s ON s.enabled AND (s.types IS NULL OR n.type = ANY (s.types))
    ORDER BY n.id, s.id;
    -- Sent at commit, never for a rolled-back change; one per transaction whatever its size.
    PERFORM pg_notify('trackctl_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_after_insert
    AFTER INSERT ON sequencing.outbox REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION sequencing.outbox_after_insert();

-- Consumer groups: collectors of one group share the stream, each event to one of them.
CREATE TABLE sequencing.event_group (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CONSTRAINT event_group_name_unique UNIQUE
               CONSTRAINT event_group_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    types      text[] CONSTRAINT event_group_types_nonempty
               CHECK (types IS NULL OR (cardinality(types) > 0 AND array_position(types, NULL) IS NULL)),
    -- Every event with an id up to here has been handed out (acknowledged, or in a lease below).
    position   bigint NOT NULL DEFAULT 0 CONSTRAINT event_group_position_range CHECK (position >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- At most 6 collectors per group: a collector holds one of six slots. It is live while its
-- database session holds the slot's advisory lock (key pair 7262005, group id * 8 + slot),
-- which PostgreSQL releases the moment the process dies. The row says who took the slot last.
CREATE TABLE sequencing.event_group_member (
    group_id    integer NOT NULL REFERENCES sequencing.event_group (id) ON DELETE CASCADE,
    slot        smallint NOT NULL CONSTRAINT event_group_member_slot_range CHECK (slot BETWEEN 1 AND 6),
    token       uuid NOT NULL,
    backend_pid integer NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, slot)
);

-- Events handed to a collector and not yet acknowledged: ids in (after_id, last_id] of the
-- group's types. Acknowledging deletes the row; a row whose collector died or whose lease
-- ran out is handed to another collector whole.
CREATE TABLE sequencing.event_group_lease (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_id   integer NOT NULL REFERENCES sequencing.event_group (id) ON DELETE CASCADE,
    after_id   bigint NOT NULL,
    last_id    bigint NOT NULL,
    slot       smallint NOT NULL,
    token      uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    handed_out integer NOT NULL DEFAULT 1,  -- more than 1: its first collector never acknowledged it
    CONSTRAINT event_group_lease_range CHECK (last_id > after_id AND after_id >= 0),
    CONSTRAINT event_group_lease_start_unique UNIQUE (group_id, after_id),
    CONSTRAINT event_group_lease_end_unique UNIQUE (group_id, last_id)
);
