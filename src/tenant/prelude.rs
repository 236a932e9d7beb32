//! The bytes that put a client's tenant on a server connection: one Query message that sets
//! `app.tenant_id` and its HMAC signature `app.tenant_sig`, which the database checks before
//! trusting the tenant (see docs/tenancy.md). Built once per login, written in the same
//! write as the client's first messages, its replies swallowed by the relay.

use super::{TenantId, SIGNATURE_SETTING, TENANT_SETTING};
use bytes::{Bytes, BytesMut};
use hmac::{KeyInit, Mac};

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

/// The Query message that applies `tenant` (or clears both settings for a tenant-less user).
/// Values are a ULID and hex digits, so they need no quoting beyond the literal quotes.
pub fn prelude(tenant: Option<&TenantId>, key: Option<&[u8]>) -> Bytes {
    let (id, sig) = match (tenant, key) {
        (Some(t), Some(k)) => (t.as_str().to_owned(), signature(k, t)),
        // Validation refuses tenants without a key; an unsigned tenant would show nothing.
        (Some(t), None) => (t.as_str().to_owned(), String::new()),
        (None, _) => (String::new(), String::new()),
    };
    // Session state a previous tenant may have left behind is dropped first: WITH HOLD
    // cursors (rows computed under its tenant), LISTEN registrations (payloads meant for
    // it), prepared statements (one it replaced through dynamic SQL would run as the next
    // tenant) and advisory locks. Temporary tables are out of reach of the application roles.
    // A statement_timeout the previous session left (set_config is invisible to the proxy)
    // must not make this fail: it is lifted for the cleanup and reset to the role's value.
    let sql = format!(
        "SET statement_timeout = 0; CLOSE ALL; UNLISTEN *; DEALLOCATE ALL; \
         SELECT pg_catalog.pg_advisory_unlock_all(); RESET statement_timeout; \
         SET {TENANT_SETTING} = '{id}'; SET {SIGNATURE_SETTING} = '{sig}'"
    );
    let mut buf = BytesMut::with_capacity(sql.len() + 6);
    crate::protocol::encode::query(&mut buf, &sql);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_sets_both_settings() {
        let t = TenantId::parse("01HZY3M8Q5V6W7X8Y9Z0ABCDEF").unwrap();
        let p = prelude(Some(&t), Some(&[7u8; 32]));
        let text = std::str::from_utf8(&p[5..p.len() - 1]).unwrap();
        assert!(
            text.starts_with("SET statement_timeout = 0; CLOSE ALL; UNLISTEN *;"),
            "{text}"
        );
        assert!(text
            .contains("SET app.tenant_id = '01HZY3M8Q5V6W7X8Y9Z0ABCDEF'; SET app.tenant_sig = '"));
        let sig = text.rsplit("app.tenant_sig = '").next().unwrap();
        assert_eq!(sig.trim_end_matches('\'').len(), 64);
        let empty = prelude(None, Some(&[7u8; 32]));
        assert!(std::str::from_utf8(&empty[5..])
            .unwrap()
            .contains("app.tenant_id = ''"));
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
