//! Tenant identity and its protection: the validated tenant id the proxy injects into
//! `app.tenant_id`, and the statement guard that stops a client from changing that setting
//! (or the signature that vouches for it) behind the proxy's back.
//!
//! Row-level security in the database reads `current_setting('app.tenant_id')`. The proxy sets
//! it from the client's authenticated identity on every checkout, so the only way a client
//! could act as another tenant is to overwrite it with SQL of its own. [`guard::check`] runs on
//! every Query and Parse message and refuses such statements before they reach PostgreSQL; a
//! database-side signature check (`app.tenant_sig`) is the second line of defence for
//! anything a lexer cannot see, such as code inside function bodies.
//!
//! - [`id`]: [`TenantId`], a ULID validated and normalised before it is ever spliced into SQL.
//! - [`lexer`]: a byte-level PostgreSQL lexer that tokenises exactly as the server does (its
//!   token types live in `token`, its escape decoders in `escape`).
//! - [`guard`]: the per-statement check built on that lexer, behind a cheap byte pre-filter.
//! - [`prelude`]: the Query that sets the tenant and its HMAC signature on a server connection.
//! - [`shape`]: what can be told of one plain DML statement without the lexer.

pub mod guard;
pub mod id;
pub mod lexer;
pub mod prelude;
pub mod rls_login;
pub mod shape;

mod escape;
pub mod token;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod lexer_tests;

pub use id::{TenantId, TenantIdError};

/// The setting row-level security policies read the current tenant from.
pub const TENANT_SETTING: &str = "app.tenant_id";

/// The setting carrying the signature the database checks `app.tenant_id` against.
pub const SIGNATURE_SETTING: &str = "app.tenant_sig";

/// Settings a client may read but never change; the proxy passes these to [`guard::check`].
pub const PROTECTED_SETTINGS: &[&str] = &[TENANT_SETTING, SIGNATURE_SETTING];
