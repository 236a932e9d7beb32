-- 0003_audit_log_partitions.sql: monthly partitions of audit_log, with the tenant
-- policy on each of them, and a default partition so that an insert never fails for
-- want of a partition.
--
-- Partitions are audit_log_yYYYYmMM (UTC months). This migration creates the current
-- month and the three after it; run
--     SELECT launch.create_audit_log_partitions();
-- monthly as a superuser (pg_cron or a systemd timer running psql) to keep three months
-- ahead. A row whose month has no partition yet lands in audit_log_default; when that
-- month's partition is created, its rows are moved out of the default partition.
--
-- Apply as a superuser, after 0002, in one transaction (psql -X -v ON_ERROR_STOP=1 -1).

SET client_min_messages = warning;
SET search_path = public;
SET ROLE launch_owner;

-- Row-level security for one partition. Reads and writes through audit_log obey the
-- parent's policy; these apply when a partition is named directly (the application
-- roles get no privileges on partitions, so that is an operator's mistake away).
CREATE OR REPLACE FUNCTION launch.protect_audit_log_partition(part regclass) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation_policy ON %s', part);
    EXECUTE format('CREATE POLICY tenant_isolation_policy ON %s '
                   'USING (tenant_id = (SELECT launch.current_tenant())) '
                   'WITH CHECK (tenant_id = (SELECT launch.current_tenant()))', part);
END
$$;

CREATE TABLE IF NOT EXISTS public.audit_log_default PARTITION OF public.audit_log DEFAULT;
SELECT launch.protect_audit_log_partition('public.audit_log_default');
-- launch.create_audit_log_partitions() runs as the owner and moves rows out of it.
DROP POLICY IF EXISTS owner_maintenance ON public.audit_log_default;
CREATE POLICY owner_maintenance ON public.audit_log_default TO launch_owner
    USING (true) WITH CHECK (true);

-- Creates the missing partitions for the month of `from_ts` and the `months_ahead`
-- months after it; returns how many it created. A new partition is built beside the
-- table and attached (which locks audit_log only against DDL, not reads or writes),
-- after taking over the month's rows from the default partition.
CREATE OR REPLACE FUNCTION launch.create_audit_log_partitions(
    months_ahead integer DEFAULT 3,
    from_ts timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    month_start timestamp;      -- UTC wall-clock month start
    part text;
    lo text;
    hi text;
    created integer := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead NOT BETWEEN 0 AND 120 OR from_ts IS NULL THEN
        RAISE EXCEPTION 'months_ahead must be 0..120 and from_ts not null'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR m IN 0..months_ahead LOOP
        month_start := date_trunc('month', from_ts AT TIME ZONE 'UTC') + make_interval(months => m);
        part := format('audit_log_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        CONTINUE WHEN to_regclass(format('public.%I', part)) IS NOT NULL;
        lo := quote_literal(to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00');
        hi := quote_literal(to_char(month_start + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
        EXECUTE format('CREATE TABLE public.%I (LIKE public.audit_log INCLUDING DEFAULTS '
                       'INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)', part);
        EXECUTE format('WITH moved AS (DELETE FROM public.audit_log_default '
                       'WHERE performed_at >= %s AND performed_at < %s RETURNING *) '
                       'INSERT INTO public.%I SELECT * FROM moved', lo, hi, part);
        -- The matching CHECK lets ATTACH skip its validation scan.
        EXECUTE format('ALTER TABLE public.%I ADD CONSTRAINT %I '
                       'CHECK (performed_at >= %s AND performed_at < %s)',
                       part, part || '_bounds', lo, hi);
        EXECUTE format('ALTER TABLE public.audit_log ATTACH PARTITION public.%I '
                       'FOR VALUES FROM (%s) TO (%s)', part, lo, hi);
        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', part, part || '_bounds');
        PERFORM launch.protect_audit_log_partition(format('public.%I', part)::regclass);
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

REVOKE ALL ON FUNCTION launch.protect_audit_log_partition(regclass),
    launch.create_audit_log_partitions(integer, timestamptz) FROM PUBLIC;

SELECT launch.create_audit_log_partitions(3);

RESET ROLE;
