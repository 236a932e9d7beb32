//! Who a logged-in client is, for the admin console's SHOW CLIENTS. Kept beside the
//! client's cancel key: the cancel registry already holds every logged-in client, and a
//! second registry would cost every login another lock and every idle client more memory.

use crate::config::User;
use crate::tenant::TenantId;
use std::collections::HashMap;
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

/// Logged-in sessions per tenant, for `pool.max_tenant_clients` (kept under the cancel
/// registry's lock, where logins register); a tenant with none has no entry.
#[derive(Default)]
pub struct TenantSessions(HashMap<TenantId, u32>);

impl TenantSessions {
    /// Counts a session of `user`'s tenant, unless the tenant has `cap` already (0: no
    /// cap); then `Err` with its count. Tenant-less logins are not counted.
    pub fn enter(&mut self, user: &User, cap: usize) -> Result<(), u32> {
        let Some(tenant) = user.tenant else {
            return Ok(());
        };
        let n = self.0.entry(tenant).or_insert(0);
        if cap > 0 && *n as usize >= cap {
            return Err(*n);
        }
        *n += 1;
        Ok(())
    }

    /// A session [`Self::enter`] counted ended.
    pub fn leave(&mut self, user: &User) {
        let Some(tenant) = &user.tenant else { return };
        if let Some(n) = self.0.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(tenant);
            }
        }
    }
}

/// One tenant's logged-in clients by state (SHOW TENANTS, the per-tenant metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantLoad {
    /// `None` for tenant-less logins.
    pub tenant: Option<TenantId>,
    pub active: u64,
    pub waiting: u64,
    pub idle: u64,
}

impl TenantLoad {
    pub fn clients(&self) -> u64 {
        self.active + self.waiting + self.idle
    }
}

/// Each tenant's clients, busiest first: most holding a server connection, then most
/// queued, then by tenant.
pub fn tenant_load(clients: &[Arc<super::cancel::CancelTarget>]) -> Vec<TenantLoad> {
    let mut by_tenant: HashMap<Option<TenantId>, TenantLoad> = HashMap::new();
    for c in clients {
        let tenant = c.client.user.tenant;
        let load = by_tenant.entry(tenant).or_insert_with(|| TenantLoad {
            tenant,
            ..TenantLoad::default()
        });
        match c.state() {
            ClientState::Active => load.active += 1,
            ClientState::Waiting => load.waiting += 1,
            ClientState::Idle => load.idle += 1,
        }
    }
    let mut loads: Vec<TenantLoad> = by_tenant.into_values().collect();
    let key = |l: &TenantLoad| l.tenant.map(|t| t.as_bytes().to_owned());
    loads.sort_by(|a, b| {
        (b.active, b.waiting)
            .cmp(&(a.active, a.waiting))
            .then_with(|| key(a).cmp(&key(b)))
    });
    loads
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_has_at_most_its_cap_of_sessions_and_gets_places_back() {
        let a = test_user("a", Some("01JBXTENANTA000000000000AA"));
        let b = test_user("b", Some("01JBXTENANTB000000000000BB"));
        let none = test_user("app", None);
        let mut s = TenantSessions::default();
        assert_eq!(s.enter(&a, 2), Ok(()));
        assert_eq!(s.enter(&a, 2), Ok(()));
        assert_eq!(s.enter(&a, 2), Err(2), "at the cap");
        assert_eq!(s.enter(&b, 2), Ok(()), "another tenant");
        for _ in 0..5 {
            assert_eq!(
                s.enter(&none, 2),
                Ok(()),
                "tenant-less logins are not counted"
            );
        }
        s.leave(&a);
        assert_eq!(s.enter(&a, 2), Ok(()), "a session ended");
        assert_eq!(s.enter(&a, 0), Ok(()), "no cap");
        for user in [&a, &a, &a, &b, &none] {
            s.leave(user);
        }
        assert!(s.0.is_empty(), "nothing kept for tenants without sessions");
    }
}
