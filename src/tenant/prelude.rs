//! The bytes that put a client's tenant on a server connection: `app.tenant_id` and its
//! HMAC signature `app.tenant_sig` (which the database checks before trusting the tenant,
//! see docs/tenancy.md), after dropping what the previous tenant may have left behind.
//! Built once per login and written in the same write as the client's first messages; the
//! relay swallows its replies.
//!
//! It goes through the extended protocol, without a Sync, inside its own BEGIN/COMMIT.
//! That is what makes pipelining it safe: if any part of it fails (a statement_timeout the
//! previous tenant left with set_config, a cancel racing the checkout), PostgreSQL skips
//! every following message up to the next Sync, so none of the client's statements runs
//! with the previous tenant's still valid signature; the relay sees the error and drops the
//! connection. Its own transaction keeps the settings out of the client's: a client's
//! ROLLBACK cannot undo them.

use super::{TenantId, SIGNATURE_SETTING, TENANT_SETTING};
use bytes::{Bytes, BytesMut};
use hmac::{KeyInit, Mac};
use std::sync::Arc;

/// Hex HMAC-SHA256 of the tenant id under the signing key.
pub fn signature(key: &[u8], tenant: &TenantId) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(tenant.as_str().as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(64);
    for b in tag.iter() {
        out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    out
}

/// Messages the server sends back for a successful prelude: ParseComplete, BindComplete
/// and CommandComplete for each of its statements, and the DataRow of its SELECT.
pub const REPLIES: u8 = 3 * STATEMENTS as u8 + 1;

const STATEMENTS: usize = 7;

/// The messages that apply `tenant` (or clear both settings for a tenant-less user).
/// Values are a ULID and hex digits, so they need no quoting beyond the literal quotes.
pub fn prelude(tenant: Option<&TenantId>, key: Option<&[u8]>) -> Bytes {
    let (id, sig) = match (tenant, key) {
        (Some(t), Some(k)) => (t.as_str().to_owned(), signature(k, t)),
        // Validation refuses tenants without a key; an unsigned tenant would show nothing.
        (Some(t), None) => (t.as_str().to_owned(), String::new()),
        (None, _) => (String::new(), String::new()),
    };
    // Session state a previous tenant may have left behind goes first: WITH HOLD cursors
    // (rows computed under its tenant), LISTEN registrations (payloads meant for it),
    // prepared statements (one it replaced through dynamic SQL would run as the next
    // tenant) and advisory locks. Temporary tables are out of reach of the application
    // roles. A statement_timeout set with set_config (invisible to the proxy) goes back to
    // the role's value.
    let set =
        |name: &str, value: &str| format!("pg_catalog.set_config('{name}', '{value}', false)");
    let apply = format!(
        "SELECT pg_catalog.pg_advisory_unlock_all(), {}, {}",
        set(TENANT_SETTING, &id),
        set(SIGNATURE_SETTING, &sig)
    );
    let statements: [&str; STATEMENTS] = [
        "BEGIN",
        "RESET statement_timeout",
        "CLOSE ALL",
        "UNLISTEN *",
        "DEALLOCATE ALL",
        &apply,
        "COMMIT",
    ];
    let mut buf = BytesMut::with_capacity(512);
    for sql in statements {
        crate::protocol::encode::execute_unnamed(&mut buf, sql);
    }
    buf.freeze()
}

/// One prelude per tenant, shared by that tenant's sessions: a prelude is a few hundred
/// bytes, and every idle client would otherwise hold its own copy.
#[derive(Default)]
pub struct Preludes {
    by_tenant: parking_lot::Mutex<std::collections::HashMap<Option<TenantId>, Arc<[u8]>>>,
}

/// Preludes no session holds any more are dropped when the cache reaches this size.
const PRELUDES_SWEEP_AT: usize = 10_000;

impl Preludes {
    /// The prelude for `tenant` under `key`, built on first use.
    pub fn get(&self, tenant: Option<&TenantId>, key: Option<&[u8]>) -> Arc<[u8]> {
        let mut map = self.by_tenant.lock();
        if let Some(p) = map.get(&tenant.copied()) {
            return p.clone();
        }
        if map.len() >= PRELUDES_SWEEP_AT {
            map.retain(|_, p| Arc::strong_count(p) > 1);
        }
        let built: Arc<[u8]> = Arc::from(&prelude(tenant, key)[..]);
        map.insert(tenant.copied(), built.clone());
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL of each Parse in the prelude, and the message tags in order.
    fn decode(p: &[u8]) -> (Vec<String>, Vec<u8>) {
        let (mut sqls, mut tags, mut at) = (Vec::new(), Vec::new(), 0);
        while at < p.len() {
            let len = u32::from_be_bytes(p[at + 1..at + 5].try_into().unwrap()) as usize;
            tags.push(p[at]);
            if p[at] == b'P' {
                let body = &p[at + 6..at + 1 + len];
                let end = body.iter().position(|&b| b == 0).unwrap();
                sqls.push(String::from_utf8(body[..end].to_vec()).unwrap());
            }
            at += 1 + len;
        }
        (sqls, tags)
    }

    #[test]
    fn prelude_is_its_own_transaction_without_sync() {
        let t = TenantId::parse("01HZY3M8Q5V6W7X8Y9Z0ABCDEF").unwrap();
        let (sqls, tags) = decode(&prelude(Some(&t), Some(&[7u8; 32])));
        assert_eq!(sqls.len(), STATEMENTS);
        assert_eq!(tags, b"PBE".repeat(STATEMENTS), "no Sync, no simple Query");
        assert_eq!(sqls.first().map(String::as_str), Some("BEGIN"));
        assert_eq!(sqls.last().map(String::as_str), Some("COMMIT"));
        let apply = &sqls[STATEMENTS - 2];
        assert!(apply.contains("set_config('app.tenant_id', '01HZY3M8Q5V6W7X8Y9Z0ABCDEF', false)"));
        let sig = apply.rsplit("'app.tenant_sig', '").next().unwrap();
        assert_eq!(sig.split('\'').next().unwrap(), signature(&[7u8; 32], &t));
        let (empty, _) = decode(&prelude(None, Some(&[7u8; 32])));
        assert!(empty[STATEMENTS - 2].contains("'app.tenant_id', '', false"));
    }

    #[test]
    fn sessions_of_a_tenant_share_one_prelude() {
        let cache = Preludes::default();
        let t = TenantId::parse("01HZY3M8Q5V6W7X8Y9Z0ABCDEF").unwrap();
        let a = cache.get(Some(&t), Some(&[7u8; 32]));
        let b = cache.get(Some(&t), Some(&[7u8; 32]));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&a[..], &prelude(Some(&t), Some(&[7u8; 32]))[..]);
        assert!(!Arc::ptr_eq(&a, &cache.get(None, Some(&[7u8; 32]))));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" is not a ULID,
        // so check determinism and key sensitivity instead.
        let t = TenantId::parse("01HZY3M8Q5V6W7X8Y9Z0ABCDEF").unwrap();
        assert_eq!(signature(&[1; 32], &t), signature(&[1; 32], &t));
        assert_ne!(signature(&[1; 32], &t), signature(&[2; 32], &t));
        assert_eq!(signature(&[1; 32], &t).len(), 64);
    }
}
