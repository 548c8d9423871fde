-- The dashboard and the read API: operators, their tokens and sessions, and the last /health
-- payload of each edge (slots, subscriptions, tunnel) for the fleet and edge pages.

-- A person (or a script) who may read the fleet. tenant_id NULL: every tenant of this region;
-- otherwise only that tenant's facilities, inventory and alerts.
CREATE TABLE agog_hub.operators (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    tenant_id     text,
    -- Argon2id, PHC string format; NULL: this operator signs in with tokens only.
    password_hash text CHECK (password_hash IS NULL OR password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- Bearer tokens for the read API and the dashboard's token sign-in. Shown once at creation;
-- only the SHA-256 is kept (32 random bytes need no slow hash).
CREATE TABLE agog_hub.operator_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id  bigint NOT NULL REFERENCES agog_hub.operators (id) ON DELETE CASCADE,
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Dashboard sessions: the cookie holds 32 random bytes, the table their SHA-256. A session ends
-- at expires_at (absolute) or after idle_timeout without a request, whichever comes first.
CREATE TABLE agog_hub.operator_sessions (
    id_sha256    text PRIMARY KEY CHECK (id_sha256 ~ '^[0-9a-f]{64}$'),
    operator_id  bigint NOT NULL REFERENCES agog_hub.operators (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX operator_sessions_expiry ON agog_hub.operator_sessions (expires_at);

-- What the edge's /health said last time it answered (kept while it does not answer).
ALTER TABLE agog_hub.edges
    ADD COLUMN last_health    jsonb,
    ADD COLUMN last_health_at timestamptz;
