-- AGOG sync schema, version 2: edge heartbeats and the conflict log.

-- One row per facility, updated by its agent every few seconds and published with the
-- operational data. It keeps the edge's slot moving on an idle database (a slot only advances
-- past WAL it has decoded) and it is the regional's proof of freshness: `beat_at` as seen in the
-- regional database is when data from the edge last actually arrived, whatever /health says.
CREATE TABLE public.edge_heartbeats (
    facility_id    text PRIMARY KEY,
    tenant_id      text NOT NULL,
    region         text NOT NULL,
    beat_at        timestamptz NOT NULL DEFAULT now(),
    agent_version  text NOT NULL,
    schema_version integer NOT NULL
);
CREATE TRIGGER agog_guard BEFORE INSERT OR UPDATE OR DELETE ON public.edge_heartbeats
    FOR EACH ROW EXECUTE FUNCTION agog_sync.guard_write('facility');
CREATE TRIGGER agog_guard_truncate BEFORE TRUNCATE ON public.edge_heartbeats
    FOR EACH STATEMENT EXECUTE FUNCTION agog_sync.guard_write('facility');

-- Rows that lost a replication conflict: the owner's version was applied, the local one is
-- kept here for audit. Local to each node, never replicated.
CREATE TABLE agog_sync.conflict_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    detected_at   timestamptz NOT NULL DEFAULT now(),
    subscription  text NOT NULL,
    table_name    text NOT NULL,
    key           jsonb NOT NULL,
    losing_row    jsonb,
    resolution    text NOT NULL,
    error         text NOT NULL
);
