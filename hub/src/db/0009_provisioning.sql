-- Self-service provisioning: one row per requested edge, from the form to its enrollment.
-- Each step after the form (the hardware order, the image, the IT contact's email, the
-- not-enrolled alert) is a job any hub replica may take up (lease), so a restart or a dead
-- replica delays a step but never loses or repeats a finished one.
CREATE TABLE agog_hub.provisioning_requests (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    facility_id       text NOT NULL UNIQUE,
    -- The edge's node name in the topology (24 characters at most, so not always the id).
    node              text NOT NULL UNIQUE,
    tenant_id         text NOT NULL,
    facility_name     text NOT NULL,
    facility_address  text NOT NULL,
    shipping_address  text NOT NULL,
    -- {"mode": "dhcp"} or {"mode": "static", "address", "netmask", "gateway", "dns": []}
    network           jsonb NOT NULL,
    vpn_type          text NOT NULL CHECK (vpn_type IN ('wireguard', 'ipsec', 'openvpn')),
    vpn_endpoint      text NOT NULL,
    hardware_size     text NOT NULL CHECK (hardware_size IN ('small', 'medium', 'large')),
    it_name           text NOT NULL,
    it_email          text NOT NULL,
    it_phone          text NOT NULL,
    requested_by      text NOT NULL,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    token_id          bigint NOT NULL REFERENCES agog_hub.bootstrap_tokens (id),
    -- The edge's config as the image carries it. Holds the bootstrap token until the image is
    -- built, then the token is blanked here (the image and its secret link keep it).
    edge_config       text NOT NULL,
    -- The systemd-networkd file for the box's network (static or DHCP).
    network_config    text NOT NULL,
    -- The secret in the download and setup links mailed to the IT contact.
    setup_key         text NOT NULL UNIQUE,
    order_status      text NOT NULL DEFAULT 'pending' CHECK (order_status IN ('pending', 'sent', 'failed', 'not_configured')),
    order_attempts    integer NOT NULL DEFAULT 0,
    order_detail      text,
    image_status      text NOT NULL DEFAULT 'queued' CHECK (image_status IN ('queued', 'building', 'ready', 'failed')),
    image_progress    text NOT NULL DEFAULT 'waiting for a hub replica',
    image_file        text,
    image_sha256      text,
    image_bytes       bigint,
    image_ready_at    timestamptz,
    email_status      text NOT NULL DEFAULT 'pending' CHECK (email_status IN ('pending', 'sent', 'failed')),
    email_attempts    integer NOT NULL DEFAULT 0,
    email_detail      text,
    not_enrolled_alert_at timestamptz,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_until       timestamptz
);
CREATE INDEX provisioning_due ON agog_hub.provisioning_requests (next_attempt_at);
