//! Why a checkout got no server connection, and the PostgreSQL error the client gets for
//! it.

use crate::error::{ClientError, ErrorKind};
use crate::protocol::codes;

/// Why a client got no server connection.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("no server connection available within {waited_ms} ms")]
    Timeout {
        waited_ms: u64,
        last_error: Option<String>,
        busy: usize,
        /// `pool.max_active`, when that limit (not the connections) held the client back.
        gated: Option<usize>,
        /// `pool.max_tenant_connections`, when the client's tenant held that many.
        tenant_capped: Option<usize>,
    },
    #[error("the pool stayed paused for {waited_ms} ms")]
    Paused { waited_ms: u64 },
    /// The client cancelled its statement while it waited ([`Pool::withdraw`]).
    #[error("the wait was withdrawn")]
    Withdrawn,
}

impl AcquireError {
    pub fn to_client_error(&self, pool: &str, cfg_ms: u64) -> ClientError {
        match self {
            AcquireError::Timeout {
                tenant_capped: Some(max),
                ..
            } => ClientError::fatal(
                ErrorKind::Timeout,
                codes::TOO_MANY_CONNECTIONS,
                format!(
                    "could not start a transaction on pool \"{pool}\" within acquire_timeout_ms ({cfg_ms} ms): this tenant's other sessions hold its share of server connections"
                ),
            )
            .with_detail(format!("the tenant's sessions hold {max} server connections, the pool's max_tenant_connections"))
            .with_hint("end the tenant's open transactions sooner, or raise pool.max_tenant_connections"),
            AcquireError::Timeout {
                last_error: Some(e),
                ..
            } => ClientError::fatal(
                ErrorKind::Timeout,
                codes::CANNOT_CONNECT_NOW,
                format!(
                    "could not get a server connection for pool \"{pool}\" within acquire_timeout_ms ({cfg_ms} ms): no server connection could be opened"
                ),
            )
            .with_detail(format!("last connection attempt: {e}")),
            AcquireError::Timeout {
                gated: Some(max), ..
            } => ClientError::fatal(
                ErrorKind::Timeout,
                codes::TOO_MANY_CONNECTIONS,
                format!(
                    "could not start a transaction on pool \"{pool}\" within acquire_timeout_ms ({cfg_ms} ms)"
                ),
            )
            .with_detail(format!("{max} statements were running on the pool's server connections, its max_active"))
            .with_hint("raise pool.max_active, or shorten statements"),
            AcquireError::Timeout { busy, .. } => ClientError::fatal(
                ErrorKind::Timeout,
                codes::TOO_MANY_CONNECTIONS,
                format!(
                    "could not get a server connection for pool \"{pool}\" within acquire_timeout_ms ({cfg_ms} ms)"
                ),
            )
            .with_detail(format!("all {busy} server connections of the pool are busy"))
            .with_hint("raise default_pool_size or max_db_connections, or shorten transactions"),
            AcquireError::Paused { .. } => ClientError::fatal(
                ErrorKind::Timeout,
                codes::CANNOT_CONNECT_NOW,
                format!(
                    "pool \"{pool}\" is paused and was not resumed within acquire_timeout_ms ({cfg_ms} ms)"
                ),
            )
            .with_detail("launch-proxy got SIGUSR1 (pause) and no SIGUSR2 (resume) since"),
            AcquireError::Withdrawn => ClientError::error(
                ErrorKind::Cancel,
                codes::QUERY_CANCELED,
                "canceling statement due to user request",
            ),
        }
    }
}
