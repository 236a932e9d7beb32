//! The benchmark data set's ids, placeholders in connection strings and tenant signatures.
//!
//! The ids are deterministic so that the load generator can address rows without reading
//! them first; scripts/lib/bench.sh loads exactly these (keep the two in step):
//!
//! | what                 | id                                                 |
//! |----------------------|----------------------------------------------------|
//! | tenant `t` (1..=T)   | `01JBENCHT` + `t` as 17 decimal digits             |
//! | entity `r` (1..=R)   | `01JBENCHE` + `t` as 6 digits + `r` as 11 digits   |
//! | actor of tenant `t`  | `01JBENCHA` + `t` as 17 decimal digits             |
//!
//! All are 26 characters of the Crockford alphabet starting with `0`, i.e. valid ULIDs for
//! the `ulid` domain of migrations/0001_schema.sql.

use hmac::{KeyInit, Mac};

pub const TENANT_PREFIX: &str = "01JBENCHT";
pub const ENTITY_PREFIX: &str = "01JBENCHE";
pub const ACTOR_PREFIX: &str = "01JBENCHA";

/// The ULID of tenant number `t` (1-based).
pub fn tenant_id(t: usize) -> String {
    format!("{TENANT_PREFIX}{t:017}")
}

/// The ULID of row `r` (1-based) of tenant `t`.
pub fn entity_id(t: usize, r: u64) -> String {
    format!("{ENTITY_PREFIX}{t:06}{r:011}")
}

/// The ULID written as `updated_by` / `performed_by` by clients of tenant `t`.
pub fn actor_id(t: usize) -> String {
    format!("{ACTOR_PREFIX}{t:017}")
}

/// Expands the placeholders of a connection-string template for tenant `t`:
/// `{tenant}` is the tenant number as at least 4 digits (`0001`), `{tenant_id}` its ULID.
pub fn expand(template: &str, t: usize) -> String {
    template
        .replace("{tenant_id}", &tenant_id(t))
        .replace("{tenant}", &format!("{t:04}"))
}

/// Lowercase hex HMAC-SHA256 of the tenant id under `key`: the `app.tenant_sig` value that
/// `launch.current_tenant()` (migrations/0002_tenant_context.sql) accepts.
pub fn signature(key: &[u8], tenant: &str) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(tenant.as_bytes());
    hex(&mac.finalize().into_bytes())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Decodes a hex string (either case, even length).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    let digit = |c: u8| -> Result<u8, String> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("not a hex digit: {:?}", c as char))
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_ulid(s: &str) -> bool {
        const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        s.len() == 26 && s.as_bytes()[0] <= b'7' && s.chars().all(|c| ALPHABET.contains(c))
    }

    #[test]
    fn ids_are_ulids() {
        for id in [
            tenant_id(1),
            tenant_id(1000),
            entity_id(1000, 100),
            entity_id(999_999, 99_999_999_999),
            actor_id(42),
        ] {
            assert!(is_ulid(&id), "{id}");
        }
        assert_eq!(tenant_id(7), "01JBENCHT00000000000000007");
        assert_eq!(entity_id(7, 3), "01JBENCHE00000700000000003");
    }

    #[test]
    fn placeholders() {
        assert_eq!(
            expand("user=acme_{tenant} options='-c x={tenant_id}'", 12),
            "user=acme_0012 options='-c x=01JBENCHT00000000000000012'"
        );
        assert_eq!(expand("user=t{tenant}", 12345), "user=t12345");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            signature(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(parse_hex("00ffA0").unwrap(), vec![0, 255, 160]);
        assert_eq!(hex(&[0, 255, 160]), "00ffa0");
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
