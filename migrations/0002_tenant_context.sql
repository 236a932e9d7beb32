-- 0002_tenant_context.sql: the signed tenant context and the row-level-security
-- policies built on it (docs/tenancy.md).
--
-- Before a client's statements run on a server connection, launch-proxy sends
--     SET app.tenant_id = '<ULID or empty>'; SET app.tenant_sig = '<hex or empty>'
-- where app.tenant_sig is the lowercase hex HMAC-SHA256 of the tenant id (UTF-8) under
-- the proxy's `tenant.signing_key` (hex-decoded). A client can change these settings
-- with dynamic SQL the proxy cannot see (set_config() in a DO block or a function), so
-- the policies never read app.tenant_id directly: they call launch.current_tenant(),
-- which returns the tenant only when the signature verifies against the key kept in
-- launch_private.signing_keys, and NULL otherwise (no row matches NULL: fail closed).
--
-- Apply as a superuser, after 0001, in one transaction (psql -X -v ON_ERROR_STOP=1 -1).

SET client_min_messages = warning;
SET search_path = public;

-- ---------------------------------------------------------------------------
-- Privileges only a superuser can take away.
-- ---------------------------------------------------------------------------
DO $$
BEGIN
    -- No persistent or temporary objects of the application roles: a pooled server
    -- connection passes from tenant to tenant, and anything a tenant could create
    -- (a temp table, a function in public) would be seen by the next one. An object
    -- owner also escapes row-level security on it.
    EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC, app, app_ro',
                   current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC, app, app_ro;

-- Every session of a role may read the query text of the role's other sessions. All
-- tenants share the server role `app`, and the proxy's prelude carries the tenant's
-- signature, so another tenant could copy it from pg_stat_activity and replay it with
-- set_config(). Only monitoring roles (pg_read_all_stats, pg_monitor) keep access.
REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC, app, app_ro;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC, app, app_ro;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer)
    FROM PUBLIC, app, app_ro;
GRANT SELECT ON pg_catalog.pg_stat_activity TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_get_backend_activity(integer) TO pg_read_all_stats;

-- The proxy prepares statements on shared server sessions under its own names; a tenant
-- that could list them (pg_prepared_statements) would read other tenants' query texts and
-- learn names to DEALLOCATE and re-PREPARE with code of its own. The names are random per
-- proxy process as well; closing the listing makes them unguessable from inside a session.
REVOKE SELECT ON pg_catalog.pg_prepared_statements FROM PUBLIC, app, app_ro;
REVOKE EXECUTE ON FUNCTION pg_catalog.pg_prepared_statement() FROM PUBLIC, app, app_ro;

SET ROLE launch_owner;

-- ---------------------------------------------------------------------------
-- The signing key. Stored as the two padded HMAC blocks (key XOR 0x36..., key XOR
-- 0x5c... over 64 bytes), which is all HMAC-SHA256 needs; knowing them is as good
-- as knowing the key, so the table is readable by its owner only. Two slots make
-- rotation possible without an outage: 'current' and, while proxies still sign
-- with it, 'previous'.
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS launch_private.signing_keys (
    slot        text PRIMARY KEY CHECK (slot IN ('current', 'previous')),
    inner_pad   bytea NOT NULL CHECK (length(inner_pad) = 64),
    outer_pad   bytea NOT NULL CHECK (length(outer_pad) = 64),
    -- First 16 hex digits of sha256(key): tells which key is where, reveals nothing.
    fingerprint text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON launch_private.signing_keys FROM PUBLIC;

-- Provisions `key_hex` (the proxy's tenant.signing_key: hex, at least 32 bytes) as the
-- current key. The key it replaces stays valid as 'previous' unless keep_previous is
-- false (a leaked key); setting the current key again changes nothing. Returns the
-- key's fingerprint. Owner (and superuser) only.
CREATE OR REPLACE FUNCTION launch.set_signing_key(key_hex text, keep_previous boolean DEFAULT true)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k bytea;
    ipad bytea;
    opad bytea;
    fp text;
BEGIN
    IF key_hex IS NULL OR key_hex !~ '^([0-9A-Fa-f]{2})+$' THEN
        RAISE EXCEPTION 'signing key must be an even number of hex digits'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    k := decode(key_hex, 'hex');
    IF length(k) < 32 THEN
        RAISE EXCEPTION 'signing key must be at least 32 bytes (64 hex digits), got % bytes',
            length(k) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    fp := left(encode(sha256(k), 'hex'), 16);
    -- HMAC (RFC 2104): a key longer than the 64-byte block is hashed first, then the
    -- key is zero-padded to the block.
    IF length(k) > 64 THEN
        k := sha256(k);
    END IF;
    k := k || decode(repeat('00', 64 - length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0..63 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);   -- 0x36
        opad := set_byte(opad, i, get_byte(k, i) # 92);   -- 0x5c
    END LOOP;

    LOCK TABLE launch_private.signing_keys IN EXCLUSIVE MODE;
    IF EXISTS (SELECT 1 FROM launch_private.signing_keys
               WHERE slot = 'current' AND inner_pad = ipad) THEN
        RETURN fp;
    END IF;
    DELETE FROM launch_private.signing_keys WHERE slot = 'previous';
    IF keep_previous THEN
        UPDATE launch_private.signing_keys SET slot = 'previous' WHERE slot = 'current';
    ELSE
        DELETE FROM launch_private.signing_keys;
    END IF;
    INSERT INTO launch_private.signing_keys (slot, inner_pad, outer_pad, fingerprint)
        VALUES ('current', ipad, opad, fp);
    RETURN fp;
END
$$;

-- Ends a rotation: the previous key stops being accepted. Returns whether there was one.
CREATE OR REPLACE FUNCTION launch.retire_previous_signing_key() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM launch_private.signing_keys WHERE slot = 'previous';
    RETURN FOUND;
END
$$;

-- Which keys are accepted (never the key itself).
CREATE OR REPLACE FUNCTION launch.signing_key_status()
RETURNS TABLE (slot text, fingerprint text, set_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT k.slot, k.fingerprint, k.set_at FROM launch_private.signing_keys k ORDER BY k.slot;
$$;

-- ---------------------------------------------------------------------------
-- The tenant of the current statement: app.tenant_id when it is a ULID and
-- app.tenant_sig is its HMAC under an accepted key; NULL otherwise (no tenant, empty,
-- malformed, unsigned, forged, or no key provisioned).
--
-- The signature is compared after hashing both sides once more: SQL has no
-- constant-time comparison, and a timing difference of the byte comparison then
-- depends on hashes the caller cannot steer, not on the expected signature.
-- Policies call it as (SELECT launch.current_tenant()) so that it runs once per
-- statement (an InitPlan), not once per row.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION launch.current_tenant() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid text := current_setting('app.tenant_id', true);
    sig text := current_setting('app.tenant_sig', true);
BEGIN
    -- Checked first and in this order (SQL would not promise the order of an AND):
    -- decode() must never see a signature that is not hex.
    IF NOT coalesce(tid ~ '^[0-7][0-9A-HJKMNP-TV-Z]{25}$' AND sig ~ '^[0-9a-f]{64}$', false) THEN
        RETURN NULL;
    END IF;
    PERFORM 1
    FROM launch_private.signing_keys k
    WHERE sha256(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(tid, 'UTF8'))))
        = sha256(decode(sig, 'hex'));
    IF FOUND THEN
        RETURN tid;
    END IF;
    RETURN NULL;
END
$$;

-- The status of tenant `id` ('active', 'inactive', 'suspended'), NULL when there is
-- no such tenant. launch-proxy calls it at login, with no tenant set, to refuse
-- tenants that are not active; it reads past row-level security (policy
-- tenants_owner_lookup below) and returns nothing but the status.
CREATE OR REPLACE FUNCTION launch.tenant_status(id text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.status::text FROM public.tenants t WHERE t.id = $1;
$$;

-- ---------------------------------------------------------------------------
-- Policies: one per table, for every role (the owner included: FORCE), for reads
-- (USING) and writes (WITH CHECK).
-- ---------------------------------------------------------------------------
DROP POLICY IF EXISTS tenant_isolation_policy ON public.tenants;
CREATE POLICY tenant_isolation_policy ON public.tenants
    USING (id = (SELECT launch.current_tenant()))
    WITH CHECK (id = (SELECT launch.current_tenant()));
-- launch.tenant_status() runs as the owner and must see every tenant's status.
DROP POLICY IF EXISTS tenants_owner_lookup ON public.tenants;
CREATE POLICY tenants_owner_lookup ON public.tenants FOR SELECT TO launch_owner
    USING (true);

DROP POLICY IF EXISTS tenant_isolation_policy ON public.base_entity;
CREATE POLICY tenant_isolation_policy ON public.base_entity
    USING (tenant_id = (SELECT launch.current_tenant()))
    WITH CHECK (tenant_id = (SELECT launch.current_tenant()));

DROP POLICY IF EXISTS tenant_isolation_policy ON public.audit_log;
CREATE POLICY tenant_isolation_policy ON public.audit_log
    USING (tenant_id = (SELECT launch.current_tenant()))
    WITH CHECK (tenant_id = (SELECT launch.current_tenant()));

-- Rows written in a tenant's session belong to that tenant unless it says otherwise.
-- The default copies the unverified setting (cheap, evaluated per row); WITH CHECK
-- above accepts the row only if that is the signed tenant. No tenant: NULL, refused.
ALTER TABLE public.base_entity
    ALTER COLUMN tenant_id SET DEFAULT nullif(current_setting('app.tenant_id', true), '');
ALTER TABLE public.audit_log
    ALTER COLUMN tenant_id SET DEFAULT nullif(current_setting('app.tenant_id', true), '');

-- ---------------------------------------------------------------------------
-- Checks that the application roles cannot get around the policies. Returns one row
-- per problem, none when all is well; launch-proxy or an operator calls it, e.g.
--     SELECT * FROM launch.check_app_roles();
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION launch.check_app_roles(role_names name[] DEFAULT ARRAY['app', 'app_ro']::name[])
RETURNS TABLE (role_name name, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted name;
    r pg_roles%ROWTYPE;
    obj text;
    keys CONSTANT oid := 'launch_private.signing_keys'::regclass;
BEGIN
    FOREACH wanted IN ARRAY role_names LOOP
        role_name := wanted;
        SELECT * INTO r FROM pg_roles WHERE rolname = wanted;
        IF NOT FOUND THEN
            problem := 'role does not exist';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF r.rolsuper THEN
            problem := 'is a superuser (not subject to row-level security)';
            RETURN NEXT;
        END IF;
        IF r.rolbypassrls THEN
            problem := 'has BYPASSRLS';
            RETURN NEXT;
        END IF;
        IF r.rolcreaterole THEN
            problem := 'has CREATEROLE (can grant itself other roles)';
            RETURN NEXT;
        END IF;
        IF r.rolreplication THEN
            problem := 'has REPLICATION (can stream all data)';
            RETURN NEXT;
        END IF;

        -- Roles it can act as: their attributes and objects count as its own.
        FOR obj IN
            SELECT format('is a member of %I, which %s', m.rolname, concat_ws(', ',
                       CASE WHEN m.rolsuper THEN 'is a superuser' END,
                       CASE WHEN m.rolbypassrls THEN 'has BYPASSRLS' END,
                       CASE WHEN m.rolcreaterole THEN 'has CREATEROLE' END,
                       CASE WHEN m.rolreplication THEN 'has REPLICATION' END,
                       CASE WHEN m.rolname = 'launch_owner' THEN 'owns the tenant tables' END,
                       CASE WHEN m.rolname IN ('pg_read_server_files', 'pg_write_server_files',
                                               'pg_execute_server_program')
                            THEN 'reaches the server''s files' END,
                       CASE WHEN m.rolname IN ('pg_read_all_data', 'pg_write_all_data')
                            THEN 'reaches every table, the signing key included' END))
            FROM pg_roles m
            WHERE m.oid <> r.oid
              AND pg_has_role(r.oid, m.oid, 'MEMBER')
              AND (m.rolsuper OR m.rolbypassrls OR m.rolcreaterole OR m.rolreplication
                   OR m.rolname IN ('launch_owner', 'pg_read_server_files',
                                    'pg_write_server_files', 'pg_execute_server_program',
                                    'pg_read_all_data', 'pg_write_all_data'))
            ORDER BY m.rolname
        LOOP
            problem := obj;
            RETURN NEXT;
        END LOOP;

        -- Objects it owns in this database (an owner can disable row-level security),
        -- directly or through a role it belongs to: one row per kind.
        FOR obj IN
            SELECT format('owns %s %s: %s%s', count(*), kind,
                          string_agg(name, ', ' ORDER BY name) FILTER (WHERE rn <= 5),
                          CASE WHEN count(*) > 5 THEN ', ...' ELSE '' END)
            FROM (
                SELECT kind, name, row_number() OVER (PARTITION BY kind ORDER BY name) AS rn
                FROM (
                    SELECT 'relation(s)' AS kind, c.oid::regclass::text AS name
                    FROM pg_class c
                    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
                      AND c.relnamespace NOT IN ('pg_catalog'::regnamespace,
                                                 'information_schema'::regnamespace)
                      AND pg_has_role(r.oid, c.relowner, 'MEMBER')
                    UNION ALL
                    SELECT 'function(s)', p.oid::regprocedure::text
                    FROM pg_proc p
                    WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace,
                                                 'information_schema'::regnamespace)
                      AND pg_has_role(r.oid, p.proowner, 'MEMBER')
                    UNION ALL
                    SELECT 'schema(s)', quote_ident(n.nspname)
                    FROM pg_namespace n
                    WHERE pg_has_role(r.oid, n.nspowner, 'MEMBER')
                    UNION ALL
                    SELECT 'type(s)', t.oid::regtype::text
                    FROM pg_type t
                    WHERE t.typnamespace NOT IN ('pg_catalog'::regnamespace,
                                                 'information_schema'::regnamespace)
                      AND t.typrelid = 0 AND t.typelem = 0
                      AND pg_has_role(r.oid, t.typowner, 'MEMBER')
                ) owned
                -- A superuser owns everything in effect; reported above.
                WHERE NOT r.rolsuper
            ) o
            GROUP BY kind
            ORDER BY kind
        LOOP
            problem := obj;
            RETURN NEXT;
        END LOOP;

        IF has_database_privilege(r.oid, current_database(), 'CREATE') THEN
            problem := format('may create schemas in database %I', current_database());
            RETURN NEXT;
        END IF;
        IF has_database_privilege(r.oid, current_database(), 'TEMPORARY') THEN
            problem := format('may create temporary tables in database %I (they outlive a pooled transaction)',
                              current_database());
            RETURN NEXT;
        END IF;
        FOR obj IN
            SELECT quote_ident(n.nspname) FROM pg_namespace n
            WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
              AND has_schema_privilege(r.oid, n.oid, 'CREATE')
            ORDER BY n.nspname
        LOOP
            problem := format('may create objects in schema %s', obj);
            RETURN NEXT;
        END LOOP;

        IF has_schema_privilege(r.oid, 'launch_private', 'USAGE')
           OR has_table_privilege(r.oid, keys, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE') THEN
            problem := 'can reach the signing key (schema launch_private)';
            RETURN NEXT;
        END IF;
        FOR obj IN
            SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.oid IN ('launch.set_signing_key(text, boolean)'::regprocedure,
                            'launch.retire_previous_signing_key()'::regprocedure,
                            'launch.signing_key_status()'::regprocedure)
              AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
            ORDER BY 1
        LOOP
            problem := format('may execute the owner-only function %s', obj);
            RETURN NEXT;
        END LOOP;

        IF pg_has_role(r.oid, 'pg_read_all_stats', 'MEMBER')
           OR has_table_privilege(r.oid, 'pg_catalog.pg_stat_activity', 'SELECT')
           OR has_function_privilege(r.oid, 'pg_catalog.pg_stat_get_activity(integer)', 'EXECUTE')
           OR has_function_privilege(r.oid, 'pg_catalog.pg_stat_get_backend_activity(integer)',
                                     'EXECUTE') THEN
            problem := 'can read other sessions'' queries, which carry their tenant signatures '
                       '(pg_stat_activity)';
            RETURN NEXT;
        END IF;
        FOR obj IN
            SELECT c.oid::regclass::text FROM pg_class c
            WHERE c.relname = 'pg_stat_statements' AND has_table_privilege(r.oid, c.oid, 'SELECT')
        LOOP
            problem := format('can read %s, which may hold other sessions'' tenant signatures', obj);
            RETURN NEXT;
        END LOOP;

        -- What a role may do to its own sessions reaches every tenant's (0006).
        IF EXISTS (SELECT FROM pg_db_role_setting s
                   WHERE s.setrole = r.oid
                     AND s.setdatabase IN (0, (SELECT d.oid FROM pg_database d
                                               WHERE d.datname = current_database()))) THEN
            problem := 'has settings of its own (ALTER ROLE ... SET), which every tenant''s '
                       'server connections start with';
            RETURN NEXT;
        END IF;
        FOR obj IN
            SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'pg_catalog'::regnamespace
              AND (p.proname IN ('pg_cancel_backend', 'pg_terminate_backend', 'setseed',
                                 'loread', 'lowrite')
                   OR p.proname LIKE 'lo\_%')
              AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
            ORDER BY 1
        LOOP
            problem := format('may execute %s, which reaches other tenants'' sessions or objects', obj);
            RETURN NEXT;
        END LOOP;
        IF has_language_privilege(r.oid, 'plpgsql', 'USAGE') THEN
            problem := 'may run DO blocks (USAGE on plpgsql), whose statements the proxy''s guard '
                       'does not see';
            RETURN NEXT;
        END IF;

        -- Tables it can use that do not force row-level security.
        FOR obj IN
            SELECT c.oid::regclass::text FROM pg_class c
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND c.relnamespace NOT IN ('pg_catalog'::regnamespace,
                                         'information_schema'::regnamespace,
                                         'launch_private'::regnamespace)
              AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
              AND has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
            ORDER BY 1
        LOOP
            problem := format('has privileges on %s, which does not force row-level security', obj);
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Grants. app writes, app_ro reads; neither owns anything.
--   * tenants: a tenant may read and edit its own row, but not its id or status
--     (a suspended tenant must not re-activate itself); tenants are created and
--     removed by operators.
--   * audit_log is append-only for the application.
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA launch TO app, app_ro;
REVOKE ALL ON public.tenants, public.base_entity, public.audit_log FROM PUBLIC, app, app_ro;
GRANT SELECT ON public.tenants, public.base_entity, public.audit_log TO app, app_ro;
GRANT UPDATE (name, domain, updated_at, updated_by, version, settings) ON public.tenants TO app;
GRANT INSERT, UPDATE, DELETE ON public.base_entity TO app;
GRANT INSERT ON public.audit_log TO app;

REVOKE ALL ON FUNCTION launch.set_signing_key(text, boolean), launch.retire_previous_signing_key(),
    launch.signing_key_status(), launch.current_tenant(), launch.tenant_status(text),
    launch.check_app_roles(name[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION launch.current_tenant(), launch.tenant_status(text),
    launch.check_app_roles(name[]) TO app, app_ro;

RESET ROLE;
