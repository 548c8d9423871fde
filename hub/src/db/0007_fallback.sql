-- Cloud fallback: a destroyed facility works from a workspace in the regional database until a
-- rebuilt edge takes everything back (ARCHITECTURE.md, "Cloud fallback").

-- One row per fallback of a facility, from activation to the restore; kept afterwards.
-- `phase` is where the hub's driver is; every phase's work is idempotent, so an interrupted
-- step is done again by the next pass (any replica, or the CLI).
CREATE TABLE agog_hub.fallbacks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id          text NOT NULL,
    tenant_id            text NOT NULL,
    display_name         text NOT NULL,
    phase                text NOT NULL CHECK (phase IN ('activating', 'active', 'restoring', 'read_only',
                                                        'handing_over', 'closing', 'restored')),
    reason               text NOT NULL,
    expected_duration    text NOT NULL,
    -- Workers told by email (empty: the email channel's own recipients).
    notify               text[] NOT NULL DEFAULT '{}',
    activated_by         text NOT NULL,
    activated_at         timestamptz NOT NULL DEFAULT now(),
    -- The newest change from the dead edge seen in the regional ("all data is current as of").
    last_data_at         timestamptz,
    workspace_role       text NOT NULL,
    -- The dead edge's node; the rebuilt edge's node once it enrolled.
    old_node             text NOT NULL,
    restore_node         text,
    restore_requested_by text,
    restore_requested_at timestamptz,
    restoring_since      timestamptz,
    read_only_at         timestamptz,
    -- The regional's WAL position right after the ownership override was deleted: the rebuilt
    -- edge owns the facility once its restore subscription has applied past it.
    handover_lsn         pg_lsn,
    restored_at          timestamptz,
    notified_active_at   timestamptz,
    notified_restored_at timestamptz,
    -- What the driver last waited for or failed on (shown by `hub fallback status`).
    waiting_for          text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- At most one open fallback per facility.
CREATE UNIQUE INDEX fallbacks_open ON agog_hub.fallbacks (facility_id) WHERE phase <> 'restored';

-- Every step, with who and when.
CREATE TABLE agog_hub.fallback_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fallback_id bigint NOT NULL REFERENCES agog_hub.fallbacks (id),
    facility_id text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    step        text NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX fallback_log_fallback ON agog_hub.fallback_log (fallback_id, id);

-- Operators who may activate a fallback and issue restore tokens. `key_sha256` is the hash of
-- their API key (shown once by `hub fallback grant`).
CREATE TABLE agog_hub.fallback_operators (
    operator   text PRIMARY KEY CHECK (operator ~ '^[A-Za-z0-9._@+-]{1,100}$'),
    key_sha256 text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    granted_by text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now()
);

-- A restore token enrolls the rebuilt edge of a facility in fallback, and nothing else.
ALTER TABLE agog_hub.bootstrap_tokens
    ADD COLUMN purpose text NOT NULL DEFAULT 'enroll' CHECK (purpose IN ('enroll', 'restore'));
