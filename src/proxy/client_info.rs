//! Who a logged-in client is, for the admin console's SHOW CLIENTS. Kept beside the
//! client's cancel key: the cancel registry already holds every logged-in client, and a
//! second registry would cost every login another lock and every idle client more memory.

use crate::config::User;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

pub struct ClientInfo {
    /// The users-file entry or token identity the client logged in as (name, tenant).
    pub user: Arc<User>,
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    pub application_name: Option<Box<str>>,
    pub connected_at: SystemTime,
}

impl ClientInfo {
    /// A client of a made-up login (unit tests of the cancel registry).
    #[cfg(test)]
    pub fn for_tests() -> Self {
        ClientInfo {
            user: test_user("test", None),
            peer: None,
            tls: false,
            application_name: None,
            connected_at: SystemTime::now(),
        }
    }
}

/// A users-file login of `name`, of `tenant` if given (unit tests).
#[cfg(test)]
pub fn test_user(name: &str, tenant: Option<&str>) -> Arc<User> {
    use crate::config::{ClientSecret, Role, ServerLogin};
    Arc::new(User {
        name: name.into(),
        role: Role::Write,
        auth: Default::default(),
        secret: ClientSecret::Plain(String::new()),
        scram_verifier: None,
        server_login: ServerLogin::Password(String::new()),
        tenant: tenant.map(|t| crate::tenant::TenantId::parse(t).expect("a ULID")),
        server_user: name.into(),
    })
}

/// What a client is doing, as SHOW CLIENTS tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Holds no server connection and waits for none.
    Idle,
    /// Its statement is queued for a server connection.
    Waiting,
    /// Runs a transaction on a server connection.
    Active,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }
}
