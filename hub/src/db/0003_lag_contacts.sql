-- Lag in both directions, per-facility contacts and alert routes, and the monitor's miss count.

-- The monitor counts consecutive failed checks: offline after ceil(offline_after / interval)
-- of them (never one), instead of comparing record times that drift with check latency.
ALTER TABLE agog_hub.edges
    ADD COLUMN consecutive_failed integer NOT NULL DEFAULT 0,
    -- What the edge's own /health said of the regional's slot on it (operational data, up).
    ADD COLUMN edge_slot_lag_bytes      bigint,
    ADD COLUMN edge_slot_retained_bytes bigint,
    ADD COLUMN edge_slot_replay_seconds double precision,
    ADD COLUMN edge_slot_active         boolean,
    ADD COLUMN edge_down_age_seconds    double precision,
    ADD COLUMN edge_report_at           timestamptz,
    -- The latest lag sample (up = edge -> regional operational data, down = master data -> edge).
    ADD COLUMN lag_up_bytes       bigint,
    ADD COLUMN lag_up_seconds     double precision,
    ADD COLUMN lag_down_bytes     bigint,
    ADD COLUMN lag_down_seconds   double precision,
    -- WAL the edge keeps for the regional (its disk), and the master keeps for the edge.
    ADD COLUMN retained_wal_bytes    bigint,
    ADD COLUMN master_retained_bytes bigint,
    ADD COLUMN lag_sampled_at     timestamptz,
    -- Lag alerting: consecutive samples over / under the thresholds, the open lag incident.
    ADD COLUMN lag_over_count  integer NOT NULL DEFAULT 0,
    ADD COLUMN lag_under_count integer NOT NULL DEFAULT 0,
    ADD COLUMN lag_incident_id bigint;

-- Bounded lag history (pruned by the sampler to [lag] history_hours).
CREATE TABLE agog_hub.lag_samples (
    facility_id    text NOT NULL REFERENCES agog_hub.edges (facility_id) ON DELETE CASCADE,
    sampled_at     timestamptz NOT NULL,
    direction      text NOT NULL CHECK (direction IN ('up', 'down')),
    lag_bytes      bigint,
    lag_seconds    double precision,
    retained_bytes bigint,
    PRIMARY KEY (facility_id, direction, sampled_at)
);
CREATE INDEX lag_samples_time ON agog_hub.lag_samples (sampled_at);

-- An incident is an outage (offline) or a lag episode; `detail` is what the alert says.
ALTER TABLE agog_hub.incidents
    ADD COLUMN kind   text NOT NULL DEFAULT 'offline' CHECK (kind IN ('offline', 'lag')),
    ADD COLUMN detail text;

-- The people of one facility. SMS goes to those who opted in, the voice call to the primary
-- contact only, email to every contact with an address; in addition to each channel's own
-- recipient from hub.toml (the operations team).
CREATE TABLE agog_hub.contacts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id text NOT NULL REFERENCES agog_hub.edges (facility_id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> ''),
    phone       text CHECK (phone ~ '^\+[1-9][0-9]{1,14}$'),
    email       text,
    sms_opt_in  boolean NOT NULL DEFAULT false,
    is_primary  boolean NOT NULL DEFAULT false,
    UNIQUE (facility_id, name),
    CHECK (NOT sms_opt_in OR phone IS NOT NULL)
);
CREATE UNIQUE INDEX contacts_one_primary ON agog_hub.contacts (facility_id) WHERE is_primary;

-- A facility's own webhook (Slack, Teams) or PagerDuty routing key for a configured channel,
-- used in addition to the channel's own target.
CREATE TABLE agog_hub.facility_routes (
    facility_id text NOT NULL REFERENCES agog_hub.edges (facility_id) ON DELETE CASCADE,
    channel     text NOT NULL,
    target      text NOT NULL,
    PRIMARY KEY (facility_id, channel, target)
);

-- One outbox row per recipient: '' is the channel's own target from hub.toml.
ALTER TABLE agog_hub.alerts
    ADD COLUMN recipient text NOT NULL DEFAULT '',
    DROP CONSTRAINT alerts_event_check,
    ADD CONSTRAINT alerts_event_check CHECK (event IN ('offline', 'escalated', 'recovered', 'lag', 'lag_cleared')),
    DROP CONSTRAINT alerts_incident_id_event_channel_key,
    ADD CONSTRAINT alerts_once UNIQUE (incident_id, event, channel, recipient);
CREATE INDEX alerts_recent ON agog_hub.alerts (created_at DESC);
