-- AGOG sync schema, version 1.
-- Keys are UUIDs (sequences do not replicate). Every replicated table carries its row-filter
-- column(s) in the primary key, which is the replica identity: PostgreSQL refuses UPDATE and
-- DELETE on a filtered publication otherwise, and the guard below keeps them immutable, since an
-- UPDATE that moved a row out of a filter would arrive downstream as a DELETE.

CREATE EXTENSION IF NOT EXISTS vector;

-- Who this node is. One row, written by the reconciler; read by the ownership guard. Never replicated.
CREATE TABLE agog_sync.node_identity (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    node         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('edge', 'regional', 'master')),
    region       text NOT NULL,
    facility_id  text,
    tenant_id    text,
    owns_master  boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Facilities whose operational rows this (regional) node may write locally: the explicit
-- override for disaster fallback. Empty in normal operation.
CREATE TABLE agog_sync.ownership_overrides (
    facility_id  text PRIMARY KEY,
    reason       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- master data (regional owns it)
CREATE TABLE public.customers (
    tenant_id    text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL,
    email        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE public.products (
    tenant_id    text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    sku          text NOT NULL,
    name         text NOT NULL,
    description  text,
    -- 384 dimensions: the size of small sentence-embedding models (all-MiniLM-L6-v2), used for
    -- "find a similar product" at the facility without a round trip to the cloud.
    embedding    vector(384),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, sku)
);

CREATE TABLE public.product_prices (
    tenant_id    text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    product_id   uuid NOT NULL,
    currency     char(3) NOT NULL,
    unit_price   numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    valid_from   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE public.system_configuration (
    tenant_id    text NOT NULL,
    key          text NOT NULL,
    value        jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- ---------------------------------------------------------------- operational data (edge owns it)
CREATE TABLE public.orders (
    facility_id  text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    customer_id  uuid,
    order_number text NOT NULL,
    status       text NOT NULL DEFAULT 'open',
    total        numeric(14, 2) NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, id)
);

CREATE TABLE public.inventory_transactions (
    facility_id  text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    product_id   uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('pick', 'receipt', 'adjustment')),
    quantity     numeric(14, 3) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, id)
);

CREATE TABLE public.production_logs (
    facility_id  text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    line         text NOT NULL,
    product_id   uuid,
    quantity     numeric(14, 3) NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    notes        text,
    PRIMARY KEY (facility_id, id)
);

CREATE TABLE public.quality_inspections (
    facility_id  text NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    text NOT NULL,
    order_id     uuid,
    product_id   uuid,
    result       text NOT NULL CHECK (result IN ('pass', 'fail', 'rework')),
    defects      integer NOT NULL DEFAULT 0,
    inspector    text,
    inspected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (facility_id, id)
);

-- Stock per facility and product. Written by the facility's edge (it knows its picks and
-- receipts first) and published with its operational data; the regional publishes its region's
-- rows on to the other regions. Both filter columns are in the key.
CREATE TABLE public.inventory_levels (
    region       text NOT NULL,
    facility_id  text NOT NULL,
    product_id   uuid NOT NULL,
    tenant_id    text NOT NULL,
    quantity     numeric(14, 3) NOT NULL DEFAULT 0,
    last_updated timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, facility_id, product_id)
);

-- Online/offline and last sync of each facility, kept by the facility's regional hub.
CREATE TABLE public.facility_status (
    region        text NOT NULL,
    facility_id   text NOT NULL,
    tenant_id     text NOT NULL,
    online        boolean NOT NULL DEFAULT false,
    last_sync     timestamptz,
    offline_since timestamptz,
    mode          text NOT NULL DEFAULT 'normal',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, facility_id)
);

-- ---------------------------------------------------------------- ownership guard
-- Local writes are checked against the node's identity: an edge writes only its own facility's
-- operational rows, master data is written only where it is published, a region writes only its
-- own region's status rows. Replication's apply workers run with session_replication_role =
-- replica, so these ordinary (ENABLE ORIGIN) triggers do not fire for them: apply passes.
CREATE FUNCTION agog_sync.guard_write() RETURNS trigger
LANGUAGE plpgsql AS $guard$
DECLARE
    me      agog_sync.node_identity%ROWTYPE;
    scope   text := TG_ARGV[0];
    ok      boolean;
    subject text;
    moved   boolean;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'agog: TRUNCATE of replicated table % is refused', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'TRUNCATE is not replicated; DELETE the rows instead.';
    END IF;
    SELECT * INTO me FROM agog_sync.node_identity;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'agog: this node has no identity yet; refusing % on %', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Let the reconciler run once (edge-agent or hub) before writing.';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- Nested, because a row only has the columns of its own scope.
        moved := NEW.tenant_id IS DISTINCT FROM OLD.tenant_id;
        IF scope = 'facility' THEN
            moved := moved OR NEW.facility_id IS DISTINCT FROM OLD.facility_id;
        ELSIF scope = 'region' THEN
            moved := moved OR NEW.region IS DISTINCT FROM OLD.region;
        END IF;
        IF moved THEN
            RAISE EXCEPTION 'agog: the ownership columns of % never change once a row exists', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Delete the row and insert a new one under the other owner.';
        END IF;
    END IF;
    IF scope = 'facility' THEN
        subject := CASE WHEN TG_OP = 'DELETE' THEN OLD.facility_id ELSE NEW.facility_id END;
        ok := (me.kind = 'edge' AND subject = me.facility_id)
              OR (me.kind = 'regional' AND EXISTS (
                      SELECT 1 FROM agog_sync.ownership_overrides o WHERE o.facility_id = subject));
        subject := 'facility ' || subject;
    ELSIF scope = 'master' THEN
        ok := me.owns_master;
        subject := 'master data';
    ELSIF scope = 'region' THEN
        subject := CASE WHEN TG_OP = 'DELETE' THEN OLD.region ELSE NEW.region END;
        ok := me.kind = 'regional' AND subject = me.region;
        subject := 'region ' || subject;
    ELSE
        RAISE EXCEPTION 'agog: unknown guard scope %', scope;
    END IF;
    IF NOT ok THEN
        RAISE EXCEPTION 'agog: % on % refused: node % (%) does not own rows of %',
                TG_OP, TG_TABLE_NAME, me.node, me.kind, subject
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Write this data on the node that owns it; it arrives here by replication.';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$guard$;

DO $install$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('customers', 'master'), ('products', 'master'), ('product_prices', 'master'),
        ('system_configuration', 'master'),
        ('orders', 'facility'), ('inventory_transactions', 'facility'), ('production_logs', 'facility'),
        ('quality_inspections', 'facility'), ('inventory_levels', 'facility'),
        ('facility_status', 'region')) AS v(tbl, scope)
    LOOP
        EXECUTE format('CREATE TRIGGER agog_guard BEFORE INSERT OR UPDATE OR DELETE ON public.%I
                        FOR EACH ROW EXECUTE FUNCTION agog_sync.guard_write(%L)', t.tbl, t.scope);
        EXECUTE format('CREATE TRIGGER agog_guard_truncate BEFORE TRUNCATE ON public.%I
                        FOR EACH STATEMENT EXECUTE FUNCTION agog_sync.guard_write(%L)', t.tbl, t.scope);
    END LOOP;
END
$install$;
