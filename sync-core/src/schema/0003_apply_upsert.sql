-- AGOG sync schema, version 3: replication apply that merges instead of failing.
--
-- PostgreSQL stops a subscription when an incoming INSERT finds its key already present
-- (a stale row left from an earlier life of the node, a resync over rows that are already
-- here). In this topology the publisher always owns the rows it sends (edge for operational
-- data, regional for master data), so the incoming row wins: the local row is kept in
-- agog_sync.conflict_log for audit when it differs, removed, and the insert proceeds. The
-- triggers are ENABLE REPLICA, so they fire only for replication (apply and the initial
-- copy, which run with session_replication_role = replica), never for local writes.
--
-- One function per table, with static SQL, so PL/pgSQL caches the plans: the lookup costs an
-- index probe per applied row, not a dynamic query.
DO $install$
DECLARE
    t      text;
    cond   text;
    keyobj text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'products', 'product_prices', 'system_configuration',
                             'orders', 'inventory_transactions', 'production_logs', 'quality_inspections',
                             'inventory_levels', 'facility_status', 'edge_heartbeats']
    LOOP
        SELECT string_agg(format('t.%I = NEW.%I', a.attname, a.attname), ' AND ' ORDER BY k.ord),
               string_agg(format('%L, NEW.%I', a.attname, a.attname), ', ' ORDER BY k.ord)
          INTO cond, keyobj
          FROM pg_index i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = format('public.%I', t)::regclass AND i.indisprimary;
        EXECUTE format($f$
            CREATE FUNCTION agog_sync.%1$I() RETURNS trigger LANGUAGE plpgsql AS $body$
            DECLARE
                old_row jsonb;
            BEGIN
                SELECT to_jsonb(t) INTO old_row FROM public.%2$I t WHERE %3$s;
                IF old_row IS NULL THEN
                    RETURN NEW;
                END IF;
                IF old_row IS DISTINCT FROM to_jsonb(NEW) THEN
                    INSERT INTO agog_sync.conflict_log (subscription, table_name, key, losing_row, resolution, error)
                    VALUES (current_setting('application_name', true), 'public.%2$s', jsonb_build_object(%4$s), old_row,
                            'the publisher owns the row: incoming version applied, local version kept here',
                            'insert_exists');
                END IF;
                DELETE FROM public.%2$I t WHERE %3$s;
                RETURN NEW;
            END
            $body$$f$, 'apply_upsert_' || t, t, cond, keyobj);
        EXECUTE format('CREATE TRIGGER agog_apply_upsert BEFORE INSERT ON public.%I
                        FOR EACH ROW EXECUTE FUNCTION agog_sync.%I()', t, 'apply_upsert_' || t);
        EXECUTE format('ALTER TABLE public.%I ENABLE REPLICA TRIGGER agog_apply_upsert', t);
    END LOOP;
END
$install$;
