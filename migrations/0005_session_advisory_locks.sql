-- 0005_session_advisory_locks.sql: the application roles take advisory locks only for the
-- length of a transaction.
--
-- A session-level advisory lock outlives the transaction that took it. Behind a
-- transaction pooler the session is a server connection that the next transaction, often
-- another tenant's, inherits together with the lock: that tenant would find the lock held
-- "by itself" (pg_try_advisory_lock answers true, pg_advisory_unlock releases it). So the
-- proxy releases every session-level advisory lock when a connection changes tenant, which
-- costs a SELECT per switch. Once these functions are out of the roles' reach, launch-proxy
-- sees it at each server login (tenant::prelude::SESSION_LOCKS_CHECK) and leaves that SELECT
-- out. The transaction-level functions (pg_advisory_xact_lock and friends) stay available
-- and are what the application should use: they end with the transaction, as in every
-- transaction pooler.
--
-- A role that must keep session-level locks (a migration tool that connects directly, say)
-- can be granted them by name; if the roles the proxy logs in as get them back, the proxy
-- releases them again on every switch for connections opened afterwards (a reload or
-- server_lifetime_ms retires the older ones).
--
-- Apply as a superuser, after 0004, in one transaction (psql -X -v ON_ERROR_STOP=1 -1).

SET client_min_messages = warning;

REVOKE EXECUTE ON FUNCTION
    pg_catalog.pg_advisory_lock(bigint),
    pg_catalog.pg_advisory_lock(integer, integer),
    pg_catalog.pg_advisory_lock_shared(bigint),
    pg_catalog.pg_advisory_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_lock(bigint),
    pg_catalog.pg_try_advisory_lock(integer, integer),
    pg_catalog.pg_try_advisory_lock_shared(bigint),
    pg_catalog.pg_try_advisory_lock_shared(integer, integer)
FROM PUBLIC;
