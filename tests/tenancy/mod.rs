//! Tenant-isolation attack suite: a client of one tenant tries, through the proxy, to read or
//! write another tenant's rows (docs/tenancy.md). Each test has its own PostgreSQL (migrations,
//! a random signing key, tenants T1..T3 with rows) and proxy; after an attempt the attacker's
//! view is compared with the superuser's count of its own rows, and the other tenants' rows
//! with their state before. `PROXY BUG` tests reproduce isolation failures of the proxy as it
//! is: they fail until it is fixed.

use crate::common;
mod admin_console;
mod admin_kill;
mod concurrency;
mod copy_and_failures;
mod env;
mod escapes;
mod rls_login;
mod session_state;
mod state_leaks;
mod wire;

use common::{proxy_config, psql_bin, PgServer, ProxyProcess};
use env::*;
use hmac::{KeyInit, Mac};
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{AsyncMessage, Client, Error, NoTls, Row, SimpleQueryMessage as Msg};
use wire::*;

const T1: &str = "01JBXTENANT1000000000000T1";
const T2: &str = "01JBXTENANT2000000000000T2";
const T3: &str = "01JBXTENANT3000000000000T3";
const ACTOR: &str = "01JBXACT0R00000000000000C1";
/// Rows per tenant in base_entity and in audit_log.
const SEED: usize = 3;
const LIMIT: Duration = Duration::from_secs(30);
/// One server connection: consecutive transactions of different tenants share it.
const SOLO: &str = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                    max_db_connections: 1";
/// A DO block reports what it sees: `seen <base_entity> <audit_log> <current_tenant>`.
const SEEN: &str = "RAISE EXCEPTION 'seen % % %', (SELECT count(*) FROM base_entity), \
                    (SELECT count(*) FROM audit_log), coalesce(launch.current_tenant(), '-');";
const NOTHING: &str = "P0001 seen 0 0 -";
/// The statement guard's refusal.
/// The statement guard's refusal of ALTER ROLE (every tenant logs in as the same role).
const ROLE_GUARD: &str = "42501 permission denied to alter roles through launch-proxy";
/// A DO block of an application role (migrations/0006 takes plpgsql away from them).
const NO_DO: &str = "42501 permission denied for language plpgsql";
const GUARD: &str = "42501 permission denied to change \"app.tenant_id\": launch-proxy";
