-- 0006_shared_role.sql: what a role may do to its own sessions, one tenant could do to the
-- others'.
--
-- Every tenant's transactions run as the same roles (app, app_ro), on server connections
-- that take turns serving tenants. PostgreSQL lets a role signal its own backends, seed the
-- random generator of the session it runs on, and read and write the large objects it owns:
-- behind the proxy, other tenants' backends, sessions and objects. And a DO block runs
-- statements the proxy's statement guard never sees (such as ALTER ROLE CURRENT_USER SET,
-- which every later connection of every tenant would get). The application needs none of
-- these; launch.check_app_roles() reports them if they come back.
--
-- Apply as a superuser, after 0005, in one transaction (psql -X -v ON_ERROR_STOP=1 -1).

SET client_min_messages = warning;

-- Cancel or terminate another tenant's running query (pids from pg_stat_get_backend_idset).
REVOKE EXECUTE ON FUNCTION
    pg_catalog.pg_cancel_backend(integer),
    pg_catalog.pg_terminate_backend(integer, bigint)
FROM PUBLIC;

-- Make random() predictable for the next tenant on the same server connection.
REVOKE EXECUTE ON FUNCTION pg_catalog.setseed(double precision) FROM PUBLIC;

-- Large objects have no row-level security: one tenant could read or remove another's.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::regnamespace
          AND (p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- DO blocks (and plpgsql functions, which the roles cannot create anyway). The owner of
-- the schema's objects keeps it: the migrations create plpgsql functions as launch_owner.
REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC;
GRANT USAGE ON LANGUAGE plpgsql TO launch_owner;
