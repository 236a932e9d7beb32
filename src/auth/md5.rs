//! PostgreSQL's legacy md5 password scheme: the stored `md5…` hash in `pg_authid`, the answer a
//! client gives to AuthenticationMD5Password, and its constant-time verification.
//!
//! md5 is weak (the stored hash is itself a login credential), but old clients and servers are
//! still configured for it, so the proxy must speak it on both sides.

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

const PREFIX: &str = "md5";

/// Length of "md5" plus 32 hex digits; also the length of a client's response.
const HASH_LEN: usize = 35;

/// `"md5" + hex(md5(password ++ user))`, the `pg_authid` format. The user name is the salt,
/// which is why renaming a role clears an md5 password in PostgreSQL.
pub fn md5_stored_hash(user: &str, password: &str) -> String {
    md5_hex_prefixed(&[password.as_bytes(), user.as_bytes()])
}

/// True if `s` looks like a stored md5 hash: "md5" followed by exactly 32 lowercase hex digits.
/// Used to tell an md5 hash from a plaintext password or a SCRAM verifier in configuration.
pub fn is_md5_hash(s: &str) -> bool {
    s.len() == HASH_LEN
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// What a client must answer to AuthenticationMD5Password(salt):
/// `"md5" + hex(md5(hex_part_of_stored ++ salt))`, 35 ASCII bytes without the trailing NUL.
///
/// `stored` is the `md5…` form (see [`md5_stored_hash`]); check it with [`is_md5_hash`] first.
/// A value without the prefix is hashed whole rather than rejected, so this never panics; it
/// simply yields a response that PostgreSQL will refuse.
pub fn md5_client_response(stored: &str, salt: [u8; 4]) -> String {
    let hex_part = stored.strip_prefix(PREFIX).unwrap_or(stored);
    md5_hex_prefixed(&[hex_part.as_bytes(), &salt])
}

/// Constant-time check of a client's PasswordMessage payload (NUL already stripped) against
/// the stored hash and the salt we sent. A malformed `stored` never verifies, so a corrupt
/// configuration entry cannot turn into an accept-anything.
pub fn md5_verify(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if !is_md5_hash(stored) || response.len() != HASH_LEN {
        return false;
    }
    let expected = md5_client_response(stored, salt);
    expected.as_bytes().ct_eq(response).into()
}

/// "md5" followed by the lowercase hex MD5 of the concatenated parts.
fn md5_hex_prefixed(parts: &[&[u8]]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = String::with_capacity(HASH_LEN);
    out.push_str(PREFIX);
    for byte in digest.iter() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read from pg_authid of a PostgreSQL 15 cluster after `SET password_encryption = md5;
    /// CREATE ROLE m LOGIN PASSWORD 'pw'`.
    const PG_STORED: &str = "md57764e463c73a54e4bb79b9b9e419e145";

    #[test]
    fn stored_hash_matches_postgres() {
        assert_eq!(md5_stored_hash("m", "pw"), PG_STORED);
        assert!(is_md5_hash(PG_STORED));
    }

    #[test]
    fn is_md5_hash_is_strict() {
        assert!(!is_md5_hash(""));
        assert!(!is_md5_hash("md5"));
        assert!(!is_md5_hash(&PG_STORED.to_uppercase()));
        assert!(!is_md5_hash(&PG_STORED.replace("md5", "MD5")));
        assert!(!is_md5_hash(&format!("{PG_STORED}0")));
        assert!(!is_md5_hash(&PG_STORED[..34]));
        assert!(!is_md5_hash("md57764e463c73a54e4bb79b9b9e419e1g5"));
        assert!(!is_md5_hash("SCRAM-SHA-256$4096:abc"));
        // Multi-byte characters must not cause a slicing panic.
        assert!(!is_md5_hash("mdé57764e463c73a54e4bb79b9b9e419e1"));
        assert!(!is_md5_hash("md5é64e463c73a54e4bb79b9b9e419e145"));
    }

    #[test]
    fn client_response_and_verify() {
        let salt = [0x01, 0x02, 0x03, 0x04];
        let response = md5_client_response(PG_STORED, salt);
        assert_eq!(response.len(), 35);
        assert!(is_md5_hash(&response));
        // Independently: md5(hex_part ++ salt).
        let mut h = Md5::new();
        h.update(&PG_STORED.as_bytes()[3..]);
        h.update(salt);
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(response, format!("md5{hex}"));

        assert!(md5_verify(PG_STORED, salt, response.as_bytes()));
        assert!(!md5_verify(PG_STORED, [1, 2, 3, 5], response.as_bytes()));
        assert!(!md5_verify(PG_STORED, salt, &response.as_bytes()[..34]));
        assert!(!md5_verify(PG_STORED, salt, b""));
        assert!(!md5_verify(PG_STORED, salt, PG_STORED.as_bytes()));
        let mut with_nul = response.clone().into_bytes();
        with_nul.push(0);
        assert!(!md5_verify(PG_STORED, salt, &with_nul));
        assert!(!md5_verify(
            &response.to_uppercase(),
            salt,
            response.as_bytes()
        ));
        assert!(!md5_verify(
            "pw",
            salt,
            md5_client_response("pw", salt).as_bytes()
        ));
        assert!(!md5_verify("", salt, b""));
    }

    #[test]
    fn client_response_tolerates_garbage() {
        assert_eq!(md5_client_response("", [0; 4]).len(), 35);
        assert_eq!(md5_client_response("é", [0xff; 4]).len(), 35);
    }
}
