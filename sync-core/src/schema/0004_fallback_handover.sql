-- AGOG sync schema, version 4: who owns a facility during a cloud fallback and its restore.
--
-- `agog_sync.ownership_overrides` now means the same thing on every node: a row for a facility
-- says the cloud (the regional) owns its operational rows for now. On the regional it lets the
-- facility's cloud workspace write them (as before). On an edge, where the row arrives with the
-- restore from the regional, it stops the rebuilt edge from writing its own facility's rows
-- until the hub deletes the row on the regional: that DELETE reaches the edge through the same
-- stream as the rows, after all of them, so ownership passes from the regional to the edge
-- with no moment where both, or neither, may write.

CREATE OR REPLACE FUNCTION agog_sync.guard_write() RETURNS trigger
LANGUAGE plpgsql AS $guard$
DECLARE
    me      agog_sync.node_identity%ROWTYPE;
    scope   text := TG_ARGV[0];
    ok      boolean;
    subject text;
    moved   boolean;
    cloud   agog_sync.ownership_overrides%ROWTYPE;
    clouded boolean;
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
        SELECT * INTO cloud FROM agog_sync.ownership_overrides o WHERE o.facility_id = subject;
        clouded := FOUND;
        IF clouded AND me.kind = 'edge' AND subject = me.facility_id THEN
            RAISE EXCEPTION 'agog: % on % refused: facility % is served from its cloud workspace until the restore onto this edge completes (%)',
                    TG_OP, TG_TABLE_NAME, subject, cloud.reason
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Keep working in the cloud workspace; the hub hands the facility back to this edge when every row is here (hub fallback status).';
        END IF;
        ok := (me.kind = 'edge' AND subject = me.facility_id)
              OR (me.kind = 'regional' AND clouded);
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

-- The override travels with the restore: a copy that runs again (a restore subscription made a
-- second time) replaces the row instead of stopping on its key, as for every replicated table.
CREATE FUNCTION agog_sync.apply_upsert_ownership_overrides() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    DELETE FROM agog_sync.ownership_overrides t WHERE t.facility_id = NEW.facility_id;
    RETURN NEW;
END
$body$;
CREATE TRIGGER agog_apply_upsert BEFORE INSERT ON agog_sync.ownership_overrides
    FOR EACH ROW EXECUTE FUNCTION agog_sync.apply_upsert_ownership_overrides();
ALTER TABLE agog_sync.ownership_overrides ENABLE REPLICA TRIGGER agog_apply_upsert;
