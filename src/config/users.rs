//! The users file: who may connect, how they prove it, which role they get, and how the
//! proxy logs in to PostgreSQL on their behalf.

use super::Role;
use crate::auth::md5::is_md5_hash;
use crate::auth::scram::ScramVerifier;
use crate::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    pub users: BTreeMap<String, UserEntry>,
}

/// One user as written in the file. Exactly one of `password`, `password_file` and
/// `password_env` gives the client secret; at most one of the `server_password*` keys gives
/// the proxy's own PostgreSQL password.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// A plain password, a SCRAM-SHA-256 verifier or an md5 hash (as in `pg_authid`).
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub role: Role,
    /// How the client authenticates; SCRAM unless md5 is asked for (old clients).
    #[serde(default)]
    pub auth: ClientAuth,
    pub server_password: Option<String>,
    pub server_password_file: Option<PathBuf>,
    pub server_password_env: Option<String>,
    /// The tenant (a ULID) every session of this login runs as; absent for tenant-less
    /// users such as operators and migrations, who run with an empty tenant.
    pub tenant: Option<String>,
    /// The users-file entry whose PostgreSQL login (and pool) this user's transactions run
    /// on, so that the clients of many tenants share one pool per server role.
    pub server_user: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    #[default]
    #[serde(rename = "scram-sha-256", alias = "scram")]
    ScramSha256,
    Md5,
    /// A verified TLS client certificate; the tenant comes from the certificate.
    Cert,
}

/// What the client's proof is checked against.
#[derive(Clone)]
pub enum ClientSecret {
    Plain(String),
    Scram(ScramVerifier),
    /// `md5` + hex(md5(password ++ user)).
    Md5(String),
}

impl ClientSecret {
    pub fn parse(s: String) -> Self {
        if ScramVerifier::is_verifier(&s) {
            match ScramVerifier::parse(&s) {
                Ok(v) => ClientSecret::Scram(v),
                // A malformed verifier is reported by validation; keep the raw text out of logs.
                Err(_) => ClientSecret::Plain(s),
            }
        } else if is_md5_hash(&s) {
            ClientSecret::Md5(s)
        } else {
            ClientSecret::Plain(s)
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ClientSecret::Plain(_) => "password",
            ClientSecret::Scram(_) => "scram-sha-256 verifier",
            ClientSecret::Md5(_) => "md5 hash",
        }
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// How the proxy proves itself to PostgreSQL for this user.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerLogin {
    Password(String),
    /// Reuse the SCRAM keys recovered from the client's own login (PostgreSQL must store the
    /// same verifier). Server connections can only be opened after a client has logged in.
    ScramPassthrough,
}

impl ServerLogin {
    pub fn kind(&self) -> &'static str {
        match self {
            ServerLogin::Password(_) => "password",
            ServerLogin::ScramPassthrough => "client's scram keys",
        }
    }
}

impl std::fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// A user ready for the proxy: secrets resolved and checked for consistency.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub auth: ClientAuth,
    pub secret: ClientSecret,
    /// The SCRAM verifier clients are checked against, derived once at load time for plain
    /// passwords (deriving costs thousands of HMAC rounds, too much for every login).
    pub scram_verifier: Option<ScramVerifier>,
    pub server_login: ServerLogin,
    pub tenant: Option<TenantId>,
    /// The pool this user's transactions run on: its own name unless `server_user` says.
    pub server_user: String,
}

impl User {
    /// Whether this login's sessions run as a tenant: one named in the file, or one its
    /// client certificate names (`auth: cert`).
    pub fn has_tenant(&self) -> bool {
        self.tenant.is_some() || self.auth == ClientAuth::Cert
    }
}

/// The users logins are checked against: the users file as last loaded (SIGHUP reloads it,
/// see `crate::reload`). A session keeps the `User` it logged in as.
pub struct UsersTable(parking_lot::RwLock<BTreeMap<String, std::sync::Arc<User>>>);

impl UsersTable {
    pub fn new(users: BTreeMap<String, std::sync::Arc<User>>) -> UsersTable {
        UsersTable(parking_lot::RwLock::new(users))
    }

    pub fn get(&self, name: &str) -> Option<std::sync::Arc<User>> {
        self.0.read().get(name).cloned()
    }

    /// Every user, by name (the admin console's SHOW USERS).
    pub fn all(&self) -> Vec<std::sync::Arc<User>> {
        self.0.read().values().cloned().collect()
    }

    pub fn replace(&self, users: BTreeMap<String, std::sync::Arc<User>>) {
        *self.0.write() = users;
    }
}
