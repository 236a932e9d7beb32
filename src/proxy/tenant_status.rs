//! Tenant status: a tenant whose `tenants.status` is not `active` is refused at login and,
//! for clients already connected, from their next transaction once the cached status
//! expires. Lookups go through the pool (`launch.tenant_status(id)`) and are cached briefly.

use crate::clock::now_ms as coarse_now_ms;
use crate::error::{ClientError, ErrorKind};
use crate::pool::query::{query_scalar, QueryError};
use crate::pool::ServerConn;
use crate::protocol::codes;
use crate::tenant::TenantId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

/// Cached statuses, bounded: entries past their lifetime are dropped when the map grows.
/// Times are on the coarse clock (`crate::clock`): checked on every
/// transaction, they must not cost a clock read.
pub struct TenantStatusCache {
    ttl_ms: u64,
    entries: Mutex<HashMap<TenantId, (Status, u64)>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Active,
    /// Not active: the status text (`suspended`, `inactive`) or `unknown`.
    Refused(String),
}

const MAX_ENTRIES: usize = 100_000;

impl TenantStatusCache {
    pub fn new(ttl: Duration) -> Self {
        TenantStatusCache {
            ttl_ms: ttl.as_millis() as u64,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached status if still fresh, and until when (coarse ms) it stays fresh: a
    /// session may skip the lookup until then.
    pub fn fresh(&self, tenant: &TenantId) -> Option<(Status, u64)> {
        let now = coarse_now_ms();
        let entries = self.entries.lock();
        entries
            .get(tenant)
            .filter(|(_, at)| now < at + self.ttl_ms)
            .map(|(s, at)| (s.clone(), at + self.ttl_ms))
    }

    /// Looks the status up on `conn` (an idle server connection of a server of
    /// `server_major`) and caches it. The timeouts go back to the role's values first: a
    /// connection another tenant used may carry its `set_config('transaction_timeout',
    /// '1ms', false)`, which would otherwise fail this lookup, and so this tenant's login or
    /// transaction. They are forgotten as applied on `conn`, so that the session's own
    /// values go on again before its statements, as after a tenant switch.
    pub async fn refresh(
        &self,
        tenant: &TenantId,
        conn: &mut ServerConn,
        server_major: u32,
    ) -> Result<(Status, u64), LookupError> {
        let mut sql = crate::tenant::prelude::reset_timeouts_sql(server_major);
        sql.push_str("SELECT launch.tenant_status('");
        sql.push_str(tenant.as_str());
        sql.push_str("')");
        for (name, _) in crate::tenant::prelude::RESET_TIMEOUTS {
            conn.params.remove(name);
        }
        let mut answer = query_scalar(conn, &sql).await;
        if matches!(&answer, Err(QueryError::Server(e)) if e.ends_with("(57014)")) {
            // A client's cancel of its previous statement can reach the backend after that
            // statement ended (PostgreSQL acts on the signal at its next check, which may
            // be in this lookup): the lookup is the proxy's, and runs again.
            answer = query_scalar(conn, &sql).await;
        }
        let status = match answer {
            Ok(Some(s)) if s == "active" => Status::Active,
            Ok(Some(s)) => Status::Refused(s),
            Ok(None) => Status::Refused("unknown".into()),
            Err(e) if e.is_connection_lost() => return Err(LookupError::Lost(e)),
            Err(e) => return Err(LookupError::Failed(e)),
        };
        let now = coarse_now_ms();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl_ms;
            entries.retain(|_, (_, at)| now < *at + ttl);
        }
        entries.insert(*tenant, (status.clone(), now));
        Ok((status, now + self.ttl_ms))
    }
}

/// Why a status lookup gave no answer.
#[derive(Debug)]
pub enum LookupError {
    /// The server connection went away under the lookup (its backend terminated,
    /// PostgreSQL stopping): that says nothing about the tenant, nothing of the client's
    /// ran on it, and another connection may answer.
    Lost(QueryError),
    /// The server answered with an error (no `launch.tenant_status`, ...).
    Failed(QueryError),
}

impl LookupError {
    /// What the client is told: a lost server is 08006, as anywhere else in the proxy, not
    /// the XX000 (and migrations hint) of a database that cannot answer.
    pub fn to_client_error(&self) -> ClientError {
        match self {
            LookupError::Lost(e) => ClientError::fatal(
                ErrorKind::Server,
                codes::CONNECTION_FAILURE,
                "server closed the connection unexpectedly",
            )
            .with_detail(format!(
                "the server connection was lost while launch-proxy checked the tenant's status ({e}); none of the client's statements ran"
            )),
            LookupError::Failed(e) => ClientError::fatal(
                ErrorKind::Server,
                codes::INTERNAL_ERROR,
                "could not check the tenant's status",
            )
            .with_detail(e.to_string())
            .with_hint(
                "apply the migrations (launch.tenant_status), or set tenant.check_status: false",
            ),
        }
    }
}

/// The error for a tenant that may not connect.
pub fn refused(tenant: &TenantId, status: &str) -> ClientError {
    ClientError::fatal(
        ErrorKind::Auth,
        codes::INVALID_AUTHORIZATION,
        format!("tenant \"{tenant}\" is not active (status: {status})"),
    )
}
