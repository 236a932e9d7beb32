//! Whether a pool's PostgreSQL login is one that row-level security binds. Isolation rests
//! on the policies, and PostgreSQL skips them for a superuser and a role with BYPASSRLS;
//! the owner of a table (and whoever can become it) can turn the table's security off, or
//! is exempt from it unless it is FORCEd; a role that can SET ROLE to any of these is no
//! better. The proxy asks at every server login of
//! a pool tenants run on, and refuses the connection when the answer is not clean, so a
//! grant made by mistake fails the pool loudly instead of opening every tenant's rows.

/// NULL when row-level security binds the login, else why it does not. Reads only the
/// catalogs every role may read, so a server error means the answer is unknown (and the
/// connection is refused as well).
pub const RLS_BYPASS_CHECK: &str = "SELECT CASE \
     WHEN r.rolsuper THEN 'is a superuser' \
     WHEN r.rolbypassrls THEN 'has BYPASSRLS' \
     WHEN EXISTS (SELECT FROM pg_catalog.pg_roles m \
         WHERE (m.rolsuper OR m.rolbypassrls) AND m.oid <> r.oid \
         AND pg_catalog.pg_has_role(r.oid, m.oid, 'MEMBER')) \
       THEN 'can become a role that is a superuser or has BYPASSRLS' \
     ELSE (SELECT 'owns ' || c.oid::pg_catalog.regclass::text \
         || ' (or can become its owner), so it can turn that table''s row level security off' \
         FROM pg_catalog.pg_class c \
         WHERE c.relrowsecurity AND pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER') \
         ORDER BY c.oid LIMIT 1) \
     END FROM pg_catalog.pg_roles r WHERE r.rolname = current_user";
