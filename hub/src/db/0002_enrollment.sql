-- Enrollment: one-time bootstrap tokens, and what an enrolled edge told the hub.

-- A token is shown once, at creation; only its SHA-256 is stored. Single use: used_at is set in
-- the same transaction that records the enrollment.
CREATE TABLE agog_hub.bootstrap_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    facility_id  text NOT NULL,
    tenant_id    text NOT NULL,
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    used_by      text,
    revoked_at   timestamptz
);
CREATE INDEX bootstrap_tokens_facility ON agog_hub.bootstrap_tokens (facility_id);

-- Set by enrollment (NULL for edges added by hand with `hub edges add`).
ALTER TABLE agog_hub.edges
    -- How the regional subscribes to the edge, including the password the edge chose.
    ADD COLUMN replication_conninfo text,
    ADD COLUMN wireguard_public_key text,
    ADD COLUMN agent_version        text,
    -- The address the enrollment request came from.
    ADD COLUMN enrolled_address     text,
    -- The edge's LOGIN REPLICATION role on the master-data publisher.
    ADD COLUMN master_role          text,
    ADD COLUMN token_id             bigint REFERENCES agog_hub.bootstrap_tokens (id);

-- Every enrollment, kept after decommissioning (audit).
CREATE TABLE agog_hub.enrollments (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id      text NOT NULL,
    node             text NOT NULL,
    token_id         bigint NOT NULL REFERENCES agog_hub.bootstrap_tokens (id),
    enrolled_address text,
    agent_version    text,
    enrolled_at      timestamptz NOT NULL DEFAULT now(),
    decommissioned_at timestamptz
);
