-- 0004_current_query.sql: the text of the running query stays out of the application's
-- reach.
--
-- launch-proxy may put the tenant switch (which carries the tenant's signature) in front
-- of a client's own SQL, in the same Query (docs/tenancy.md), and current_query() returns
-- that whole text. A signature only vouches for the tenant the client already is, but it
-- is a long-lived token, and the database should not hand it to code it does not trust;
-- pg_stat_activity is closed for the same reason (0002).
--
-- Apply as a superuser, after 0003, in one transaction (psql -X -v ON_ERROR_STOP=1 -1).

SET client_min_messages = warning;

REVOKE EXECUTE ON FUNCTION pg_catalog.current_query() FROM PUBLIC, app, app_ro;
GRANT EXECUTE ON FUNCTION pg_catalog.current_query() TO pg_read_all_stats;
