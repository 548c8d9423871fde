-- The hub's own state, in the regional database (schema agog_hub). Several hub replicas share it.

-- Every edge this region serves, with its monitor state. A replica checks an edge only while
-- it holds the edge's lease, so each edge is checked by one replica at a time.
CREATE TABLE agog_hub.edges (
    facility_id     text PRIMARY KEY,
    node            text NOT NULL UNIQUE,
    tenant_id       text NOT NULL,
    region          text NOT NULL,
    display_name    text NOT NULL,
    health_url      text NOT NULL,
    enrolled_at     timestamptz NOT NULL DEFAULT now(),
    -- monitor
    state           text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'online', 'offline', 'escalated')),
    watched_since   timestamptz NOT NULL DEFAULT now(),
    last_ok_at      timestamptz,
    last_check_at   timestamptz,
    last_error      text,
    last_latency_ms integer,
    consecutive_ok  integer NOT NULL DEFAULT 0,
    offline_since   timestamptz,
    escalations     integer NOT NULL DEFAULT 0,
    incident_id     bigint,
    next_check_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz
);
CREATE INDEX edges_due ON agog_hub.edges (next_check_at);

-- One outage of one facility, from the offline alert to the recovery notice.
CREATE TABLE agog_hub.incidents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id    text NOT NULL REFERENCES agog_hub.edges (facility_id) ON DELETE CASCADE,
    since          timestamptz NOT NULL,
    opened_at      timestamptz NOT NULL DEFAULT now(),
    escalated_at   timestamptz,
    closed_at      timestamptz,
    outage_seconds bigint
);

-- The alert outbox and delivery log. A row is enqueued in the same transaction as the state
-- change that causes it, once (the unique key), and delivered by whichever replica claims it.
CREATE TABLE agog_hub.alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id     bigint NOT NULL REFERENCES agog_hub.incidents (id) ON DELETE CASCADE,
    facility_id     text NOT NULL,
    event           text NOT NULL CHECK (event IN ('offline', 'escalated', 'recovered')),
    channel         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'delivered', 'rejected', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    provider_id     text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (incident_id, event, channel)
);
CREATE INDEX alerts_due ON agog_hub.alerts (status, next_attempt_at);
