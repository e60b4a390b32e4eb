-- 0001: status model, pools, carriers and the tracking table with its invariants.
-- The source design's table sequencing.tracking (id, tracking_id, order_id, freightcarrier_id,
-- status, shipping_date) keeps its name and columns; trackctl adds pool_id, parcel, assigned_at.

CREATE TABLE sequencing.status (
    key      text PRIMARY KEY,
    label    text NOT NULL UNIQUE,      -- Portuguese label, as in the source designs
    terminal boolean NOT NULL,          -- terminal shipments are never polled again
    position smallint NOT NULL UNIQUE   -- display order
);

INSERT INTO sequencing.status (key, label, terminal, position) VALUES
    ('pending',              'Pedido recebido',                   false, 1),
    ('in_transit',           'Em trânsito',                       false, 2),
    ('out_for_delivery',     'Saiu para entrega',                 false, 3),
    ('failed_attempt',       'Tentativa de entrega sem sucesso',  false, 4),
    ('available_for_pickup', 'Aguardando retirada',               false, 5),
    ('exception',            'Ocorrência no transporte',          false, 6),
    ('delivered',            'Entregue',                          true,  7),
    ('returned',             'Devolvido ao remetente',            true,  8),
    ('cancelled',            'Cancelado',                         true,  9);

CREATE TABLE sequencing.pool (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL UNIQUE CONSTRAINT pool_name_format CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,31}$'),
    kind       text NOT NULL DEFAULT 'uuid' CONSTRAINT pool_kind_known CHECK (kind IN ('uuid', 's10')),
    target     integer NOT NULL DEFAULT 200 CONSTRAINT pool_target_range CHECK (target BETWEEN 0 AND 10000000),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO sequencing.pool (name, kind, target) VALUES ('default', 'uuid', 200);

CREATE TABLE sequencing.carrier (
    id         integer PRIMARY KEY CONSTRAINT carrier_id_positive CHECK (id > 0),  -- freightcarrier_id
    name       text NOT NULL UNIQUE CONSTRAINT carrier_name_format CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    pool_id    integer NOT NULL REFERENCES sequencing.pool (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sequencing.tracking (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tracking_id       text NOT NULL CONSTRAINT tracking_code_unique UNIQUE,
    pool_id           integer NOT NULL REFERENCES sequencing.pool (id),
    order_id          text,
    freightcarrier_id integer REFERENCES sequencing.carrier (id),
    parcel            integer,
    status            text REFERENCES sequencing.status (key),
    assigned_at       timestamptz,
    shipping_date     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- A code is either wholly free or wholly assigned: never an order without a carrier.
    CONSTRAINT tracking_assignment_complete CHECK (
        (order_id IS NULL AND freightcarrier_id IS NULL AND parcel IS NULL
            AND status IS NULL AND assigned_at IS NULL)
        OR (order_id IS NOT NULL AND freightcarrier_id IS NOT NULL AND parcel IS NOT NULL
            AND status IS NOT NULL AND assigned_at IS NOT NULL)),
    CONSTRAINT tracking_order_id_format CHECK (
        order_id IS NULL OR (length(order_id) BETWEEN 1 AND 64 AND order_id !~ '[[:cntrl:]]')),
    CONSTRAINT tracking_parcel_range CHECK (parcel IS NULL OR parcel BETWEEN 1 AND 999)
);

-- One code per (order, carrier, parcel number).
CREATE UNIQUE INDEX tracking_one_code_per_parcel
    ON sequencing.tracking (order_id, freightcarrier_id, parcel) WHERE order_id IS NOT NULL;

-- Claims scan only free codes, so their cost does not grow with assigned history.
CREATE INDEX tracking_free ON sequencing.tracking (pool_id, id) WHERE order_id IS NULL;

-- Once assigned, a code stays with its order: it is never re-assigned, freed or deleted.
CREATE FUNCTION sequencing.tracking_keep_assignment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'tracking code % is assigned to order % and cannot be deleted',
            OLD.tracking_id, OLD.order_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.order_id IS DISTINCT FROM OLD.order_id
       OR NEW.freightcarrier_id IS DISTINCT FROM OLD.freightcarrier_id
       OR NEW.parcel IS DISTINCT FROM OLD.parcel
       OR NEW.tracking_id IS DISTINCT FROM OLD.tracking_id THEN
        RAISE EXCEPTION 'tracking code % is already assigned to order %',
            OLD.tracking_id, OLD.order_id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

-- WHEN keeps the trigger off the hot path: claiming a free code never calls it.
CREATE TRIGGER tracking_keep_assignment_update
    BEFORE UPDATE ON sequencing.tracking
    FOR EACH ROW WHEN (OLD.order_id IS NOT NULL)
    EXECUTE FUNCTION sequencing.tracking_keep_assignment();

CREATE TRIGGER tracking_keep_assignment_delete
    BEFORE DELETE ON sequencing.tracking
    FOR EACH ROW WHEN (OLD.order_id IS NOT NULL)
    EXECUTE FUNCTION sequencing.tracking_keep_assignment();
